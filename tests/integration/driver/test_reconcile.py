"""The dangling-pod reaper: after a plugin dies, pods no task claims are removed once the grace is over;
recovered pods, pods of a live runner and dry runs are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime import owners
from nomad_rkt_driver.runtime.pods import Pods
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.protocol.plugin import Plugin, launch, nomad_env

from .conftest import CGROUP_PARENT, leftovers, make_alloc, set_config, task_config

LOOP = "while :; do sleep 0.1; done"


def reconciling(data_dir: Path, env: dict[str, str] | None = None, **dangling: object) -> Plugin:
    """A fresh plugin whose reaper runs every second with a 4 s grace (its RecoverTasks come well before)."""
    fresh = launch(env or nomad_env())
    settings = {"period": "1s", "creation_grace": "4s", **dangling}
    set_config(fresh, data_dir, gc={"dangling_pods": settings})
    return fresh


@pytest.fixture
def plugins() -> Iterator[list[Plugin]]:
    """Plugins a test launches itself; shut down (or killed) at the end."""
    started: list[Plugin] = []
    yield started
    for running in started:
        if running.proc.poll() is None:
            running.shutdown()
        running.kill()


def start(plugin: Plugin, tmp_path: Path, image: str, name: str, script: str = LOOP) -> driver_pb2.TaskHandle:
    config = task_config(make_alloc(tmp_path, name), image, command="/bin/sh", args=["-c", script])
    handle: driver_pb2.TaskHandle = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60).handle
    return handle


def kill9(plugin: Plugin) -> None:
    plugin.proc.send_signal(signal.SIGKILL)
    plugin.proc.wait()


def pods_of(data_dir: Path) -> set[str]:
    return set(Pods(data_dir / "pods", "runc", "conmon", CGROUP_PARENT).list())


def until(check: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def logged(plugin: Plugin, text: str) -> list[str]:
    return [line for line in plugin.stderr_lines if text in line]


def finish(plugin: Plugin, handle: driver_pb2.TaskHandle) -> None:
    """Recover (if needed), stop and destroy a task through ``plugin``."""
    plugin.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=handle), timeout=30)
    task_id = handle.config.id
    plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=task_id, signal="SIGKILL"), timeout=30)
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=60)


def cgroups_of(pod_id: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"**{CGROUP_PARENT}/{pod_id}") if p.is_dir()]


def test_unclaimed_pods_are_reaped_after_the_grace_and_recovered_ones_kept(
    plugin: Plugin, plugins: list[Plugin], image: str, tmp_path: Path, data_dir: Path
) -> None:
    kept = start(plugin, tmp_path, image, "kept")
    lost = start(plugin, tmp_path, image, "lost")
    done = start(plugin, tmp_path, image, "done", "exit 3")
    plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=done.config.id), timeout=30)
    kill9(plugin)
    kept_pod, lost_pod, done_pod = (pod_id_for(h.config.id) for h in (kept, lost, done))
    assert pods_of(data_dir) == {kept_pod, lost_pod, done_pod}

    fresh = reconciling(data_dir)
    plugins.append(fresh)
    fresh.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=kept), timeout=30)  # Nomad recovers only this one
    assert until(lambda: pods_of(data_dir) == {kept_pod}), f"left: {pods_of(data_dir)}"
    assert not cgroups_of(lost_pod), "the reaped pod's cgroup is removed"
    removed = logged(fresh, "removed dangling pod")
    assert any(lost_pod in line for line in removed) and any(done_pod in line for line in removed)

    time.sleep(2.5)  # two more passes
    inspect = fresh.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=kept.config.id))
    assert inspect.task.state == driver_pb2.RUNNING, "a recovered pod is never touched"
    mark = owners.read(data_dir / "pods" / "pods" / kept_pod)
    assert mark is not None and mark.pid == fresh.proc.pid, "recovery makes the pod the new plugin's"
    finish(fresh, kept)
    assert leftovers(data_dir) == []


def test_dry_run_only_logs(plugin: Plugin, plugins: list[Plugin], image: str, tmp_path: Path, data_dir: Path) -> None:
    handle = start(plugin, tmp_path, image, "web")
    kill9(plugin)
    fresh = reconciling(data_dir, dry_run=True)
    plugins.append(fresh)
    pod_id = pod_id_for(handle.config.id)
    assert until(lambda: bool(logged(fresh, "dry run: would remove dangling pod")))
    assert any(pod_id in line for line in logged(fresh, "would remove"))
    time.sleep(1.5)
    assert pods_of(data_dir) == {pod_id}
    finish(fresh, handle)  # still there and recoverable
    assert leftovers(data_dir) == []


def test_a_live_runners_pods_stay_and_a_dead_runners_go(
    plugins: list[Plugin], image: str, tmp_path: Path, data_dir: Path
) -> None:
    runner = subprocess.Popen(["sleep", "600"])  # stands in for a `nomad-rkt-driver run` that will die
    try:
        handles = {}
        for name, pid in (("alive", os.getpid()), ("dead", runner.pid)):
            runners_plugin = launch(nomad_env(**{owners.RUNNER_ENV: str(pid)}))
            plugins.append(runners_plugin)
            set_config(runners_plugin, data_dir)
            handles[name] = start(runners_plugin, tmp_path, image, name)
            kill9(runners_plugin)
        pods = {name: pod_id_for(h.config.id) for name, h in handles.items()}
        for name, pid in (("alive", os.getpid()), ("dead", runner.pid)):
            mark = owners.read(data_dir / "pods" / "pods" / pods[name])
            assert mark is not None and (mark.kind, mark.pid) == ("runner", pid)
    finally:
        runner.kill()
        runner.wait()

    # A live runner's own plugin judges nothing, even configured to: the agent's pods are not its business.
    runners_plugin = reconciling(data_dir, nomad_env(**{owners.RUNNER_ENV: str(os.getpid())}))
    plugins.append(runners_plugin)
    time.sleep(6.5)  # past its grace, two passes
    assert pods_of(data_dir) == set(pods.values()), "the runner's plugin runs no reconciler"
    runners_plugin.shutdown()

    agent = reconciling(data_dir)
    plugins.append(agent)
    assert until(lambda: pods_of(data_dir) == {pods["alive"]}), f"left: {pods_of(data_dir)}"
    time.sleep(2.5)
    assert pods_of(data_dir) == {pods["alive"]}, "the live runner's pod stays"
    assert logged(agent, "removed dangling pod") and not any(pods["alive"] in x for x in logged(agent, "removed"))
    finish(agent, handles["alive"])
    assert leftovers(data_dir) == []
