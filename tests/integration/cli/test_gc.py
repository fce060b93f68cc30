"""`nomad-rkt-driver gc`: the operator's dangling-pod pass, dry run against real, with and without --force."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nomad_rkt_driver.network.attach import NetworkRequest, PodNetworks
from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.integration.cli.test_operator import cli
from tests.integration.driver.conftest import CGROUP_PARENT, leftovers, make_alloc, task_config
from tests.integration.driver.test_reconcile import kill9, pods_of
from tests.protocol.plugin import Plugin


def test_gc_keeps_what_a_live_plugin_owns_then_removes_dangling_pods(
    plugin: Plugin, image: str, tmp_path: Path, data_dir: Path
) -> None:
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(
        f'plugin "rkt" {{\n config {{\n  data_dir = "{data_dir}"\n  cgroup_parent = "{CGROUP_PARENT}"\n'
        '  gc {\n   dangling_pods {\n    creation_grace = "1s"\n   }\n  }\n }\n}\n'
    )
    running = task_config(make_alloc(tmp_path, "svc"), image, command="/bin/sh", args=["-c", "sleep 600"])
    exited = task_config(make_alloc(tmp_path, "batch"), image, command="/bin/true")
    for config in (running, exited):
        plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60)
    plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=exited.id), timeout=30)
    networks = PodNetworks(data_dir / "network", ("/usr/lib/cni",), str(tmp_path), "172.16.28.0/24")
    networks.setup(NetworkRequest("orphan-net", nets=("none",)), "test")  # state whose pod never came
    time.sleep(1.2)  # past creation_grace
    pods = pods_of(data_dir)
    assert len(pods) == 2

    live = cli(plugin_hcl, "gc")
    assert live.returncode == 0, live.stderr
    assert live.stdout.count("which is running") == 2, "a live plugin's pods are its own, exited or not"
    assert pods_of(data_dir) == pods and set(networks.pods()) == pods, "the orphan network went at once"

    networks.setup(NetworkRequest("orphan-net", nets=("none",)), "test")
    kill9(plugin)  # the agent is gone: its plugin can no longer claim anything
    time.sleep(1.2)
    dry = cli(plugin_hcl, "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would remove") == 2 and "network orphan-net" in dry.stdout
    assert "--force removes it" in dry.stdout, "the running agent pod is kept and the way out named"
    assert pods_of(data_dir) == pods and "orphan-net" in networks.pods(), "a dry run removes nothing"
    rows = json.loads(cli(plugin_hcl, "gc", "--dry-run", "--json").stdout)
    assert sorted(r["action"] for r in rows) == ["kept", "would remove", "would remove"]
    assert {r["pod"] for r in rows if r["kind"] == "network"} == {"orphan-net"}

    real = cli(plugin_hcl, "gc")
    assert real.returncode == 0, real.stderr
    assert real.stdout.count("removed") == 2 and "kept" in real.stdout
    assert len(pods_of(data_dir)) == 1 and set(networks.pods()) == pods_of(data_dir), "with their networks"

    forced = cli(plugin_hcl, "gc", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "warning: removing a running pod of the Nomad agent" in forced.stderr
    assert leftovers(data_dir) == []
