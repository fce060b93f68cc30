"""One cgroup sampling loop per collection interval, shared by every TaskStats stream.

Nomad keeps a TaskStats stream open per running task, each asking for a sample every second.
Reading every subscribed cgroup in one worker-thread call per tick, instead of one call per
stream, keeps the plugin's CPU low with many tasks (bench/pods). Each stream has its own
CgroupReader (file descriptors kept open between samples) and gets its pod's processes too:
user/system CPU ticks and RSS from one read of /proc/PID/stat each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from nomad_rkt_driver import procs
from nomad_rkt_driver.runtime.cgroups import CgroupReader, CgroupStats


class Reader(Protocol):
    def sample(self) -> CgroupStats: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PodSample:
    """A pod's cgroup counters and, per process in it, (user ticks, system ticks, RSS bytes)."""

    at: float  # monotonic seconds, when read
    cgroup: CgroupStats
    processes: dict[int, procs.ProcessUsage] = field(default_factory=dict)


Subscriber = tuple[Reader, "asyncio.Queue[PodSample | BaseException]"]


def read_pod(reader: Reader) -> PodSample:
    """One sample: the cgroup, then each of its processes (a process gone meanwhile is left out)."""
    cgroup = reader.sample()
    processes = {}
    for pid in cgroup.pids:
        usage = procs.usage(pid)
        if usage is not None:
            processes[pid] = usage
    return PodSample(time.monotonic(), cgroup, processes)


class StatsSampler:
    def __init__(self, executor: Executor, open_reader: Callable[[str], Reader] = CgroupReader) -> None:
        self._executor = executor
        self._open_reader = open_reader
        self._ids = itertools.count()
        self._subscribers: dict[float, dict[int, Subscriber]] = {}
        self._loops: dict[float, asyncio.Task[None]] = {}

    async def samples(self, cgroups_path: str, interval_s: float) -> AsyncIterator[PodSample]:
        """Samples of one pod's cgroup every ``interval_s`` (the first at once) until the caller stops."""
        reader = self._open_reader(cgroups_path)
        try:
            first = await self._one(reader)
            if isinstance(first, BaseException):
                raise first
            yield first
            queue: asyncio.Queue[PodSample | BaseException] = asyncio.Queue(maxsize=1)
            key = next(self._ids)
            self._subscribers.setdefault(interval_s, {})[key] = (reader, queue)
            loop = self._loops.get(interval_s)
            if loop is None or loop.done():
                self._loops[interval_s] = asyncio.create_task(self._tick(interval_s))
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                self._subscribers.get(interval_s, {}).pop(key, None)
        finally:
            reader.close()  # thread-safe: a tick still reading it finishes first

    async def _one(self, reader: Reader) -> PodSample | BaseException:
        loop = asyncio.get_running_loop()
        return (await loop.run_in_executor(self._executor, _read_all, [reader]))[0]

    def _deliver(self, interval_s: float, results: dict[int, PodSample | BaseException]) -> None:
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
        next_at = loop.time() + interval_s  # the first sample went out at subscription
        while self._subscribers.get(interval_s):
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval_s, loop.time())  # behind (an overloaded host): no burst
            current = dict(self._subscribers.get(interval_s, {}))
            if not current:
                break
            keys = list(current)
            results = await loop.run_in_executor(self._executor, _read_all, [current[k][0] for k in keys])
            self._deliver(interval_s, dict(zip(keys, results, strict=True)))
        self._subscribers.pop(interval_s, None)


def _read_all(readers: list[Reader]) -> list[PodSample | BaseException]:
    results: list[PodSample | BaseException] = []
    for reader in readers:
        try:
            results.append(read_pod(reader))
        except Exception as exc:  # the stream that owns this reader reports it
            results.append(exc)
    return results
