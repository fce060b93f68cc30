import pytest

from nomad_rkt_driver.driver.sampler import PodSample
from nomad_rkt_driver.driver.stats import CpuCounters, TaskUsage, cpu_usage
from nomad_rkt_driver.procs import ProcessUsage
from nomad_rkt_driver.protocol import convert
from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime.cgroups import CLOCK_TICKS_PER_S, CgroupStats, CpuStats
from nomad_rkt_driver.types import Core, MemoryUsage, ResourceUsage, TaskStats, Topology

TOPOLOGY = Topology(cores=(Core(0, 2000, 0, 0), Core(1, 2000, 0, 0)))  # 4000 MHz over 2 cores


def test_first_sample_reports_zero_rates() -> None:
    usage = cpu_usage(None, CpuCounters(at=10.0, user_ns=5, system_ns=5, total_ns=10), TOPOLOGY)
    assert usage.percent == 0 and usage.total_ticks == 0
    assert "Throttled Periods" not in usage.measured


def test_rates_are_percent_of_one_core_and_ticks_are_mhz() -> None:
    before = CpuCounters(at=100.0, user_ns=0, system_ns=0, total_ns=0, throttled_periods=1, throttled_time_ns=5)
    # 1.5 s of CPU in 1 s of wall time: 150 % of one core, 1.5 * 2000 MHz.
    after = CpuCounters(
        at=101.0,
        user_ns=1_000_000_000,
        system_ns=500_000_000,
        total_ns=1_500_000_000,
        throttled_periods=3,
        throttled_time_ns=7_000,
    )
    usage = cpu_usage(before, after, TOPOLOGY)
    assert usage.percent == pytest.approx(150.0)
    assert usage.user_mode == pytest.approx(100.0) and usage.system_mode == pytest.approx(50.0)
    assert usage.total_ticks == pytest.approx(3000.0)
    assert usage.throttled_periods == 3 and usage.throttled_time_ns == 7_000
    assert "Throttled Time" in usage.measured


def test_counter_reset_never_goes_negative() -> None:
    before = CpuCounters(at=1.0, user_ns=10, system_ns=10, total_ns=20)
    after = CpuCounters(at=2.0, user_ns=0, system_ns=0, total_ns=0)
    assert cpu_usage(before, after, TOPOLOGY).percent == 0


def test_stats_proto_always_has_what_nomad_dereferences() -> None:
    sample = TaskStats(
        "a/t/1",
        1700000000.5,
        ResourceUsage(
            cpu=cpu_usage(None, CpuCounters(1.0, 0, 0, 0), TOPOLOGY),
            memory=MemoryUsage(rss=1024, usage=4096, measured=("RSS", "Usage")),
        ),
        {42: ResourceUsage()},
    )
    msg = convert.stats_to_proto(sample)
    assert msg.HasField("stats") and msg.stats.HasField("agg_resource_usage") and msg.stats.HasField("timestamp")
    assert msg.stats.agg_resource_usage.memory.rss == 1024
    assert list(msg.stats.agg_resource_usage.memory.measured_fields) == [
        driver_pb2.MemoryUsage.RSS,
        driver_pb2.MemoryUsage.USAGE,
    ]
    assert driver_pb2.CPUUsage.TOTAL_TICKS in msg.stats.agg_resource_usage.cpu.measured_fields
    assert set(msg.stats.resource_usage_by_pid) == {"42"}


def test_task_usage_reports_each_process_with_its_own_rates() -> None:
    hz = CLOCK_TICKS_PER_S
    usage = TaskUsage("a/t/1", TOPOLOGY)
    cgroup = CgroupStats(CpuStats(total_ns=0), MemoryUsage(rss=4096, measured=("RSS",)))
    first = usage.next(PodSample(10.0, cgroup, {7: ProcessUsage(0, 0, 8192), 8: ProcessUsage(5, 5, 4096)}), 1.0)
    assert set(first.by_pid) == {7, 8} and first.by_pid[7].cpu.percent == 0  # nothing to compare with yet
    assert first.by_pid[7].memory.rss == 8192 and first.by_pid[7].memory.measured == ("RSS",)
    # 1 s later: pid 7 used half a core of user time, pid 8 is gone, pid 9 is new
    later = CgroupStats(CpuStats(total_ns=500_000_000, user_ns=500_000_000), MemoryUsage(rss=4096))
    second = usage.next(PodSample(11.0, later, {7: ProcessUsage(hz // 2, 0, 8192), 9: ProcessUsage(hz, 0, 1)}), 2.0)
    assert set(second.by_pid) == {7, 9}
    assert second.by_pid[7].cpu.percent == pytest.approx(50.0) and second.by_pid[7].cpu.user_mode == pytest.approx(50)
    assert second.by_pid[7].cpu.total_ticks == pytest.approx(1000.0)  # half of a 2000 MHz core
    assert second.by_pid[9].cpu.percent == 0
    assert second.total.cpu.percent == pytest.approx(50.0) and second.timestamp == 2.0
    assert convert.stats_to_proto(second).stats.resource_usage_by_pid["7"].memory.rss == 8192
