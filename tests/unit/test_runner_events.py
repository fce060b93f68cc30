"""The runner's rendering of the plugin's task events: readable lines, throttled progress, one allocation."""

from __future__ import annotations

from nomad_rkt_driver.cli.events import EventPrinter
from nomad_rkt_driver.protocol.gen import driver_pb2


def progress(done_bytes: int, layers_done: int, *, done: bool = False, alloc: str = "a1") -> driver_pb2.DriverTaskEvent:
    return driver_pb2.DriverTaskEvent(
        task_id="a1/web/x",
        alloc_id=alloc,
        task_name="web",
        message="Downloading image: ...",
        annotations={
            "image": "127.0.0.1:5000/team/web:v1",
            "percent": "0",
            "layers_done": str(layers_done),
            "layers_total": "4",
            "bytes_done": str(done_bytes),
            "bytes_total": "60100000",
            "rate_bytes_per_s": "25000000",
            "done": "true" if done else "false",
        },
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_readable_and_throttled_but_first_and_last_always_show() -> None:
    lines: list[str] = []
    clock = Clock()
    printer = EventPrinter("a1", lines.append, every_s=1.0, clock=clock)
    printer.show(progress(0, 0))
    for step in range(1, 4):  # four a second from the plugin: only one more line per second
        clock.now += 0.25
        printer.show(progress(step * 1_000_000, 1))
    clock.now += 0.25
    printer.show(progress(12_300_000, 2))
    clock.now += 0.1
    printer.show(progress(60_100_000, 4, done=True))
    assert lines == [
        "web: pulling 127.0.0.1:5000/team/web:v1: 0/4 layers, 0.0/60.1 MB, 25.0 MB/s",
        "web: pulling 127.0.0.1:5000/team/web:v1: 2/4 layers, 12.3/60.1 MB, 25.0 MB/s",
        "web: pulled 127.0.0.1:5000/team/web:v1: 4 layers, 60.1 MB, 25.0 MB/s",
    ]
    clock.now += 0.1
    printer.show(progress(0, 0))  # a later pull (after a restart) shows its start again
    assert len(lines) == 4


def test_other_events_show_their_message_and_other_allocations_are_ignored() -> None:
    lines: list[str] = []
    printer = EventPrinter("a1", lines.append)
    printer.show(driver_pb2.DriverTaskEvent(alloc_id="a1", task_id="a1/web/x", task_name="web", message="OOM killed"))
    printer.show(progress(0, 0, alloc="someone-else"))
    assert lines == ["web: OOM killed"]
