"""Image config → pod defaults: rkt's port names, docker2aci's User split, Env, and clear refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nomad_rkt_driver.images.imageconfig import (
    ImageDefaults,
    InvalidImageConfig,
    NamedPort,
    image_defaults,
    parse_image_config,
    split_user,
)

DIGEST = "sha256:" + "c0" * 32


def blob(config: dict[str, Any] | None = None, **top: Any) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": config or {}, **top}).encode()


@pytest.mark.parametrize(
    ("exposed", "ports"),
    [
        ({"80/tcp": {}}, [NamedPort("80-tcp", 80, "tcp")]),
        ({"53/udp": {}}, [NamedPort("53-udp", 53, "udp")]),
        ({"8080": {}}, [NamedPort("8080", 8080, "tcp")]),
        ({"5000/TCP": {}}, [NamedPort("5000-tcp", 5000, "tcp")]),
        ({"132/sctp": {}}, [NamedPort("132-sctp", 132, "sctp")]),
        (
            {"8080/tcp": {}, "443/tcp": {}, "53/udp": {}, "53/tcp": {}},
            [
                NamedPort("443-tcp", 443, "tcp"),
                NamedPort("53-tcp", 53, "tcp"),
                NamedPort("53-udp", 53, "udp"),
                NamedPort("8080-tcp", 8080, "tcp"),
            ],
        ),
        ({}, []),
    ],
)
def test_exposed_ports_get_rkts_names_sorted_by_name(exposed: dict[str, Any], ports: list[NamedPort]) -> None:
    assert list(image_defaults(blob({"ExposedPorts": exposed}), DIGEST).ports) == ports


def test_port_labels_add_real_names() -> None:
    labels = {"io.nomad.rkt.port.http": "8080/tcp", "io.nomad.rkt.port.dns": "53/udp", "io.nomad.rkt.port.adm": "9090"}
    defaults = image_defaults(blob({"ExposedPorts": {"8080/tcp": {}}, "Labels": labels}), DIGEST)
    assert [p.name for p in defaults.ports] == ["8080-tcp", "adm", "dns", "http"]
    assert defaults.port("http") == NamedPort("http", 8080, "tcp")
    assert defaults.port("adm") == NamedPort("adm", 9090, "tcp")
    assert defaults.port("nope") is None
    assert defaults.labels == labels


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"ExposedPorts": {"http/tcp": {}}}, "'http' is not a port number"),
        ({"ExposedPorts": {"0/tcp": {}}}, "not a port number"),
        ({"ExposedPorts": {"70000/tcp": {}}}, "not a port number"),
        ({"ExposedPorts": {"80/icmp": {}}}, "protocol 'icmp'"),
        ({"ExposedPorts": {"8000-8010/tcp": {}}}, "not a port number"),
        ({"Labels": {"io.nomad.rkt.port.Web": "80"}}, "is not a port name"),
        ({"Labels": {"io.nomad.rkt.port.web": "eighty"}}, "not a port number"),
        ({"ExposedPorts": {"80": {}}, "Labels": {"io.nomad.rkt.port.80": "81"}}, "already 80/tcp"),
        ({"Entrypoint": "/bin/sh"}, "config.Entrypoint must be a list of strings"),
        ({"Env": ["A=1", 2]}, "config.Env must be a list of strings"),
        ({"User": 1000}, "config.User must be a JSON string"),
        ({"Labels": {"a": 1}}, "config.Labels values must be strings"),
        ({"ExposedPorts": ["80/tcp"]}, "config.ExposedPorts must be a JSON object"),
    ],
)
def test_malformed_fields_name_the_digest_and_field(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidImageConfig) as caught:
        image_defaults(blob(config), DIGEST)
    assert fragment in str(caught.value) and DIGEST in str(caught.value)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_a_config_that_does_not_parse_names_its_digest(data: bytes) -> None:
    with pytest.raises(InvalidImageConfig, match=f"image config {DIGEST}: not"):
        parse_image_config(data, DIGEST)


@pytest.mark.parametrize(
    ("user", "split"),
    [
        ("", ("0", "0")),
        ("nobody", ("nobody", "nobody")),
        ("1000", ("1000", "1000")),
        ("1000:50", ("1000", "50")),
        ("a:b", ("a", "b")),
    ],
)
def test_user_split_follows_docker2aci(user: str, split: tuple[str, str]) -> None:
    assert split_user(user) == split
    defaults = image_defaults(blob({"User": user}), DIGEST)
    assert (defaults.user, defaults.group) == split


def test_all_fields() -> None:
    config = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "Env": ["PATH=/bin", "EMPTY=", "NOEQUALS", "A=1=2", "PATH=/usr/bin:/bin"],
        "WorkingDir": "/app",
        "User": "app:staff",
        "StopSignal": "SIGINT",
        "Labels": {"k": "v"},
    }
    parsed = parse_image_config(blob(config, rootfs={"type": "layers", "diff_ids": [DIGEST]}), DIGEST)
    d = parsed.defaults
    assert d.entrypoint == ("/bin/sh", "-c") and d.cmd == ("echo hi",) and d.exec == ("/bin/sh", "-c", "echo hi")
    assert d.env == {"PATH": "/usr/bin:/bin", "EMPTY": "", "A": "1=2"}
    assert (d.working_dir, d.user, d.group, d.stop_signal, d.labels) == ("/app", "app", "staff", "SIGINT", {"k": "v"})
    assert (parsed.os, parsed.architecture, parsed.diff_ids) == ("linux", "amd64", (DIGEST,))


def test_empty_and_null_fields_give_the_aci_defaults() -> None:
    nulls = {"Entrypoint": None, "Cmd": None, "Env": None, "WorkingDir": "", "User": "", "StopSignal": ""}
    assert image_defaults(blob(nulls), DIGEST) == ImageDefaults()
    assert image_defaults(b"{}", DIGEST) == ImageDefaults(working_dir="/", user="0", group="0")
