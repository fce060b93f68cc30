"""Pods outlive the plugin: kill -9 the plugin, start a new one, recover and get true exit codes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.protocol.plugin import Plugin, launch, nomad_env

from .conftest import make_alloc, set_config, task_config

TASKS = 20


def recover(plugin: Plugin, handle: driver_pb2.TaskHandle) -> None:
    plugin.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=handle), timeout=30)  # task_id left empty, as Nomad


def test_tasks_survive_the_plugin_and_report_true_exits(
    plugin: Plugin, image: str, tmp_path: Path, data_dir: Path
) -> None:
    handles: list[driver_pb2.TaskHandle] = []
    for n in range(TASKS):
        alloc = make_alloc(tmp_path, f"t{n}")
        # Half exit while the plugin is down (after 1 s), half keep running until stopped.
        script = f"sleep 1; exit {n}" if n % 2 == 0 else "trap 'exit 40' TERM; while :; do sleep 0.1; done"
        config = task_config(alloc, image, command="/bin/sh", args=["-c", script])
        handles.append(plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60).handle)

    plugin.proc.send_signal(signal.SIGKILL)  # the plugin dies without any cleanup
    plugin.proc.wait()
    time.sleep(1.5)

    fresh = launch(nomad_env())
    try:
        set_config(fresh, data_dir)
        for handle in handles:
            recover(fresh, handle)
            recover(fresh, handle)  # idempotent
        for n, handle in enumerate(handles):
            task_id = handle.config.id
            if n % 2 == 0:
                result = fresh.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task_id), timeout=30).result
                assert (result.exit_code, result.signal) == (n, 0), f"task {n}"
            else:
                inspect = fresh.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=task_id))
                assert inspect.task.state == driver_pb2.RUNNING
                fresh.driver.StopTask(
                    driver_pb2.StopTaskRequest(task_id=task_id, signal="SIGTERM", timeout=Duration(seconds=5)),
                    timeout=30,
                )
                result = fresh.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task_id), timeout=30).result
                assert result.exit_code == 40, f"task {n}"
            fresh.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=60)
    finally:
        fresh.shutdown()
        fresh.kill()


def test_corrupt_or_gone_state_cannot_be_recovered(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/true")
    handle = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60).handle
    plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=30)
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=30)

    garbage = driver_pb2.TaskHandle(version=1, config=config, driver_state=b"\x93garbage")
    with pytest.raises(grpc.RpcError) as info:
        recover(plugin, garbage)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "corrupt" in info.value.details()
    # The pod was destroyed: recovering its (valid) handle fails so that Nomad restarts the task.
    with pytest.raises(grpc.RpcError) as info:
        recover(plugin, handle)
    assert "no pod" in info.value.details() or "gone" in info.value.details()
