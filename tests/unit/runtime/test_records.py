"""Pod ids, exit results and the durable record."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.runtime.records import (
    CorruptRecord,
    PodRecord,
    check_pod_id,
    exit_result_from_status,
    pod_id_for,
    result_from_json,
    result_to_json,
    write_once,
)
from nomad_rkt_driver.types import ExitResult

TASK_ID = "2bd1b6a3-1b7c-4c49-9c5e-3f2f7d1e6a10/web server/8f3a9c21"


def test_pod_id_for_is_safe_readable_and_stable() -> None:
    pod_id = pod_id_for(TASK_ID)
    assert check_pod_id(pod_id) == pod_id
    assert pod_id.startswith("2bd1b6a3-1b7c-4c49-9c5e-3f2f7d1e6a10-web-server-8f3a9c21-")
    assert pod_id_for(TASK_ID) == pod_id


def test_pod_id_for_never_collides_on_sanitised_names() -> None:
    assert pod_id_for("a/b c/x") != pod_id_for("a/b-c/x")


@pytest.mark.parametrize("task_id", ["", "/", "..", "-lead", "é" * 300, "a" * 500])
def test_pod_id_for_odd_inputs(task_id: str) -> None:
    assert check_pod_id(pod_id_for(task_id))


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "-x", "a" * 129, "sp ace"])
def test_check_pod_id_refuses_unsafe(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="not safe"):
        check_pod_id(bad)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(0, ExitResult(0)), (3, ExitResult(3)), (128, ExitResult(128)), (137, ExitResult(137, 9)),
     (143, ExitResult(143, 15)), (192, ExitResult(192, 64)), (255, ExitResult(255))],
)  # fmt: skip
def test_exit_result_from_conmon_status(status: int, expected: ExitResult) -> None:
    assert exit_result_from_status(status, oom_killed=False) == expected


def record() -> PodRecord:
    return PodRecord("p", "/b", "/cg/p", "/e/p", "/persist", 10, 100, 11, 101, 1.5, "/out", "/err")


def test_record_round_trip() -> None:
    assert PodRecord.from_json(record().to_json(), "x") == record()


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 1}', '{"version": 99}', "null"])
def test_corrupt_record_names_the_file(text: str) -> None:
    with pytest.raises(CorruptRecord, match=r"pods/p/pod\.json"):
        PodRecord.from_json(text, "pods/p/pod.json")


def test_result_round_trip_and_corruption() -> None:
    result = ExitResult(137, 9, True)
    assert result_from_json(result_to_json(result, 2.5), "r") == (result, 2.5)
    with pytest.raises(CorruptRecord):
        result_from_json('{"exit_code": "x", "bogus": 1}', "r")


def test_write_once_first_writer_wins_across_threads(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: wins.append(write_once(target, str(i)))) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
