"""The driver_state bytes Nomad keeps in a TaskHandle, and the in-memory task table.

driver_state is opaque to Nomad and survives agent restarts (the task's msgpack config does not),
so it carries everything RecoverTask needs. It is msgpack ``{"v": VERSION, "state": {...}}``; an
unknown version or corrupt bytes are refused with a message saying so, and Nomad then restarts
the task.
"""

from __future__ import annotations

import threading
from typing import Any, Final, Generic, TypeVar

import msgpack

from nomad_rkt_driver.errors import InvalidArgument

STATE_VERSION: Final = 1
T = TypeVar("T")


def encode_state(state: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb({"v": STATE_VERSION, "state": state}, use_bin_type=True)
    return packed


def decode_state(data: bytes, task_id: str) -> dict[str, Any]:
    """The state dict from a handle; InvalidArgument when it is not ours or not readable."""
    if not data:
        raise InvalidArgument(f"task {task_id}: the handle carries no driver state; it cannot be recovered")
    try:
        envelope = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise InvalidArgument(f"task {task_id}: the handle's driver state is corrupt ({type(exc).__name__})") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("state"), dict):
        raise InvalidArgument(f"task {task_id}: the handle's driver state is not the rkt driver's")
    version = envelope.get("v")
    if version != STATE_VERSION:
        raise InvalidArgument(
            f"task {task_id}: driver state version {version!r} is not supported by this plugin "
            f"(it reads version {STATE_VERSION})"
        )
    state: dict[str, Any] = envelope["state"]
    return state


class TaskStore(Generic[T]):
    """A locked map from task id to the task's runtime object; no logic of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, T] = {}

    def get(self, task_id: str) -> T | None:
        with self._lock:
            return self._items.get(task_id)

    def set(self, task_id: str, item: T) -> None:
        with self._lock:
            self._items[task_id] = item

    def delete(self, task_id: str) -> T | None:
        with self._lock:
            return self._items.pop(task_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._items)
