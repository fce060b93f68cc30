"""A pod's cgroup: where it is, its CPU/memory counters (v1 and v2), OOM kills, removal.

Readers take the cgroup directories as arguments so they can be tested on any real cgroup.
Counters are returned in bytes and nanoseconds; the driver turns them into Nomad's units.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from nomad_rkt_driver.errors import FailedPrecondition
from nomad_rkt_driver.runtime.probe import CGROUP_ROOT
from nomad_rkt_driver.types import MemoryUsage

log = logging.getLogger(__name__)

V1_DIRS: Final = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio", "hugetlb",
                  "net_cls", "net_prio", "perf_event", "systemd")  # fmt: skip
NS_PER_US: Final = 1000
NS_PER_S: Final = 1_000_000_000
CLOCK_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuStats:
    """Cumulative CPU counters of a cgroup, in nanoseconds (throttled_periods is a count)."""

    total_ns: int = 0
    user_ns: int = 0
    system_ns: int = 0
    throttled_periods: int = 0
    throttled_time_ns: int = 0


# A cgroup's memory in bytes, with the Nomad field names this host really reports: the domain type.
MemoryStats = MemoryUsage


@dataclass(frozen=True)
class CgroupStats:
    """One sample of a pod's cgroup."""

    cpu: CpuStats
    memory: MemoryStats
    pids: tuple[int, ...] = field(default=())


def version(root: str = CGROUP_ROOT) -> int:
    """2 on a pure cgroup v2 host, else 1."""
    return 2 if os.path.isfile(os.path.join(root, "cgroup.controllers")) else 1


def v1_dir(controller: str, cgroups_path: str, root: str = CGROUP_ROOT) -> Path:
    """``/sys/fs/cgroup/<controller>/<cgroups_path>``."""
    return Path(root, controller, cgroups_path.lstrip("/"))


@dataclass(frozen=True)
class Placement:
    """Where a pod's cgroup goes.

    ``cgroups_path`` is the pod's own cgroup (runc creates it; destroy removes it). On cgroup v1,
    ``join_cpuset`` is the cpuset cgroup Nomad asked for: the pod's first process is moved into it
    before it starts, as Nomad's executor does, and it is never removed by the driver.
    """

    cgroups_path: str
    join_cpuset: Path | None = None


def _relative(nomad_cgroup: str, hierarchy: Path, root: str) -> str:
    """Nomad's cgroup path relative to ``hierarchy``: Nomad gives a filesystem path under the
    cgroup mount (``/sys/fs/cgroup/cpuset/nomad/share``, ``/sys/fs/cgroup/nomad.slice/...``);
    a path elsewhere is taken as relative to the hierarchy."""
    path = Path(nomad_cgroup)
    if ".." in path.parts:
        raise FailedPrecondition(f"Nomad's cgroup path {nomad_cgroup!r} must not contain '..'")
    if path.is_relative_to(hierarchy):
        return "/" + str(path.relative_to(hierarchy)).strip("/.")
    if path.is_relative_to(root):
        raise FailedPrecondition(f"Nomad's cgroup path {nomad_cgroup!r} is not in the {hierarchy} hierarchy")
    return "/" + nomad_cgroup.strip("/")


