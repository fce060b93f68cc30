"""The reconciler and networks: a dangling pod goes with its CNI network, and a network whose pod never
came (set up, then a crash) is torn down from its saved state: no netns, veth, chain or lease left."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nomad_rkt_driver.network.attach import NetworkRequest, PodNetworks
from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.integration.driver.conftest import leftovers, make_alloc
from tests.integration.driver.test_reconcile import kill9, pods_of, until
from tests.protocol.plugin import Plugin, launch, nomad_env

from .conftest import CNI_PATH, Env, configure, host_network_things, leases, task_config


def veths_into(namespaces: set[str]) -> list[str]:
    """Host ends of veths whose peer lives in one of ``namespaces`` (other tests may run alongside)."""
    lines = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip() for line in lines.stdout.splitlines() if line.split()[-1] in namespaces]


def nat_rules_of(pod_id: str) -> list[str]:
    """NAT rules CNI made for ``pod_id`` (its masquerade chain and the jump to it carry the id)."""
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    return [rule for rule in rules.splitlines() if f'id: \\"{pod_id}\\"' in rule]


def test_dangling_pod_networks_and_orphan_networks_are_torn_down(
    plugin: Plugin, env: Env, image: str, tmp_path: Path
) -> None:
    config = task_config(make_alloc(tmp_path), image, command="/bin/sh", args=["-c", "sleep 600"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60)
    kill9(plugin)
    networks = PodNetworks(env.data_dir / "network", (CNI_PATH,), str(env.conf_dir), env.subnet)
    networks.setup(NetworkRequest("orphan-pod"), "test")  # a crash right after the network was made
    pods = {"orphan-pod", pod_id_for(config.id)}
    namespaces = {f"rkt-{pod}" for pod in pods}
    assert {f"netns {n}" for n in namespaces} <= host_network_things()
    assert len(veths_into(namespaces)) == 2 and {pod for pod in pods if nat_rules_of(pod)} == pods
    assert len(leases(env.data_dir)) == 2

    fresh = launch(nomad_env())
    try:
        configure(fresh, env, gc={"dangling_pods": {"period": "1s", "creation_grace": "2s"}})
        assert until(lambda: networks.pods() == [] and not pods_of(env.data_dir)), networks.pods()
    finally:
        fresh.shutdown()
        fresh.kill()
    assert veths_into(namespaces) == [] and not any(nat_rules_of(pod) for pod in pods)
    assert not {f"netns {n}" for n in namespaces} & host_network_things()
    assert leases(env.data_dir) == []
    assert leftovers(env.data_dir) == []
    assert any("removed dangling network" in line and "orphan-pod" in line for line in fresh.stderr_lines)
