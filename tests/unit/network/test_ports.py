"""Named-port resolution: port_map names, Nomad's "to", label = image name, and the bad inputs."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.network.ports import (
    ImagePort,
    PortForward,
    driver_port_map,
    ignored_warning,
    resolve,
    suggest,
)
from nomad_rkt_driver.types import PortMapping

IMAGE = (
    ImagePort("53-udp", 53, "udp"),
    ImagePort("6379-tcp", 6379, "tcp"),
    ImagePort("80-tcp", 80, "tcp"),
    ImagePort("8080", 8080, "tcp"),
    ImagePort("admin", 9090, "tcp"),
)
ALLOC = (
    PortMapping("http", 31000, 0, "127.0.0.1"),
    PortMapping("db", 31001, 0, "127.0.0.1"),
    PortMapping("admin", 31002, 0, "10.0.0.1"),
    PortMapping("dns", 31003, 0, "127.0.0.1"),
    PortMapping("web", 31004, 8081, "127.0.0.1"),
)
W = "rkt task config"


def test_port_map_names_an_image_port() -> None:
    got = resolve({"http": "80-tcp", "db": "6379-tcp"}, (), ALLOC, IMAGE, W)
    assert got == (
        PortForward("http", "127.0.0.1", 31000, 80, "tcp"),
        PortForward("db", "127.0.0.1", 31001, 6379, "tcp"),
    )


def test_label_equal_to_an_image_port_name_needs_no_port_map() -> None:
    # An OCI label port (io.nomad.rkt.port.admin) bound to Nomad's host_ip for that port.
    assert resolve({}, ("admin",), ALLOC, IMAGE, W) == (PortForward("admin", "10.0.0.1", 31002, 9090, "tcp"),)


def test_to_only_mapping_defaults_to_tcp() -> None:
    assert resolve({}, ("web",), ALLOC, IMAGE, W) == (PortForward("web", "127.0.0.1", 31004, 8081, "tcp"),)


def test_to_publishes_only_the_protocols_the_image_declares() -> None:
    alloc = (PortMapping("dns", 31003, 53, "127.0.0.1"),)
    assert resolve({}, ("dns",), alloc, IMAGE, W) == (PortForward("dns", "127.0.0.1", 31003, 53, "udp"),)
    both = (*IMAGE, ImagePort("53-tcp", 53, "tcp"))
    assert [f.protocol for f in resolve({}, ("dns",), alloc, both, W)] == ["tcp", "udp"]


def test_udp_only_image_port_is_published_as_udp() -> None:
    assert resolve({"dns": "53-udp"}, (), ALLOC, IMAGE, W) == (PortForward("dns", "127.0.0.1", 31003, 53, "udp"),)


def test_port_map_wins_over_to_and_ports_list_adds_nothing_twice() -> None:
    got = resolve({"web": "8080"}, ("web",), ALLOC, IMAGE, W)
    assert got == (PortForward("web", "127.0.0.1", 31004, 8080, "tcp"),)


def test_6379_suggests_6379_tcp() -> None:
    with pytest.raises(InvalidConfig) as info:
        resolve({"db": "6379"}, (), ALLOC, IMAGE, W)
    text = str(info.value)
    assert info.value.attribute == "port_map.db"
    assert 'no port named "6379"' in text and 'did you mean "6379-tcp"?' in text
    assert "admin (9090/tcp)" in text  # lists what the image has


def test_port_map_name_the_image_lacks_lists_its_ports() -> None:
    with pytest.raises(InvalidConfig) as info:
        resolve({"http": "web"}, (), ALLOC, IMAGE, W)
    assert "53-udp (53/udp), 6379-tcp (6379/tcp), 80-tcp (80/tcp), 8080 (8080/tcp), admin (9090/tcp)" in str(info.value)
    assert "did you mean" not in str(info.value)


def test_label_without_to_or_name_is_an_error_with_the_fix() -> None:
    with pytest.raises(InvalidConfig) as info:
        resolve({}, ("http",), ALLOC, IMAGE, W)
    assert 'port_map { http = "<image port name>" }' in str(info.value)
    with pytest.raises(InvalidConfig, match="the image declares no ports"):
        resolve({}, ("http",), ALLOC, (), W)


def test_label_nomad_did_not_allocate() -> None:
    with pytest.raises(InvalidConfig, match=r'"nope" is not one of the task group\'s ports \(it has: admin, db'):
        resolve({"nope": "80-tcp"}, (), ALLOC, IMAGE, W)


def test_two_labels_on_one_host_port_conflict() -> None:
    alloc = (PortMapping("a", 31000, 0, ""), PortMapping("b", 31000, 0, ""))
    with pytest.raises(InvalidConfig, match="both use host port 31000/tcp"):
        resolve({"a": "80-tcp", "b": "8080"}, (), alloc, IMAGE, W)


def test_suggestions() -> None:
    assert suggest("6379", IMAGE) == ["6379-tcp"]
    assert suggest("53", IMAGE) == ["53-udp"]
    assert suggest("ADMIN", IMAGE) == ["admin"]
    assert suggest("x", IMAGE) == []


def test_host_networking_warning_and_override_map() -> None:
    assert ignored_warning({}, (), "host networking") == ""
    text = ignored_warning({"http": "80-tcp"}, ("db",), "the task uses host networking")
    assert text.startswith("port_map/ports ignored for http, db: the task uses host networking")
    forwards = resolve({"dns": "53-udp", "http": "80-tcp"}, (), ALLOC, IMAGE, W)
    assert driver_port_map(forwards) == {"dns": 53, "http": 80}
    assert forwards[0].as_cni() == {"hostPort": 31003, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
