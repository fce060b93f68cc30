"""Turning cumulative CPU counters into the rates Nomad shows (protocol.md §5).

Nomad's executor reports CPU as percent of one core over the last interval (may exceed 100),
user and system likewise, and ``total_ticks`` as MHz consumed: percent / 100 * (total compute MHz
/ number of cores) from the client topology. The first sample of a task has nothing to compare
with and reports 0, as Nomad's own executor does.
"""

from __future__ import annotations

from dataclasses import dataclass

from nomad_rkt_driver.types import CpuUsage, Topology

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
