"""One poller for every WaitTask: pods' exits are durable files, so a single loop checks all
waited pods a few times a second instead of a thread or a timer per waiter."""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import Executor
from typing import Final

from nomad_rkt_driver.runtime.pods import PodLost, Pods
from nomad_rkt_driver.types import ExitResult

POLL_INTERVAL_S: Final = 0.25
FULL_CHECK_EVERY: Final = 8  # ticks between full status checks (a monitor that died without an exit)
Key = tuple[int, str]


class ExitWatcher:
    def __init__(self, executor: Executor, interval_s: float = POLL_INTERVAL_S) -> None:
        self._executor = executor
        self._interval_s = interval_s
        self._waiting: dict[Key, tuple[Pods, asyncio.Future[ExitResult]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._exit_files: dict[Key, str] = {}
        self._ticks = 0

    async def wait(self, pods: Pods, pod_id: str) -> ExitResult:
        """The pod's exit; many callers may wait for one pod. Raises PodLost / NotFound."""
        key = (id(pods), pod_id)
        entry = self._waiting.get(key)
        if entry is None:
            entry = (pods, asyncio.get_running_loop().create_future())
            self._waiting[key] = entry
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return await asyncio.shield(entry[1])

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            keys = list(self._waiting)
            outcomes = await loop.run_in_executor(self._executor, self._check, [(self._waiting[k][0], k) for k in keys])
            for key, outcome in outcomes.items():
                _, future = self._waiting.pop(key)
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            await asyncio.sleep(self._interval_s)

    def _check(self, entries: list[tuple[Pods, Key]]) -> dict[Key, ExitResult | BaseException]:
        done: dict[Key, ExitResult | BaseException] = {}
        self._ticks += 1
        full = self._ticks % FULL_CHECK_EVERY == 0
        for pods, key in entries:
            # Cheap path: a pod has exited once conmon wrote its exit file (or a result was recorded);
            # the full status, which also notices a monitor that died silently, runs every few ticks.
            try:
                exit_file = self._exit_files.get(key)
                if exit_file is None:
                    exit_file = self._exit_files[key] = pods.load(key[1]).exit_file
                if not full and not os.path.exists(exit_file) and not (pods.pod_dir(key[1]) / "result.json").exists():
                    continue
                status = pods.status(key[1])
            except Exception as exc:  # NotFound, CorruptRecord: the waiters learn why
                done[key] = exc
                continue
            if status.state == "exited" and status.result is not None:
                done[key] = status.result
            elif status.state == "gone":
                done[key] = PodLost(f"pod {key[1]}: its monitor is gone and recorded no exit")
        for key in done:
            self._exit_files.pop(key, None)
        return done

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
