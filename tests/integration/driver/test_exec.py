"""Exec in a running pod through the plugin: ExecTask and ExecTaskStreaming (tty and not)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.protocol.plugin import Plugin

from .conftest import make_alloc, task_config

Request = driver_pb2.ExecTaskStreamingRequest
IO = driver_pb2.ExecTaskStreamingIOOperation


@pytest.fixture
def running(plugin: Plugin, image: str, tmp_path: Path) -> Iterator[str]:
    config = task_config(make_alloc(tmp_path), image, command="/bin/sh", args=["-c", "while :; do sleep 0.2; done"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60)
    try:
        yield config.id
    finally:
        plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=config.id, signal="SIGKILL"), timeout=60)
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)


def test_exec_task_runs_as_the_task_with_its_env(plugin: Plugin, running: str) -> None:
    script = "echo out; echo err >&2; pwd; id -u; echo $GREETING; exit 5"
    response = plugin.driver.ExecTask(
        driver_pb2.ExecTaskRequest(task_id=running, command=["/bin/sh", "-c", script]), timeout=60
    )
    assert response.result.exit_code == 5
    assert response.stdout.decode().split() == ["out", "/app", "1000", "hello"]
    assert response.stderr == b"err\n"


def test_exec_task_timeout(plugin: Plugin, running: str) -> None:
    began = time.monotonic()
    response = plugin.driver.ExecTask(
        driver_pb2.ExecTaskRequest(task_id=running, command=["/bin/sleep", "30"], timeout=Duration(seconds=1)),
        timeout=60,
    )
    assert response.result.exit_code == 124 and time.monotonic() - began < 15


def test_exec_task_unknown_command_and_task(plugin: Plugin, running: str) -> None:
    response = plugin.driver.ExecTask(driver_pb2.ExecTaskRequest(task_id=running, command=["/no/such"]), timeout=60)
    assert response.result.exit_code != 0 and response.stderr
    with pytest.raises(grpc.RpcError) as info:
        plugin.driver.ExecTask(driver_pb2.ExecTaskRequest(task_id="x/y/z", command=["true"]), timeout=10)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def stream(
    plugin: Plugin, setup: Request.Setup, inputs: queue.Queue[Request | None]
) -> Iterator[driver_pb2.ExecTaskStreamingResponse]:
    def requests() -> Iterator[Request]:
        yield Request(setup=setup)
        while (item := inputs.get(timeout=30)) is not None:
            yield item

    responses: Iterator[driver_pb2.ExecTaskStreamingResponse] = plugin.driver.ExecTaskStreaming(requests(), timeout=60)
    return responses


def collect(responses: Iterator[driver_pb2.ExecTaskStreamingResponse]) -> tuple[bytes, bytes, int, int]:
    out, err, closes, code = b"", b"", 0, -1
    for response in responses:
        out += response.stdout.data
        err += response.stderr.data
        closes += int(response.stdout.close) + int(response.stderr.close)
        if response.exited:
            code = response.result.exit_code
    return out, err, closes, code


def test_streaming_without_a_terminal(plugin: Plugin, running: str) -> None:
    inputs: queue.Queue[Request | None] = queue.Queue()
    setup = Request.Setup(task_id=running, command=["/bin/sh", "-c", "cat; echo done >&2; exit 2"])
    responses = stream(plugin, setup, inputs)
    inputs.put(Request())  # a heartbeat
    inputs.put(Request(stdin=IO(data=b"hello\n")))
    inputs.put(Request(stdin=IO(close=True)))
    out, err, closes, code = collect(responses)
    inputs.put(None)
    assert (out, err, closes, code) == (b"hello\n", b"done\n", 2, 2)


def test_streaming_with_a_terminal(plugin: Plugin, running: str) -> None:
    inputs: queue.Queue[Request | None] = queue.Queue()
    setup = Request.Setup(task_id=running, command=["/bin/sh"], tty=True)
    responses = stream(plugin, setup, inputs)
    inputs.put(Request(tty_size=Request.TerminalSize(height=24, width=80)))
    inputs.put(Request(stdin=IO(data=b"test -t 0 && echo is-a-tty; exit 3\n")))
    out, _, _, code = collect(responses)
    inputs.put(None)
    assert b"is-a-tty" in out and code == 3