def placement(pod_id: str, own_parent: str, nomad_cgroup: str = "", root: str = CGROUP_ROOT) -> Placement:
    """The pod's cgroup: ``<own_parent>/<pod_id>`` unless Nomad names one (LinuxResources.cpuset_cgroup).

    cgroup v2: the pod's cgroup is a child of Nomad's (``<nomad cgroup>/<pod_id>``), so Nomad's
    limits, cpuset partition and kill apply, while the cgroup Nomad made is never removed by us.
    cgroup v1: Nomad's path names a cpuset cgroup only (often shared by all tasks, ``nomad/share``,
    where a child would pin its cores); the pod keeps its own cgroup for the other controllers and
    joins Nomad's cpuset cgroup directly. Raises FailedPrecondition when Nomad's cgroup is missing.
    """
    own = f"{'/' + own_parent.strip('/') if own_parent.strip('/') else ''}/{pod_id}"
    if not nomad_cgroup:
        return Placement(own)
    if version(root) == 2:
        rel = _relative(nomad_cgroup, Path(root), root)
        where, result = Path(root, rel.lstrip("/")), Placement(f"{rel.rstrip('/')}/{pod_id}")
    else:
        rel = _relative(nomad_cgroup, Path(root, "cpuset"), root)
        where = v1_dir("cpuset", rel, root)
        result = Placement(own, where)
    if rel == "/" or not where.is_dir():
        raise FailedPrecondition(
            f"the cgroup Nomad asked for, {nomad_cgroup}, does not exist on this host ({where}); "
            "Nomad creates it before starting a task, so check the client's cgroup setup",
            recoverable=True,
        )
    return result


def join(group: Path, pid: int, cpus: str = "") -> None:
    """Move ``pid`` into the v1 cgroup dir ``group``, first writing ``cpus`` to its cpuset.cpus when
    given (Nomad's reserved cores, as its executor does); raises FailedPrecondition."""
    try:
        if cpus:
            (group / "cpuset.cpus").write_text(cpus)
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        raise FailedPrecondition(
            f"cannot place the pod's process {pid} in Nomad's cgroup {group}: {exc.strerror or exc}", recoverable=True
        ) from exc


def existing_dirs(cgroups_path: str, root: str = CGROUP_ROOT) -> list[Path]:
    """The pod's cgroup dirs that exist now, in any hierarchy."""
    if version(root) == 2:
        candidates = [Path(root, cgroups_path.lstrip("/"))]
    else:
        candidates = [v1_dir(c, cgroups_path, root) for c in V1_DIRS]
        candidates.append(v1_dir("unified", cgroups_path, root))
    return [d for d in candidates if d.is_dir()]


def remove(cgroups_path: str, root: str = CGROUP_ROOT) -> list[Path]:
    """Remove the pod's (empty) cgroup dirs; returns those that could not be removed (still busy)."""
    left = []
    for d in existing_dirs(cgroups_path, root):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove cgroup %s: %s", d, exc)
            left.append(d)
    return left


def _read(path: Path) -> str:
    """A small kernel file, read with one read(2): Path.read_text costs 3-4x more per call, which
    matters when 50 TaskStats streams sample every second (bench/pods)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def read_kv(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (memory.stat, cpu.stat, memory.events) as ints; {} when missing."""
    out: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


def read_int(path: Path) -> int | None:
    """A single-number file, None when missing or ``max``."""
    try:
        text = _read(path).strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def read_pids(procs_file: Path) -> tuple[int, ...]:
    """Pids listed in a ``cgroup.procs`` file."""
    try:
        return tuple(int(p) for p in _read(procs_file).split())
    except FileNotFoundError:
        return ()


def v1_cpu(cpu_dir: Path, cpuacct_dir: Path) -> CpuStats:
    """CPU from cgroup v1: cpuacct.usage{,_user,_sys} (ns; cpuacct.stat ticks as fallback), cpu.stat throttling."""
    user, system = read_int(cpuacct_dir / "cpuacct.usage_user"), read_int(cpuacct_dir / "cpuacct.usage_sys")
    if user is None or system is None:
        ticks = read_kv(cpuacct_dir / "cpuacct.stat")
        user = ticks.get("user", 0) * NS_PER_S // CLOCK_TICKS_PER_S
        system = ticks.get("system", 0) * NS_PER_S // CLOCK_TICKS_PER_S
    throttle = read_kv(cpu_dir / "cpu.stat")
    return CpuStats(
        total_ns=read_int(cpuacct_dir / "cpuacct.usage") or 0,
        user_ns=user,
        system_ns=system,
        throttled_periods=throttle.get("nr_throttled", 0),
        throttled_time_ns=throttle.get("throttled_time", 0),
    )


