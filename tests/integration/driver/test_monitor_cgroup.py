"""Pods survive the agent's service stopping: conmon lives in <cgroup_parent>/monitors, not in the plugin's cgroup.

A systemd unit stop kills every process in the unit's cgroup. Here the plugin runs in a cgroup made for the
test (in every hierarchy, as a unit with accounting has), a pod is started through it, then every process in
that cgroup is SIGKILLed until it is empty. The pod and its monitor must still run, and a new plugin must
recover, stop and destroy the task with its true exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime import cgroupmove
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.protocol.plugin import Plugin, launch, nomad_env

from .conftest import CGROUP_PARENT, make_alloc, set_config, task_config

UNIT = f"/nrd-test-unit-{os.getpid()}"  # stands for the agent's systemd unit (nomad.service)


def unit_dirs() -> list[Path]:
    return [hierarchy / UNIT.strip("/") for hierarchy, _ in cgroupmove.hierarchies()]


def pids_in_unit() -> set[int]:
    found: set[int] = set()
    for group in unit_dirs():
        with contextlib.suppress(FileNotFoundError):
            found |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
    return found


def stop_unit(timeout_s: float = 10.0) -> None:
    """What systemd's KillMode=control-group does, with SIGKILL: kill what is in the cgroup until it is empty."""
    deadline = time.monotonic() + timeout_s
    while pids := pids_in_unit():
        assert time.monotonic() < deadline, f"processes {pids} stay in {UNIT}"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@pytest.fixture
def unit() -> Iterator[str]:
    yield UNIT
    stop_unit()
    for group in unit_dirs():
        with contextlib.suppress(FileNotFoundError):
            group.rmdir()


def cgroups_of(pid: int) -> set[str]:
    return {line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_pods_and_monitors_survive_a_kill_of_the_plugins_cgroup(
    unit: str, image: str, tmp_path: Path, data_dir: Path
) -> None:
    plugin = launch(nomad_env())
    fresh: Plugin | None = None
    try:
        cgroupmove.move(plugin.proc.pid, unit)  # the plugin now runs "in the agent's unit"
        assert cgroups_of(plugin.proc.pid) == {unit}
        set_config(plugin, data_dir)
        alloc = make_alloc(tmp_path)
        config = task_config(
            alloc, image, command="/bin/sh", args=["-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done"]
        )
        handle = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60).handle
        pod_dir = data_dir / "pods" / "pods" / pod_id_for(config.id)
        conmon = int((pod_dir / "conmon.pid").read_text())
        container = int((pod_dir / "container.pid").read_text())
        assert cgroups_of(conmon) == {f"{CGROUP_PARENT}/monitors"}, "conmon must leave the plugin's cgroup"
        assert unit not in cgroups_of(container)

        stop_unit()
        assert plugin.proc.wait(5) == -signal.SIGKILL
        time.sleep(0.3)
        assert alive(conmon) and alive(container), "the pod or its monitor died with the plugin's cgroup"

        fresh = launch(nomad_env())
        set_config(fresh, data_dir)
        fresh.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=handle), timeout=30)
        assert (
            fresh.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=config.id)).task.state == driver_pb2.RUNNING
        )
        fresh.driver.StopTask(
            driver_pb2.StopTaskRequest(task_id=config.id, signal="SIGTERM", timeout=Duration(seconds=5)), timeout=30
        )
        result = fresh.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=30).result
        assert result.exit_code == 42
        fresh.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)
        assert not alive(conmon)
        monitors = [h / CGROUP_PARENT.strip("/") / "monitors" for h, _ in cgroupmove.hierarchies()]
        assert [m for m in monitors if m.exists()] == [], "the last pod's destroy removes the monitors' cgroup"
    finally:
        for running in (plugin, fresh):
            if running is not None:
                running.shutdown()  # quiet when the unit's kill already ended it
                running.kill()
