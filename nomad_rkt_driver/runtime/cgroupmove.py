"""Moving a process into a cgroup of ours in *every* mounted hierarchy, and pruning it when empty.

The pods' monitors (conmon) use this to leave the plugin's cgroup: under systemd, stopping the
agent's unit kills every process in the unit's cgroup, and its memory and task limits count every
process there. A process moved into ``<cgroup_parent>/monitors`` in each hierarchy (v1 controllers,
named ones such as ``name=systemd``, the v2 unified one) belongs to none of the plugin's cgroups
any more; children it forks afterwards start there too.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
from pathlib import Path
from typing import Final

from nomad_rkt_driver.errors import FailedPrecondition
from nomad_rkt_driver.runtime.probe import CGROUP_ROOT

log = logging.getLogger(__name__)

CPUSET_FILES: Final = ("cpuset.cpus", "cpuset.mems")  # empty in a new v1 cpuset cgroup: nothing may join
MOVE_ATTEMPTS: Final = 3  # a concurrent prune may remove a shared cgroup between mkdir and the move


@functools.lru_cache(maxsize=4)
def hierarchies(root: str = CGROUP_ROOT, mountinfo: str = "/proc/self/mountinfo") -> tuple[tuple[Path, bool], ...]:
    """Every cgroup hierarchy mounted under ``root``: (mount point, is v1), each mount once."""
    found: list[tuple[Path, bool]] = []
    with open(mountinfo, encoding="utf-8") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            fstype = tail.split(" ", 1)[0]
            point = fields.split()[4]
            if fstype in ("cgroup", "cgroup2") and (point == root or point.startswith(root + "/")):
                found.append((Path(point), fstype == "cgroup"))
    return tuple(found)


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _make(hierarchy: Path, cgroups_path: str, v1: bool) -> None:
    """mkdir -p of ``cgroups_path`` in ``hierarchy``; in a v1 cpuset hierarchy every level with no cpus/mems
    yet gets its parent's (runc may be creating ``cgroup_parent`` at the same moment, not filled in yet)."""
    group = hierarchy
    for part in Path(cgroups_path.strip("/")).parts:
        parent, group = group, group / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(group)
        if v1 and (group / CPUSET_FILES[0]).exists():
            for name in CPUSET_FILES:
                if not (group / name).read_text().strip():
                    _write(group / name, (parent / name).read_text().strip())


def move(pid: int, cgroups_path: str, root: str = CGROUP_ROOT) -> None:
    """Move ``pid`` into ``cgroups_path`` in every hierarchy, creating the cgroup where missing.

    Quiet when ``pid`` has exited meanwhile. Raises FailedPrecondition naming the cgroup when the
    kernel refuses (read-only cgroupfs, no permission, ...).
    """
    if pid <= 0:  # "0" would move the caller itself
        raise ValueError(f"not a process id: {pid}")
    for hierarchy, v1 in hierarchies(root):
        procs = hierarchy / cgroups_path.strip("/") / "cgroup.procs"
        for attempt in range(MOVE_ATTEMPTS):
            try:
                _write(procs, str(pid))
                break
            except ProcessLookupError:
                return
            except OSError as exc:  # missing (or, v1 cpuset, no cpus yet: ENOSPC): make it, then again
                if exc.errno not in (errno.ENOENT, errno.ENOSPC) or attempt == MOVE_ATTEMPTS - 1:
                    raise FailedPrecondition(
                        f"cannot move the pod's monitor (pid {pid}) into cgroup {procs.parent}: "
                        f"{exc.strerror or exc}; the plugin must run as root with cgroupfs mounted read-write",
                        recoverable=True,
                    ) from exc
            try:
                _make(hierarchy, cgroups_path, v1)
            except OSError as exc:
                raise FailedPrecondition(
                    f"cannot create cgroup {procs.parent} for the pods' monitors: {exc.strerror or exc}",
                    recoverable=True,
                ) from exc


def prune(cgroups_path: str, root: str = CGROUP_ROOT) -> list[Path]:
    """Remove ``cgroups_path`` from every hierarchy where it is empty; the dirs still in use stay (returned)."""
    busy = []
    for hierarchy, _ in hierarchies(root):
        group = hierarchy / cgroups_path.strip("/")
        try:
            os.rmdir(group)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                log.warning("cannot remove cgroup %s: %s", group, exc)
            busy.append(group)
    return busy
