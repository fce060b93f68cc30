"""A pod's cgroup: where it is, its CPU/memory counters (v1 and v2), OOM kills, removal.

Readers take the cgroup directories as arguments so they can be tested on any real cgroup.
Counters are returned in bytes and nanoseconds; the driver turns them into Nomad's units.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
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


V1_FILES: Final = {  # key: (v1 controller, file)
    "usage": ("cpuacct", "cpuacct.usage"),
    "usage_user": ("cpuacct", "cpuacct.usage_user"),
    "usage_sys": ("cpuacct", "cpuacct.usage_sys"),
    "cpuacct.stat": ("cpuacct", "cpuacct.stat"),
    "cpu.stat": ("cpu", "cpu.stat"),
    "memory.stat": ("memory", "memory.stat"),
    "mem_usage": ("memory", "memory.usage_in_bytes"),
    "mem_max": ("memory", "memory.max_usage_in_bytes"),
    "kmem_usage": ("memory", "memory.kmem.usage_in_bytes"),
    "kmem_max": ("memory", "memory.kmem.max_usage_in_bytes"),
    "procs": ("memory", "cgroup.procs"),
}
V2_FILES: Final = ("cpu.stat", "memory.stat", "memory.current", "memory.peak", "memory.swap.current", "cgroup.procs")
V1_MEASURED: Final = ("RSS", "Cache", "Usage", "Max Usage", "Kernel Usage", "Kernel Max Usage")
_MISSING: Final = -1


def _kv(data: bytes | None) -> dict[bytes, bytes]:
    """``key value`` lines (memory.stat, cpu.stat) as raw tokens; values are converted only when used."""
    if not data:
        return {}
    tokens = data.split()
    return dict(zip(tokens[::2], tokens[1::2], strict=False))


def _num(value: bytes | None) -> int:
    """A counter's bytes as an int; 0 when missing or not a number (``max``)."""
    value = value.strip() if value is not None else b""
    return int(value) if value.isdigit() else 0


def _number(value: bytes | None) -> bytes | None:
    """The counter when the file exists and holds a number (not ``max``), else None: not measured."""
    return value if value is not None and value.strip().isdigit() else None


class _FdBudget:
    """How many cgroup files all readers together may keep open: a quarter of the soft RLIMIT_NOFILE
    (often 1024 under systemd), so kept descriptors never starve pipes, sockets and runc of theirs."""

    def __init__(self) -> None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.limit = (1 << 20) if soft == resource.RLIM_INFINITY else soft // 4
        self.kept = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.kept >= self.limit:
                return False
            self.kept += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.kept -= 1


_KEPT_FDS: Final = _FdBudget()


