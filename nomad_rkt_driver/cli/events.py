"""The plugin's task events (image pull progress, OOM kills, warnings) as terminal lines for the runner.

One line per event, never a carriage return, so task log lines printed meanwhile stay whole.
Pull progress arrives about four times a second from the plugin; a task shows at most one
progress line per ``every_s`` seconds, plus the first and the last (``pulled``) of each pull.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from nomad_rkt_driver.protocol.gen import driver_pb2

PROGRESS_EVERY_S: Final = 1.0
MB: Final = 1e6


def _number(annotations: Any, key: str) -> float | None:
    try:
        return float(annotations[key])
    except (KeyError, ValueError):
        return None


def progress_line(task: str, annotations: Any) -> str | None:
    """``web: pulling IMAGE: 2/4 layers, 12.3/60.1 MB, 25.0 MB/s`` (None when not a progress event)."""
    numbers = [_number(annotations, k) for k in ("layers_done", "layers_total", "bytes_done", "bytes_total")]
    if any(n is None for n in numbers):
        return None
    layers_done, layers_total, bytes_done, bytes_total = (int(n or 0) for n in numbers)
    rate = _number(annotations, "rate_bytes_per_s") or 0.0
    image = annotations.get("image", "image")
    if annotations.get("done") == "true":
        return f"{task}: pulled {image}: {layers_total} layers, {bytes_total / MB:.1f} MB, {rate / MB:.1f} MB/s"
    return (
        f"{task}: pulling {image}: {layers_done}/{layers_total} layers, "
        f"{bytes_done / MB:.1f}/{bytes_total / MB:.1f} MB, {rate / MB:.1f} MB/s"
    )


@dataclass
class EventPrinter:
    """Turns DriverTaskEvents of one allocation into lines for ``say``, throttling pull progress."""

    alloc_id: str
    say: Callable[[str], None]
    every_s: float = PROGRESS_EVERY_S
    clock: Callable[[], float] = time.monotonic
    _last_progress: dict[str, float] = field(default_factory=dict)

    def show(self, event: driver_pb2.DriverTaskEvent) -> None:
        if event.alloc_id != self.alloc_id:
            return  # another allocation's (e.g. a Nomad agent sharing the plugin's data dir)
        task = event.task_name or event.task_id
        line = progress_line(task, event.annotations)
        if line is None:
            self.say(f"{task}: {event.message}")
            return
        now = self.clock()
        last = self._last_progress.get(event.task_id)
        first = last is None
        done = event.annotations.get("done") == "true"
        if first or done or now - (last or 0.0) >= self.every_s:
            self.say(line)
            self._last_progress[event.task_id] = now
        if done:
            self._last_progress.pop(event.task_id, None)  # a later pull (a restart) starts afresh


class EventWatcher:
    """Reads the plugin's TaskEvents stream in a thread until :meth:`stop`."""

    def __init__(self, stream: Iterable[driver_pb2.DriverTaskEvent], printer: EventPrinter) -> None:
        self._stream = stream
        self._printer = printer
        self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                self._printer.show(event)
        except grpc.RpcError:
            pass  # cancelled by stop(), or the plugin went away: the runner reports that itself

    def stop(self) -> None:
        cancel = getattr(self._stream, "cancel", None)
        if cancel is not None:
            cancel()
        self._thread.join(timeout=5)
