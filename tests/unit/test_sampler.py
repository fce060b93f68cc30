import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from nomad_rkt_driver.driver.sampler import StatsSampler
from nomad_rkt_driver.runtime.cgroups import CgroupStats, CpuStats
from nomad_rkt_driver.types import MemoryUsage


def test_one_read_per_tick_for_all_streams_and_errors_go_to_their_stream() -> None:
    calls: list[str] = []

    def read(path: str) -> CgroupStats:
        calls.append(path)
        if path == "/gone":
            raise FileNotFoundError(path)
        return CgroupStats(CpuStats(total_ns=len(calls)), MemoryUsage(rss=1))

    async def scenario() -> tuple[int, int]:
        with ThreadPoolExecutor(2) as pool:
            sampler = StatsSampler(pool, read)

            async def take(path: str, n: int) -> int:
                got = 0
                async for _ in sampler.samples(path, 0.05):
                    got += 1
                    if got == n:
                        break
                return got

            results = await asyncio.gather(take("/a", 3), take("/b", 3))
            with pytest.raises(FileNotFoundError):
                await take("/gone", 1)
            return results[0], results[1]

    assert asyncio.run(scenario()) == (3, 3)
    assert calls.count("/a") >= 3 and calls.count("/b") >= 3