class CgroupReader:
    """The counters of one cgroup (v1 or v2), through file descriptors kept open between samples.

    A sample is one ``pread(2)`` per file instead of open/read/close, and the parsing converts only
    the numbers it uses: 50 TaskStats streams read 50 cgroups every second (bench/pods). Files the
    kernel does not have (kmem on some kernels, v2 memory files on a hybrid host) are remembered as
    missing; a cgroup removed meanwhile reads as zeros. Thread-safe; after :meth:`close` it reads zeros.
    """

    def __init__(self, cgroups_path: str, root: str = CGROUP_ROOT) -> None:
        rel = cgroups_path.strip("/")
        self.v2 = version(root) == 2
        if self.v2:
            self._paths = {name: os.path.join(root, rel, name) for name in V2_FILES}
        else:
            self._paths = {key: os.path.join(root, ctl, rel, name) for key, (ctl, name) in V1_FILES.items()}
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _read(self, key: str) -> bytes | None:
        fd = self._fds.get(key)
        if fd is None:
            if self._closed:
                return None
            try:
                fd = os.open(self._paths[key], os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._fds[key] = _MISSING
                return None
            if not _KEPT_FDS.take():  # over the process's budget: this file is opened per sample
                try:
                    return os.pread(fd, 65536, 0)
                except OSError:
                    return None
                finally:
                    os.close(fd)
            self._fds[key] = fd
        if fd == _MISSING:
            return None
        try:
            return os.pread(fd, 65536, 0)
        except OSError:  # ENODEV: the cgroup was removed while open
            return None

    def sample(self) -> CgroupStats:
        with self._lock:
            return self._v2_sample() if self.v2 else self._v1_sample()

    def _v1_sample(self) -> CgroupStats:
        read = self._read
        user, system = read("usage_user"), read("usage_sys")
        if user is None or system is None:  # cpuacct.stat: clock ticks
            ticks = _kv(read("cpuacct.stat"))
            user_ns = _num(ticks.get(b"user")) * NS_PER_S // CLOCK_TICKS_PER_S
            system_ns = _num(ticks.get(b"system")) * NS_PER_S // CLOCK_TICKS_PER_S
        else:
            user_ns, system_ns = _num(user), _num(system)
        throttle = _kv(read("cpu.stat"))
        cpu = CpuStats(
            total_ns=_num(read("usage")),
            user_ns=user_ns,
            system_ns=system_ns,
            throttled_periods=_num(throttle.get(b"nr_throttled")),
            throttled_time_ns=_num(throttle.get(b"throttled_time")),
        )
        stat = _kv(read("memory.stat"))
        swap = stat.get(b"total_swap")
        memory = MemoryStats(
            rss=_num(stat.get(b"total_rss", stat.get(b"rss"))),
            cache=_num(stat.get(b"total_cache", stat.get(b"cache"))),
            swap=_num(swap),
            usage=_num(read("mem_usage")),
            max_usage=_num(read("mem_max")),
            kernel_usage=_num(read("kmem_usage")),
            kernel_max_usage=_num(read("kmem_max")),
            measured=(*V1_MEASURED, "Swap") if swap is not None else V1_MEASURED,
        )
        return CgroupStats(cpu, memory, tuple(int(p) for p in (read("procs") or b"").split()))

    def _v2_sample(self) -> CgroupStats:
        read = self._read
        stat = _kv(read("cpu.stat"))
        cpu = CpuStats(
            total_ns=_num(stat.get(b"usage_usec")) * NS_PER_US,
            user_ns=_num(stat.get(b"user_usec")) * NS_PER_US,
            system_ns=_num(stat.get(b"system_usec")) * NS_PER_US,
            throttled_periods=_num(stat.get(b"nr_throttled")),
            throttled_time_ns=_num(stat.get(b"throttled_usec")) * NS_PER_US,
        )
        mem = _kv(read("memory.stat"))
        usage, peak, swap = (_number(read(n)) for n in ("memory.current", "memory.peak", "memory.swap.current"))
        measured = [name for name, ok in (("RSS", b"anon" in mem), ("Cache", b"file" in mem),
                    ("Kernel Usage", b"kernel" in mem), ("Usage", usage is not None),
                    ("Max Usage", peak is not None), ("Swap", swap is not None)) if ok]  # fmt: skip
        kernel = mem.get(b"kernel")  # older kernels: kernel_stack + slab
        kernel_usage = _num(kernel) if kernel is not None else _num(mem.get(b"kernel_stack")) + _num(mem.get(b"slab"))
        memory = MemoryStats(
            rss=_num(mem.get(b"anon")),
            cache=_num(mem.get(b"file")),
            swap=_num(swap),
            usage=_num(usage),
            max_usage=_num(peak),
            kernel_usage=kernel_usage,
            measured=tuple(measured),
        )
        return CgroupStats(cpu, memory, tuple(int(p) for p in (read("cgroup.procs") or b"").split()))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for fd in self._fds.values():
                if fd != _MISSING:
                    os.close(fd)
                    _KEPT_FDS.give()
            self._fds.clear()


def stats(cgroups_path: str, root: str = CGROUP_ROOT) -> CgroupStats:
    """A sample of the pod's cgroup on this host's hierarchy (zeros for a removed cgroup)."""
    reader = CgroupReader(cgroups_path, root)
    try:
        return reader.sample()
    finally:
        reader.close()


def oom_kills(cgroups_path: str, root: str = CGROUP_ROOT) -> int:
    """How many processes the kernel OOM-killed in the pod's cgroup (v1 memory.oom_control, v2 memory.events)."""
    if version(root) == 2:
        return read_kv(Path(root, cgroups_path.lstrip("/"), "memory.events")).get("oom_kill", 0)
    return read_kv(v1_dir("memory", cgroups_path, root) / "memory.oom_control").get("oom_kill", 0)
