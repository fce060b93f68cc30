"""Tasks through the real plugin process: start, wait, logs, stop, signal, stats, inspect, destroy."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.protocol.plugin import Plugin

from .conftest import make_alloc, task_config


def start(plugin: Plugin, config: driver_pb2.TaskConfig) -> driver_pb2.StartTaskResponse:
    response: driver_pb2.StartTaskResponse = plugin.driver.StartTask(
        driver_pb2.StartTaskRequest(task=config), timeout=60
    )
    return response


def wait(plugin: Plugin, task_id: str) -> driver_pb2.WaitTaskResponse:
    response: driver_pb2.WaitTaskResponse = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60
    )
    return response


def destroy(plugin: Plugin, task_id: str) -> None:
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=60)


def test_exit_code_and_separate_logs(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(
        alloc,
        image,
        command="/bin/sh",
        args=["-c", "echo one; echo two >&2; echo three; ls /alloc /local /secrets >/dev/null; exit 3"],
    )
    response = start(plugin, config)
    handle = response.handle
    assert handle.version == 1 and handle.state == driver_pb2.RUNNING and handle.driver_state
    assert handle.config.id == config.id and handle.config.name == "web"
    result = wait(plugin, config.id)
    assert (result.result.exit_code, result.result.signal, result.err) == (3, 0, "")
    assert alloc.stdout.text() == "one\nthree\n"
    assert alloc.stderr.text() == "two\n"
    inspect = plugin.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=config.id))
    assert inspect.task.state == driver_pb2.EXITED and inspect.task.result.exit_code == 3
    assert inspect.task.completed_at.seconds >= inspect.task.started_at.seconds > 0
    destroy(plugin, config.id)
    destroy(plugin, config.id)  # idempotent


def test_success_and_image_defaults(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image)  # the image's Entrypoint/Cmd: sh -c "echo hello ..."
    start(plugin, config)
    assert wait(plugin, config.id).result.exit_code == 0
    assert "hello from the test image" in alloc.stdout.text()
    destroy(plugin, config.id)
    # The image's Env, WorkingDir and User apply; Nomad's env is added on top; with an explicit
    # entrypoint the command follows it (docker style), and args are appended (rkt style).
    alloc = make_alloc(tmp_path, "env")
    config = task_config(
        alloc,
        image,
        entrypoint=["/bin/sh", "-c"],
        command='pwd; id -u; id -g; echo $GREETING $NOMAD_TASK_NAME "$0"',
        args=["appended"],
    )
    start(plugin, config)
    assert wait(plugin, config.id).result.exit_code == 0
    assert alloc.stdout.text().split() == ["/app", "1000", "1000", "hello", "env", "appended"]
    destroy(plugin, config.id)
    destroy(plugin, config.id)


def test_stop_with_signal_and_escalation(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "trap '' TERM; echo ready; sleep 60"])
    start(plugin, config)
    time.sleep(0.5)
    began = time.monotonic()
    plugin.driver.StopTask(
        driver_pb2.StopTaskRequest(task_id=config.id, timeout=Duration(seconds=1), signal="SIGTERM"), timeout=30
    )
    assert 0.9 < time.monotonic() - began < 15
    result = wait(plugin, config.id).result
    assert (result.exit_code, result.signal) == (128 + signal.SIGKILL, signal.SIGKILL)
    destroy(plugin, config.id)


def test_signal_reaches_the_task(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(
        alloc, image, command="/bin/sh", args=["-c", "trap 'echo got usr1; exit 7' USR1; while :; do sleep 0.1; done"]
    )
    start(plugin, config)
    time.sleep(0.5)
    plugin.driver.SignalTask(driver_pb2.SignalTaskRequest(task_id=config.id, signal="SIGUSR1"), timeout=10)
    assert wait(plugin, config.id).result.exit_code == 7
    assert alloc.stdout.text() == "got usr1\n"
    with pytest.raises(grpc.RpcError) as info:
        plugin.driver.SignalTask(driver_pb2.SignalTaskRequest(task_id=config.id, signal="SIGNOPE"), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    destroy(plugin, config.id)


def test_stats_stream(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "while :; do :; done"])
    start(plugin, config)
    stream = plugin.driver.TaskStats(
        driver_pb2.TaskStatsRequest(task_id=config.id, collection_interval=Duration(nanos=300_000_000))
    )
    samples = [next(stream) for _ in range(3)]
    stream.cancel()
    stamps = [s.stats.timestamp.ToNanoseconds() for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    last = samples[-1].stats.agg_resource_usage
    assert last.cpu.percent > 20, "a busy loop should use a good part of a core"
    assert last.cpu.total_ticks > 0 and last.memory.rss + last.memory.usage > 0
    # No kill_signal from Nomad: the image's StopSignal (SIGINT in the test image) is sent.
    plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=config.id, timeout=Duration(seconds=5)), timeout=30)
    result = wait(plugin, config.id).result
    assert (result.exit_code, result.signal) == (128 + signal.SIGINT, signal.SIGINT)
    destroy(plugin, config.id)


def test_bad_inputs_leave_nothing(plugin: Plugin, image: str, tmp_path: Path) -> None:
    cases = [
        ({"command": "/no/such/program"}, "no/such/program"),
        ({"user": "nosuchuser"}, None),
        ({"privileged": True}, "allow_privileged"),
        ({"cap_add": ["SYS_ADMIN"]}, "cap_add"),
        ({"net": ["nosuchnet"]}, 'network "nosuchnet" is not known'),
    ]
    for values, needle in cases:
        alloc = make_alloc(tmp_path)
        user = values.pop("user", None)
        config = task_config(alloc, image, **values)
        if user:
            config.user = str(user)
            needle = 'user "nosuchuser" does not exist'
        with pytest.raises(grpc.RpcError) as info:
            start(plugin, config)
        assert needle in info.value.details(), info.value.details()


def test_unknown_image_is_a_clear_error(plugin: Plugin, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    with pytest.raises(grpc.RpcError) as info:
        start(plugin, task_config(alloc, f"oci:{tmp_path}/missing:v1"))
    assert "missing" in info.value.details()


def test_oom_kill_is_reported_and_announced(plugin: Plugin, image: str, tmp_path: Path) -> None:
    events = plugin.driver.TaskEvents(driver_pb2.TaskEventsRequest())
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "x=aaaaaaaa; while :; do x=$x$x; done"])
    config.resources.linux_resources.memory_limit_bytes = 16 << 20
    start(plugin, config)
    result = wait(plugin, config.id).result
    assert result.oom_killed and result.signal == signal.SIGKILL
    event = next(e for e in events if "OOM" in e.message)  # events for our alloc and task
    events.cancel()
    assert event.alloc_id == alloc.id and event.task_name == "web" and event.timestamp.seconds > 0
    destroy(plugin, config.id)