def v1_memory(mem_dir: Path) -> MemoryStats:
    """Memory from cgroup v1 memory.stat (hierarchical ``total_*``), usage and kmem files."""
    stat = read_kv(mem_dir / "memory.stat")
    measured = ["RSS", "Cache", "Usage", "Max Usage", "Kernel Usage", "Kernel Max Usage"]
    if "total_swap" in stat:
        measured.append("Swap")
    return MemoryStats(
        rss=stat.get("total_rss", stat.get("rss", 0)),
        cache=stat.get("total_cache", stat.get("cache", 0)),
        swap=stat.get("total_swap", 0),
        usage=read_int(mem_dir / "memory.usage_in_bytes") or 0,
        max_usage=read_int(mem_dir / "memory.max_usage_in_bytes") or 0,
        kernel_usage=read_int(mem_dir / "memory.kmem.usage_in_bytes") or 0,
        kernel_max_usage=read_int(mem_dir / "memory.kmem.max_usage_in_bytes") or 0,
        measured=tuple(measured),
    )


def v2_cpu(group: Path) -> CpuStats:
    """CPU from cgroup v2 cpu.stat (µs → ns)."""
    stat = read_kv(group / "cpu.stat")
    return CpuStats(
        total_ns=stat.get("usage_usec", 0) * NS_PER_US,
        user_ns=stat.get("user_usec", 0) * NS_PER_US,
        system_ns=stat.get("system_usec", 0) * NS_PER_US,
        throttled_periods=stat.get("nr_throttled", 0),
        throttled_time_ns=stat.get("throttled_usec", 0) * NS_PER_US,
    )


def v2_memory(group: Path) -> MemoryStats:
    """Memory from cgroup v2: memory.stat anon/file/kernel, memory.current/peak, memory.swap.current."""
    stat = read_kv(group / "memory.stat")
    usage, peak, swap = (read_int(group / n) for n in ("memory.current", "memory.peak", "memory.swap.current"))
    measured = [name for name, ok in (("RSS", "anon" in stat), ("Cache", "file" in stat),
                ("Kernel Usage", "kernel" in stat), ("Usage", usage is not None),
                ("Max Usage", peak is not None), ("Swap", swap is not None)) if ok]  # fmt: skip
    return MemoryStats(
        rss=stat.get("anon", 0),
        cache=stat.get("file", 0),
        swap=swap or 0,
        usage=usage or 0,
        max_usage=peak or 0,
        kernel_usage=stat.get("kernel", stat.get("kernel_stack", 0) + stat.get("slab", 0)),
        measured=tuple(measured),
    )


def stats(cgroups_path: str, root: str = CGROUP_ROOT) -> CgroupStats:
    """A sample of the pod's cgroup on this host's hierarchy (zeros for a removed cgroup)."""
    if version(root) == 2:
        group = Path(root, cgroups_path.lstrip("/"))
        return CgroupStats(v2_cpu(group), v2_memory(group), read_pids(group / "cgroup.procs"))
    cpu = v1_cpu(v1_dir("cpu", cgroups_path, root), v1_dir("cpuacct", cgroups_path, root))
    mem_dir = v1_dir("memory", cgroups_path, root)
    return CgroupStats(cpu, v1_memory(mem_dir), read_pids(mem_dir / "cgroup.procs"))


def oom_kills(cgroups_path: str, root: str = CGROUP_ROOT) -> int:
    """How many processes the kernel OOM-killed in the pod's cgroup (v1 memory.oom_control, v2 memory.events)."""
    if version(root) == 2:
        return read_kv(Path(root, cgroups_path.lstrip("/"), "memory.events")).get("oom_kill", 0)
    return read_kv(v1_dir("memory", cgroups_path, root) / "memory.oom_control").get("oom_kill", 0)
