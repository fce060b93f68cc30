"""Fan-out of driver task events to every open TaskEvents stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from nomad_rkt_driver.types import TaskEvent

SUBSCRIBER_BACKLOG: Final = 1024


class EventBus:
    """Each subscriber gets every event published after it subscribed, in order."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[TaskEvent]] = set()

    def publish(self, event: TaskEvent) -> None:
        """Queue ``event`` for every subscriber; a subscriber that stopped reading drops its oldest."""
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[TaskEvent]:
        """Yield events forever (until the caller stops iterating or is cancelled)."""
        queue: asyncio.Queue[TaskEvent] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
