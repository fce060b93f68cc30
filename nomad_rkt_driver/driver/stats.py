"""Turning cumulative CPU counters into the rates Nomad shows (protocol.md §5).

Nomad's executor reports CPU as percent of one core over the last interval (may exceed 100),
user and system likewise, and ``total_ticks`` as MHz consumed: percent / 100 * (total compute MHz
/ number of cores) from the client topology. The first sample of a task has nothing to compare
with and reports 0, as Nomad's own executor does.
"""

from __future__ import annotations

from dataclasses import dataclass

from nomad_rkt_driver.driver.sampler import PodSample
from nomad_rkt_driver.runtime.cgroups import CLOCK_TICKS_PER_S
from nomad_rkt_driver.types import CpuUsage, MemoryUsage, ResourceUsage, TaskStats, Topology

CPU_MEASURED = ("System Mode", "User Mode", "Percent", "Total Ticks", "Throttled Periods", "Throttled Time")
CPU_MEASURED_NO_THROTTLE = ("System Mode", "User Mode", "Percent", "Total Ticks")


@dataclass(frozen=True)
class CpuCounters:
    """Cumulative CPU time of a cgroup or process at ``at`` (monotonic seconds)."""

    at: float
    user_ns: int
    system_ns: int
    total_ns: int
    throttled_periods: int | None = None  # None where the kernel does not say
    throttled_time_ns: int | None = None


def cpu_usage(previous: CpuCounters | None, current: CpuCounters, topology: Topology) -> CpuUsage:
    """CPU use between two samples of the same counters."""
    throttled = current.throttled_periods is not None and current.throttled_time_ns is not None
    measured = CPU_MEASURED if throttled else CPU_MEASURED_NO_THROTTLE
    periods = current.throttled_periods or 0
    throttled_ns = current.throttled_time_ns or 0
    if previous is None or current.at <= previous.at:
        return CpuUsage(throttled_periods=periods, throttled_time_ns=throttled_ns, measured=measured)
    wall_ns = (current.at - previous.at) * 1e9

    def rate(now: int, before: int) -> float:
        return max(0, now - before) / wall_ns * 100.0

    percent = rate(current.total_ns, previous.total_ns)
    return CpuUsage(
        system_mode=rate(current.system_ns, previous.system_ns),
        user_mode=rate(current.user_ns, previous.user_ns),
        percent=percent,
        total_ticks=percent / 100.0 * topology.mhz_per_core,
        throttled_periods=periods,
        throttled_time_ns=throttled_ns,
        measured=measured,
    )


PID_MEMORY_MEASURED = ("RSS",)
NS_PER_TICK = 1_000_000_000 // CLOCK_TICKS_PER_S


class TaskUsage:
    """One TaskStats stream's state: turns pod samples into Nomad's TaskStats.

    The aggregate is the pod's cgroup; ``by_pid`` has every process in it (as Nomad's exec driver
    reports them; the docker driver leaves it empty): user/system/percent from the process's own
    CPU ticks (10 ms granularity) and its RSS. Rates compare with the previous sample of the same
    pid; a new pid reports 0 % first, as a new task does.
    """

    def __init__(self, task_id: str, topology: Topology) -> None:
        self.task_id = task_id
        self.topology = topology
        self._previous: CpuCounters | None = None
        self._pids: dict[int, CpuCounters] = {}

    def next(self, sample: PodSample, now: float) -> TaskStats:
        """The TaskStats for ``sample`` (taken at monotonic ``sample.at``); ``now`` is its wall-clock time."""
        cpu = sample.cgroup.cpu
        counters = CpuCounters(
            sample.at, cpu.user_ns, cpu.system_ns, cpu.total_ns, cpu.throttled_periods, cpu.throttled_time_ns
        )
        total = ResourceUsage(cpu=cpu_usage(self._previous, counters, self.topology), memory=sample.cgroup.memory)
        self._previous = counters
        by_pid: dict[int, ResourceUsage] = {}
        pids: dict[int, CpuCounters] = {}
        for pid, proc in sample.processes.items():
            user, system = proc.user_ticks * NS_PER_TICK, proc.system_ticks * NS_PER_TICK
            pids[pid] = current = CpuCounters(sample.at, user, system, user + system)
            by_pid[pid] = ResourceUsage(
                cpu=cpu_usage(self._pids.get(pid), current, self.topology),
                memory=MemoryUsage(rss=proc.rss_bytes, measured=PID_MEMORY_MEASURED),
            )
        self._pids = pids
        return TaskStats(self.task_id, now, total, by_pid)
