import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from nomad_rkt_driver.driver.sampler import StatsSampler
from nomad_rkt_driver.runtime.cgroups import CgroupStats, CpuStats
from nomad_rkt_driver.types import MemoryUsage


class FakeReader:
    """A cgroup whose only process is this test process (so /proc/PID/stat is real)."""

    def __init__(self, path: str, calls: list[str], closed: list[str]) -> None:
        self.path, self.calls, self.closed = path, calls, closed

    def sample(self) -> CgroupStats:
        self.calls.append(self.path)
        if self.path == "/gone":
            raise FileNotFoundError(self.path)
        return CgroupStats(CpuStats(total_ns=len(self.calls)), MemoryUsage(rss=1), (os.getpid(), 999_999_999))

    def close(self) -> None:
        self.closed.append(self.path)


def test_one_read_per_tick_for_all_streams_errors_go_to_their_stream_and_readers_close() -> None:
    calls: list[str] = []
    closed: list[str] = []

    async def scenario() -> tuple[int, int]:
        with ThreadPoolExecutor(2) as pool:
            sampler = StatsSampler(pool, lambda path: FakeReader(path, calls, closed))

            async def take(path: str, n: int) -> int:
                got = 0
                async for sample in sampler.samples(path, 0.05):
                    # the live process is sampled, the pid that does not exist is left out
                    assert list(sample.processes) == [os.getpid()]
                    assert sample.processes[os.getpid()].rss_bytes > 0
                    got += 1
                    if got == n:
                        break
                return got

            results = await asyncio.gather(take("/a", 3), take("/b", 3))
            with pytest.raises(FileNotFoundError):
                await take("/gone", 1)
            return results[0], results[1]

    assert asyncio.run(scenario()) == (3, 3)
    assert calls.count("/a") == 3 and calls.count("/b") == 3
    assert sorted(closed) == ["/a", "/b", "/gone"]
