"""`nomad-rkt-driver gc` beyond pods: the group networks of runners (a real bridge-mode `run` killed
with SIGKILL beside a live one) and the `.deleting-*` trees a crash leaves halfway through a removal
(collected by `gc` and by the plugin's reconciler)."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from nomad_rkt_driver.runtime import aside
from tests.integration.cli import test_examples
from tests.integration.cli.test_examples import LEASES, GroupBridge, nat_chains
from tests.integration.cli.test_operator import cli
from tests.integration.driver import test_reconcile
from tests.integration.driver.conftest import leftovers
from tests.integration.driver.test_reconcile import logged, reconciling, until
from tests.protocol.plugin import Plugin

from .conftest import interrupt, output, start_runner

group_bridge = test_examples.group_bridge  # fixtures shared with the bridge example and reaper tests
plugins = test_reconcile.plugins

GC_GRACE = '    gc {\n      dangling_pods {\n        creation_grace = "1s"\n      }\n    }\n'


def wait_ready(proc: subprocess.Popen[str], made: GroupBridge) -> list[str]:
    """Read the runner's output until both tasks run (the probe reached httpd), noting its network."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        made.note(line)
        if line.startswith("probe | "):
            return lines
    raise AssertionError(f"the runner did not get both tasks running: {lines}")


