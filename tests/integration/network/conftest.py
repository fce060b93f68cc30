"""Network tests through the plugin process: per-test data dir, CNI conf dir and subnet, and a check
that nothing network-shaped (netns, veths, per-pod iptables chains, IPAM leases) is left after each test."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.network.attach import PodNetworks
from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2
from tests.imagebuild import DEFAULT_CONFIG, build_image, standard_layers
from tests.integration.driver.conftest import CGROUP_PARENT, Alloc, _clean, encode, leftovers
from tests.integration.driver.conftest import task_config as driver_task_config
from tests.protocol.plugin import Plugin, launch, nomad_env

CNI_PATH = "/usr/lib/cni"
CNI_HINT = "apt-get install containernetworking-plugins iptables iproute2"
HOST_LINK_PREFIX = "rkt6t"  # veth pairs the IPv6 tests give a host IPv6 address (test_ipv6.py)


def _run(*cmd: str) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True).stdout


def host_network_things() -> set[str]:
    """Namespaces of ours, veths (the IPv6 tests' host links too), per-pod nat chains of iptables and
    ip6tables (portmap's shared CNI-HOSTPORT-* may stay)."""
    things = {f"netns {n.split()[0]}" for n in _run("ip", "netns", "list").splitlines() if n.startswith("rkt-")}
    things |= {
        f"veth {line.split(':')[1].strip()}" for line in _run("ip", "-o", "link", "show", "type", "veth").splitlines()
    }
    for tool in ("iptables", "ip6tables"):
        for line in _run(tool, "-t", "nat", "-S").splitlines():
            if (
                line.startswith("-N ")
                and (line[3:].startswith(("CNI-", "RKT")))
                and not line[3:].startswith("CNI-HOSTPORT-")
            ):
                things.add(f"{tool} chain {line[3:]}")
    return things


def leases(data_dir: Path) -> list[str]:
    """host-local's lease files (one per address, IPv4 and IPv6 alike) under the data dir."""
    ipam = data_dir / "network" / "ipam"
    if not ipam.is_dir():
        return []
    return [
        str(p) for p in ipam.rglob("*") if p.is_file() and p.name != "lock" and not p.name.startswith("last_reserved")
    ]


@dataclass
class Env:
    data_dir: Path
    conf_dir: Path
    subnet: str


@pytest.fixture(scope="session", autouse=True)
def tools() -> None:
    for tool in ("ip", "iptables", "ip6tables", "runc", "conmon"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            pytest.fail(f"{tool} is not installed: {CNI_HINT}, runc, conmon")
    for plugin in ("ptp", "host-local", "portmap", "loopback"):
        if not os.access(f"{CNI_PATH}/{plugin}", os.X_OK):
            pytest.fail(f"CNI plugin {plugin} missing in {CNI_PATH}: {CNI_HINT}")


@pytest.fixture(scope="module", autouse=True)
def nothing_left_after_module() -> Iterator[None]:
    before = host_network_things()
    yield
    assert host_network_things() - before == set(), "the module left network state behind"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    before = host_network_things()
    made = Env(tmp_path / "data", tmp_path / "net.d", f"10.250.{random.randint(1, 250)}.0/24")
    made.conf_dir.mkdir()
    yield made
    left = leftovers(made.data_dir)
    _clean(made.data_dir)
    networks = PodNetworks(made.data_dir / "network", (CNI_PATH,), "", "")
    pods = networks.pods()
    for pod in pods:
        networks.teardown(pod)
    lease_files = leases(made.data_dir)
    extra = host_network_things() - before
    assert left == [], "the test left pods behind"
    assert pods == [], "the test left pod network state behind"
    assert lease_files == [], "the test left IPAM leases behind"
    assert extra == set(), "the test left network state behind"


def configure(plugin: Plugin, env: Env, **extra: Any) -> None:
    values: dict[str, Any] = {
        "data_dir": str(env.data_dir),
        "cgroup_parent": CGROUP_PARENT,
        "cni_config_dir": str(env.conf_dir),
        "default_network_subnet": env.subnet,
        **extra,
    }
    cores = [base_pb2.ClientTopologyCore(core_id=i, base_speed=2000) for i in range(2)]
    plugin.base.SetConfig(
        base_pb2.SetConfigRequest(
            msgpack_config=encode(PluginConfig, **values),
            plugin_api_version="v0.1.0",
            nomad_config=base_pb2.NomadConfig(
                driver=base_pb2.NomadDriverConfig(Topology=base_pb2.ClientTopology(cores=cores))
            ),
        )
    )


@pytest.fixture
def plugin(env: Env) -> Iterator[Plugin]:
    running = launch(nomad_env())
    try:
        configure(running, env)
        yield running
    finally:
        if running.proc.poll() is None:
            running.shutdown()
        running.kill()


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox with ports 8080-tcp (Docker style), 53-udp, 80-tcp and the OCI label port admin (9090/tcp)."""
    config = {
        **DEFAULT_CONFIG,
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "80/tcp": {}},
        "User": "0:0",
    }
    layout = tmp_path_factory.mktemp("netimage") / "layout"
    build_image(layout, standard_layers(), config=config, tag="v1")
    return f"oci:{layout}:v1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(url: str, timeout_s: float = 20.0) -> str:
    """GET with retries while the pod's httpd starts."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                body: bytes = answer.read()
                return body.decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def task_config(
    alloc: Alloc,
    image: str,
    alloc_ports: tuple[driver_pb2.PortMapping, ...] = (),
    netns_path: str = "",
    **cfg: Any,
) -> driver_pb2.TaskConfig:
    """The driver tests' task config with Nomad's ports and, optionally, its group netns; the
    network defaults to the schema's ("default") unless the test names one."""
    config = driver_task_config(alloc, image, **{"net": None, **cfg})
    config.resources.ports.extend(alloc_ports)
    if netns_path:
        config.network_isolation_spec.CopyFrom(
            driver_pb2.NetworkIsolationSpec(mode=driver_pb2.NetworkIsolationSpec.GROUP, path=netns_path)
        )
    return config
