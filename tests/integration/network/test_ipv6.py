"""IPv6 with the real CNI plugins through the plugin process: a dual-stack default network
(``default_network_subnet6``), an IPv6-only named conflist, IPv6 port forwarding by portmap, and
the refusal of an IPv6 host port on an IPv4-only network. The env fixture checks that no netns,
veth, iptables or ip6tables chain, or IPv4/IPv6 lease is left after each test.

Port forwards to IPv6 go to a host address on a veth link the test makes (``rkt6t…``), never to
``::1``: Linux has no ``route_localnet`` for IPv6, so a DNAT of a packet from ``::1`` to a pod is
dropped (portmap's IPv6 rules are in place; the kernel will not route it). Nothing leaves this host.
"""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.integration.driver.conftest import make_alloc
from tests.protocol.plugin import Plugin

from .conftest import HOST_LINK_PREFIX, Env, configure, fetch, free_port, task_config
from .test_networks import destroy, httpd, refused, start


def ula() -> str:
    """A random unique-local /64 (fd00::/8), so parallel runs do not share a subnet."""
    return f"fd{random.randint(0, 255):02x}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64"


@pytest.fixture
def host_v6() -> Iterator[str]:
    """An IPv6 address of this host on a link of the test's own (the host side of v6 forwards): one
    end of a veth pair (this kernel has no dummy links)."""
    link = HOST_LINK_PREFIX + secrets.token_hex(3)
    address = str(ipaddress.IPv6Network(ula())[1])
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/128", "dev", link, "nodad"], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", link], check=True)


def free_port6(address: str) -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def pod_files(tmp_path: Path) -> tuple[dict[str, object], str, str]:
    pod = next((tmp_path / "data" / "network" / "pods").iterdir())
    return json.loads((pod / "state.json").read_text()), (pod / "hosts").read_text(), (pod / "resolv.conf").read_text()


def test_dual_stack_default_network(plugin: Plugin, image: str, tmp_path: Path, env: Env, host_v6: str) -> None:
    subnet6 = ula()
    configure(plugin, env, default_network_subnet6=subnet6)
    port4, port6 = free_port(), free_port6(host_v6)
    ports = (
        driver_pb2.PortMapping(label="http", value=port4, host_ip="127.0.0.1"),
        driver_pb2.PortMapping(label="http6", value=port6, host_ip=host_v6),
    )
    config = task_config(
        make_alloc(tmp_path),
        image,
        ports,
        port_map={"http": "8080-tcp", "http6": "8080-tcp"},
        dns_servers=["fd00::53"],
        **httpd(8080),
    )
    response = start(plugin, config)
    try:
        override = response.network_override
        assert ipaddress.ip_address(override.addr) in ipaddress.ip_network(env.subnet)  # IPv4 first
        assert dict(override.port_map) == {"http": 8080, "http6": 8080} and override.auto_advertise
        state, hosts, resolv = pod_files(tmp_path)
        networks = state["networks"]
        assert isinstance(networks, list)
        addresses = [ipaddress.ip_interface(ip["address"]).ip for ip in networks[0]["result"]["ips"]]
        pod6 = next(a for a in addresses if a.version == 6)
        assert pod6 in ipaddress.ip_network(subnet6)
        assert f"{override.addr}\tweb" in hosts and f"{pod6}\tweb" in hosts
        assert resolv == "nameserver fd00::53\n"
        assert fetch(f"http://[{pod6}]:8080/") == "hello web\n"  # the pod's own IPv6 address
        assert fetch(f"http://[{host_v6}]:{port6}/") == "hello web\n"  # portmap's IPv6 forward
        assert fetch(f"http://127.0.0.1:{port4}/") == "hello web\n"  # and the IPv4 one
        nat6 = subprocess.run(["ip6tables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
        assert f"--to-destination [{pod6}]:8080" in nat6
    finally:
        destroy(plugin, config.id)
    destroy(plugin, config.id)  # idempotent


def test_ipv6_only_named_network(plugin: Plugin, image: str, tmp_path: Path, env: Env, host_v6: str) -> None:
    subnet6 = ula()
    conflist = {
        "cniVersion": "1.0.0",
        "name": "six",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet6}]],
                    "routes": [{"dst": "::/0"}],
                    "dataDir": str(env.data_dir / "network" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (env.conf_dir / "six.conflist").write_text(json.dumps(conflist))
    port6 = free_port6(host_v6)
    ports = (driver_pb2.PortMapping(label="http", value=port6, host_ip=host_v6),)
    config = task_config(make_alloc(tmp_path), image, ports, net=["six"], port_map={"http": "8080-tcp"}, **httpd(8080))
    response = start(plugin, config)
    try:
        addr = ipaddress.ip_address(response.network_override.addr)
        assert addr.version == 6 and addr in ipaddress.ip_network(subnet6)  # no IPv4: Nomad gets the IPv6 one
        _, hosts, _ = pod_files(tmp_path)
        assert f"{addr}\tweb" in hosts and "127.0.1.1" not in hosts
        assert fetch(f"http://[{host_v6}]:{port6}/") == "hello web\n"
        assert fetch(f"http://[{addr}]:8080/") == "hello web\n"
    finally:
        destroy(plugin, config.id)


def test_ipv6_host_port_on_an_ipv4_network_is_refused(plugin: Plugin, image: str, tmp_path: Path) -> None:
    ports = (driver_pb2.PortMapping(label="http", value=free_port(), host_ip="fd00::2"),)
    err = refused(plugin, task_config(make_alloc(tmp_path), image, ports, port_map={"http": "8080-tcp"}))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = str(err.details())
    assert 'port "http" is on the IPv6 host address fd00::2' in details
    assert "default_network_subnet6" in details
