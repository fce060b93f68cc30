"""WaitTask through conmon's pidfd: cancelled waits, many waits, and a pod whose monitor died first."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.protocol.plugin import Plugin

from .conftest import make_alloc, task_config
from .test_lifecycle import destroy, start, wait


def test_a_cancelled_wait_does_not_lose_the_exit_and_many_waits_get_it(
    plugin: Plugin, image: str, tmp_path: Path
) -> None:
    config = task_config(make_alloc(tmp_path), image, command="/bin/sh", args=["-c", "sleep 1; exit 3"])
    start(plugin, config)
    first = plugin.driver.WaitTask.future(driver_pb2.WaitTaskRequest(task_id=config.id))
    time.sleep(0.2)
    first.cancel()  # as Nomad does when its task runner stops waiting
    with pytest.raises(grpc.FutureCancelledError):
        first.result()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: wait(plugin, config.id).result.exit_code, range(8)))
    assert results == [3] * 8
    assert wait(plugin, config.id).result.exit_code == 3  # after the exit, at once
    destroy(plugin, config.id)


def test_a_pod_whose_monitor_died_ends_its_wait_when_the_container_goes(
    plugin: Plugin, image: str, tmp_path: Path, data_dir: Path
) -> None:
    config = task_config(make_alloc(tmp_path), image, command="/bin/sleep", args=["600"])
    start(plugin, config)
    pending = plugin.driver.WaitTask.future(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
    pod_dir = data_dir / "pods" / "pods" / pod_id_for(config.id)
    time.sleep(0.3)
    os.kill(int((pod_dir / "conmon.pid").read_text()), signal.SIGKILL)
    time.sleep(0.5)
    assert not pending.done(), "the container still runs: the wait must go on"
    os.kill(int((pod_dir / "container.pid").read_text()), signal.SIGKILL)
    response = pending.result(timeout=30)
    assert response.result.exit_code == -1 and "monitor is gone" in response.err
    destroy(plugin, config.id)
