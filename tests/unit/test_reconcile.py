"""Who judges a pod dangling: the plugin (it knows its claimed tasks) and the operator's `gc` (it does not)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nomad_rkt_driver import procs
from nomad_rkt_driver.driver.reconcile import (
    Found,
    judge_for_operator,
    judge_for_plugin,
    judge_group_network,
    judge_leftover,
)
from nomad_rkt_driver.network.group import GroupNetworks, GroupState
from nomad_rkt_driver.runtime import owners
from nomad_rkt_driver.runtime.owners import Owner

GRACE = 300.0


@pytest.fixture(scope="module")
def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def live(kind: owners.Kind = "agent") -> Owner:
    return Owner(kind, os.getpid(), procs.start_time(os.getpid()) or 0)


def dead(pid: int, kind: owners.Kind = "agent") -> Owner:
    return Owner(kind, pid, 12345)


def found(state: str = "running", age: float = GRACE + 1, owner: Owner | None = None) -> Found:
    return Found("pod-1", state, age, owner)


def test_plugin_keeps_claimed_young_and_live_owned_pods(dead_pid: int) -> None:
    me = Owner("agent", 1, 1)  # this plugin (not the test process)
    assert not judge_for_plugin(found(), me, {"pod-1"}, GRACE).remove
    assert not judge_for_plugin(found(age=GRACE - 1, owner=dead(dead_pid)), me, set(), GRACE).remove
    kept = judge_for_plugin(found(owner=live("runner")), me, set(), GRACE)
    assert not kept.remove and "the runner pid" in kept.reason
    assert not judge_for_plugin(found(owner=live("agent")), me, set(), GRACE).remove, "another live plugin's pod"


def test_plugin_removes_unclaimed_pods_of_dead_or_no_owners(dead_pid: int) -> None:
    me = Owner("agent", 1, 1)
    for state in ("running", "exited", "gone", "unknown"):
        assert judge_for_plugin(found(state), me, set(), GRACE).remove, state
    assert judge_for_plugin(found(owner=dead(dead_pid, "runner")), me, set(), GRACE).remove
    assert judge_for_plugin(found(owner=me), me, set(), GRACE).remove, "ours yet unclaimed: a leftover"


def test_operator_keeps_running_agent_pods_unless_forced(dead_pid: int) -> None:
    agent_pod = found("running", owner=dead(dead_pid))
    kept = judge_for_operator(agent_pod, GRACE, force=False)
    assert not kept.remove and "--force" in kept.reason
    assert judge_for_operator(agent_pod, GRACE, force=True).remove
    assert not judge_for_operator(found("running"), GRACE, force=False).remove, "unmarked = the agent's"
    assert judge_for_operator(found("exited", owner=dead(dead_pid)), GRACE, force=False).remove
    assert judge_for_operator(found("gone"), GRACE, force=False).remove
    assert judge_for_operator(found("running", owner=dead(dead_pid, "runner")), GRACE, force=False).remove


def test_operator_never_touches_live_owners_or_young_pods(dead_pid: int) -> None:
    for owner in (live("agent"), live("runner")):
        assert not judge_for_operator(found("exited", owner=owner), GRACE, force=True).remove
    assert not judge_for_operator(found("exited", GRACE - 1, dead(dead_pid)), GRACE, force=True).remove


def test_owner_marks_round_trip_and_name_the_runner(tmp_path: Path, dead_pid: int) -> None:
    assert owners.read(tmp_path) is None
    runner = owners.this_process({owners.RUNNER_ENV: str(os.getpid())})
    assert runner.kind == "runner" and runner.pid == os.getpid() and runner.alive()
    owners.write(tmp_path, runner, "alloc/web/1")
    back = owners.read(tmp_path)
    assert back is not None and back.same_process(runner) and back.task_id == "alloc/web/1"
    agent = owners.this_process({owners.RUNNER_ENV: str(dead_pid)})  # a runner that is gone: we are the agent's
    assert agent.kind == "agent" and agent.pid == os.getpid()
    (tmp_path / owners.OWNER_FILE).write_text("{not json")
    assert owners.read(tmp_path) is None


def test_gc_keeps_a_live_runners_group_network_and_removes_a_dead_ones(dead_pid: int) -> None:
    me, started = os.getpid(), procs.start_time(os.getpid()) or 0
    kept = judge_group_network(GroupState("alloc-a", me, started, 0.0), GRACE)
    assert not kept.remove and kept.what == "group network" and f"the runner pid {me}, which is running" in kept.reason
    gone = judge_group_network(GroupState("alloc-b", dead_pid, 12345, 0.0), GRACE)
    assert gone.remove and gone.reason == f"the runner pid {dead_pid} is gone", "no grace: the owner is known dead"
    reused = judge_group_network(GroupState("alloc-c", me, started + 1, GRACE + 1), GRACE)
    assert reused.remove, "a live pid that started at another time is not the runner"
    assert not judge_group_network(GroupState("alloc-d", me, 0, 0.0), GRACE).remove, "old state: pid alone"


def test_a_group_state_without_owner_goes_only_after_the_grace() -> None:
    assert not judge_group_network(GroupState("x", 0, 0, GRACE - 1), GRACE).remove
    assert judge_group_network(GroupState("x", 0, 0, GRACE + 1), GRACE).remove


def test_group_states_carry_pid_and_start_time_and_stale_compares_both(tmp_path: Path, dead_pid: int) -> None:
    root = tmp_path / "groups"
    root.mkdir()
    me, started = os.getpid(), procs.start_time(os.getpid()) or 0
    (root / "live.json").write_text(f'{{"netns": "live", "pid": {me}, "started": {started}}}')
    (root / "reused.json").write_text(f'{{"netns": "reused", "pid": {me}, "started": {started + 7}}}')
    (root / "dead.json").write_text(f'{{"netns": "dead", "pid": {dead_pid}, "started": 5}}')
    (root / "junk.json").write_text("{not json")
    (root / "half.json.tmp").write_text("{}")  # a write in progress is no network
    networks = GroupNetworks(root, ())
    states = {s.name: s for s in networks.states()}
    assert set(states) == {"live", "reused", "dead", "junk"}
    assert (states["live"].pid, states["live"].started) == (me, started)
    assert states["junk"].pid == 0 and 0 <= states["junk"].age_s < 60
    assert networks.stale() == ["dead", "junk", "reused"]


def test_leftovers_wait_for_the_grace_and_never_cross_a_mount(tmp_path: Path) -> None:
    path = tmp_path / ".deleting-pod-1-abcd1234"
    assert judge_leftover(path, GRACE + 1, [], GRACE).remove
    assert not judge_leftover(path, GRACE - 1, [], GRACE).remove
    mounted = judge_leftover(path, GRACE + 1, [f"{path}/rootfs"], GRACE)
    assert not mounted.remove and "unmount" in mounted.reason
