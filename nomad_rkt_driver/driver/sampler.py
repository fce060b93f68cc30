"""One cgroup sampling loop per collection interval, shared by every TaskStats stream.

Nomad keeps a TaskStats stream open per running task, each asking for a sample every second.
Reading every subscribed cgroup in one worker-thread call per tick, instead of one call per
stream, keeps the plugin's CPU low with many tasks (bench/pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from nomad_rkt_driver.runtime.cgroups import CgroupStats
from nomad_rkt_driver.runtime.cgroups import stats as cgroup_stats

Subscriber = tuple[str, "asyncio.Queue[CgroupStats | BaseException]"]


class StatsSampler:
    def __init__(self, executor: Executor, read: Callable[[str], CgroupStats] = cgroup_stats) -> None:
        self._executor = executor
        self._read = read
        self._ids = itertools.count()
        self._subscribers: dict[float, dict[int, Subscriber]] = {}
        self._loops: dict[float, asyncio.Task[None]] = {}

    async def samples(self, cgroups_path: str, interval_s: float) -> AsyncIterator[CgroupStats]:
        """Samples of one cgroup every ``interval_s`` (the first at once) until the caller stops."""
        queue: asyncio.Queue[CgroupStats | BaseException] = asyncio.Queue(maxsize=1)
        key = next(self._ids)
        self._subscribers.setdefault(interval_s, {})[key] = (cgroups_path, queue)
        loop = self._loops.get(interval_s)
        if loop is None or loop.done():
            self._loops[interval_s] = asyncio.create_task(self._tick(interval_s))
        else:
            self._deliver(interval_s, {key: await self._one(cgroups_path)})  # the first sample at once
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._subscribers.get(interval_s, {}).pop(key, None)

    async def _one(self, path: str) -> CgroupStats | BaseException:
        loop = asyncio.get_running_loop()
        return (await loop.run_in_executor(self._executor, self._read_all, [path]))[0]

    def _read_all(self, paths: list[str]) -> list[CgroupStats | BaseException]:
        results: list[CgroupStats | BaseException] = []
        for path in paths:
            try:
                results.append(self._read(path))
            except Exception as exc:  # the stream that owns this path reports it
                results.append(exc)
        return results

    def _deliver(self, interval_s: float, results: dict[int, CgroupStats | BaseException]) -> None:
        subscribers = self._subscribers.get(interval_s, {})
        for key, result in results.items():
            entry = subscribers.get(key)
            if entry is None:
                continue
            queue = entry[1]
            if queue.full():  # a slow reader gets the newest sample, not a backlog
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(result)

    async def _tick(self, interval_s: float) -> None:
        loop = asyncio.get_running_loop()
        while self._subscribers.get(interval_s):
            current = dict(self._subscribers[interval_s])
            keys = list(current)
            results = await loop.run_in_executor(self._executor, self._read_all, [current[k][0] for k in keys])
            self._deliver(interval_s, dict(zip(keys, results, strict=True)))
            await asyncio.sleep(interval_s)
        self._subscribers.pop(interval_s, None)