def kill_runner(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the runner and its plugin child, as an OOM killer or `kill -9` would; pods keep running."""
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the runner has a plugin child"
    for process in [psutil.Process(proc.pid), *children]:
        process.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    psutil.wait_procs(children, timeout=30)


def gc_rows(plugin: Path, *args: str) -> dict[tuple[str, str], dict[str, str]]:
    done = cli(plugin, "gc", "--json", *args)
    assert done.returncode == 0, done.stderr
    return {(row["kind"], row["pod"]): row for row in json.loads(done.stdout)}


def test_gc_tears_down_a_killed_runners_group_network_and_keeps_a_live_ones(group_bridge: GroupBridge) -> None:
    text = group_bridge.plugin.read_text()
    assert text.count("\n  config {\n") == 1
    group_bridge.plugin.write_text(text.replace("\n  config {\n", "\n  config {\n" + GC_GRACE))
    workdir, plugin = group_bridge.workdir, group_bridge.plugin
    killed = start_runner(workdir, group_bridge.job, plugin=plugin)
    live = dataclasses.replace(group_bridge)  # the second runner's namespace and address
    survivor: subprocess.Popen[str] | None = None
    try:
        wait_ready(killed, group_bridge)
        chains = nat_chains() - group_bridge.chains_before  # the killed runner's per-alloc chains
        assert chains, "portmap made per-allocation chains"
        survivor = start_runner(workdir, group_bridge.job, plugin=plugin)
        wait_ready(survivor, live)
        assert live.netns != group_bridge.netns
        time.sleep(1.2)  # past creation_grace: only ownership keeps things now

        both_live = gc_rows(plugin)
        for name in (group_bridge.netns, live.netns):
            row = both_live[("group network", name)]
            assert row["action"] == "kept" and "the runner pid" in row["reason"] and "which is running" in row["reason"]
        assert all(row["action"] == "kept" for row in both_live.values()), both_live

        kill_runner(killed)
        time.sleep(1.2)
        dry = gc_rows(plugin, "--dry-run")
        gone = dry[("group network", group_bridge.netns)]
        assert gone["action"] == "would remove" and f"the runner pid {killed.pid} is gone" == gone["reason"]
        assert dry[("group network", live.netns)]["action"] == "kept"
        assert sum(r["action"] == "would remove" and r["kind"] == "pod" for r in dry.values()) == 2, "its 2 pods"
        assert Path(f"/run/netns/{group_bridge.netns}").exists(), "a dry run removes nothing"
        assert (LEASES / group_bridge.ip).exists()

        real = cli(plugin, "gc")
        assert real.returncode == 0, real.stderr
        assert f"removed       group network {group_bridge.netns}: the runner pid {killed.pid} is gone" in real.stdout
        assert f"kept          group network {live.netns}: it belongs to the runner pid {survivor.pid}" in real.stdout
        # Everything of the killed runner's allocation is gone; the live runner's is untouched.
        assert not Path(f"/run/netns/{group_bridge.netns}").exists()
        assert not (LEASES / group_bridge.ip).exists()
        assert not (nat_chains() & chains), "the killed allocation's nat chains"
        for table in ("nat", "filter"):
            rules = output("iptables", "-t", table, "-S")
            assert f"{group_bridge.ip}/" not in rules and f"{group_bridge.ip}:" not in rules, rules
        groups = workdir / "data" / "network" / "groups"
        assert sorted(p.name for p in groups.iterdir()) == [f"{live.netns}.json"]
        assert len(output("ip", "-o", "link", "show", "master", group_bridge.bridge).splitlines()) == 1
        assert Path(f"/run/netns/{live.netns}").exists() and (LEASES / live.ip).exists()
        assert "kept" in cli(plugin, "gc").stdout, "a second pass keeps the live runner's network still"

        interrupt(survivor)
    finally:
        for proc in (killed, survivor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert group_bridge.leftovers() == [] and live.leftovers() == []
    # A killed runner cannot remove its alloc dir (no mounts in it: gc removed its pods); gc leaves
    # alloc dirs alone, as it knows nothing of them.
    killed_allocs = [p for p in (workdir / "data" / "allocs").iterdir()]
    assert len(killed_allocs) == 1 and leftovers(workdir / "data") == []
    subprocess.run(["rm", "-rf", str(killed_allocs[0])], check=True)


CRASH = """
import shutil, sys, time
from pathlib import Path
from nomad_rkt_driver.runtime import aside
def stuck(path):  # the removal is killed after the rename, before the tree is deleted
    print("renamed", flush=True)
    time.sleep(600)
shutil.rmtree = stuck
aside.remove(Path(sys.argv[1]))
"""


def crash_during_removal(pod_dir: Path, outside: Path) -> Path:
    """A pod state dir whose removal is killed with SIGKILL between its rename aside and its deletion."""
    (pod_dir / "bundle" / "rootfs" / "etc").mkdir(parents=True)
    (pod_dir / "bundle" / "rootfs" / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (pod_dir / "bundle" / "rootfs" / "data").symlink_to(outside)  # never followed
    (pod_dir / "bundle" / "rootfs" / "etc").chmod(0o500)
    (pod_dir / "record.json").write_text("{}")
    with subprocess.Popen([sys.executable, "-c", CRASH, str(pod_dir)], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "renamed\n"
        proc.send_signal(signal.SIGKILL)
    [left] = pod_dir.parent.glob(f"{aside.PREFIX}{pod_dir.name}-*")
    assert not pod_dir.exists() and (left / "bundle" / "rootfs" / "etc" / "passwd").exists()
    return left


def test_gc_collects_a_crashed_removal_after_the_grace(tmp_path: Path, data_dir: Path) -> None:
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(
        f'plugin "rkt" {{\n  config {{\n    data_dir = "{data_dir}"\n'
        '    gc {\n      dangling_pods {\n        creation_grace = "3s"\n      }\n    }\n  }\n}\n'
    )
    outside = tmp_path / "host-volume"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    left = crash_during_removal(data_dir / "pods" / "pods" / "0123456789abcdef", outside)
    made = time.monotonic()

    young = gc_rows(plugin_hcl)[("leftover", str(left))]
    assert young["action"] == "kept" and "younger than creation_grace" in young["reason"]
    time.sleep(max(0.0, 3.2 - (time.monotonic() - made)))
    dry = gc_rows(plugin_hcl, "--dry-run")[("leftover", str(left))]
    assert dry["action"] == "would remove" and left.exists()
    real = cli(plugin_hcl, "gc")
    assert real.returncode == 0, real.stderr
    assert f"removed       leftover {left}: an unfinished pod removal (a crash)" in real.stdout
    assert not left.exists() and (outside / "precious").read_text() == "keep me"
    assert leftovers(data_dir) == []


def test_the_plugins_reconciler_collects_a_crashed_removal(
    plugins: list[Plugin], tmp_path: Path, data_dir: Path
) -> None:
    outside = tmp_path / "host-volume"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    fresh = reconciling(data_dir)  # a pass every second, 4 s grace
    plugins.append(fresh)
    left = crash_during_removal(data_dir / "pods" / "pods" / "fedcba9876543210", outside)
    assert until(lambda: not left.exists(), 20), "the reconciler never collected the leftover"
    assert any(str(left) in line for line in logged(fresh, "removed dangling leftover"))
    assert (outside / "precious").read_text() == "keep me"
    assert leftovers(data_dir) == []
