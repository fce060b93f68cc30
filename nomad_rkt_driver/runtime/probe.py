"""Finding the runtime parts on this host and asking them their versions.

Versions are cached by (path, mtime, size) so the periodic fingerprint does not fork
``runc --version`` every 30 seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

VERSION_TIMEOUT_S: Final = 5.0
CGROUP_ROOT: Final = "/sys/fs/cgroup"
# Controllers a pod's limits and stats need on a cgroup v1 host.
V1_CONTROLLERS: Final = ("cpu", "cpuacct", "memory", "pids")


@dataclass(frozen=True)
class Tool:
    """A located program and what it says its version is."""

    path: str
    version: str


def locate(program: str) -> str | None:
    """Absolute path of an executable ``program`` (a bare name is looked up in PATH)."""
    if os.path.isabs(program):
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program)


_VERSION_RE: Final = re.compile(r"version\s+v?(\d+\.\d+(?:\.\d+)?[^\s]*)")


@lru_cache(maxsize=16)
def _version(path: str, _mtime_ns: int, _size: int) -> str:
    try:
        done = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = _VERSION_RE.search(done.stdout + "\n" + done.stderr)
    return match.group(1) if match else ""


def find_tool(program: str) -> Tool | None:
    """Locate ``program`` and read its ``--version``; None when it is not installed."""
    path = locate(program)
    if path is None:
        return None
    st = os.stat(path)
    return Tool(path=path, version=_version(path, st.st_mtime_ns, st.st_size))


@dataclass(frozen=True)
class Cgroups:
    """Which cgroup hierarchy the host has and whether pods can use it."""

    version: int  # 1 or 2; 0 when none is usable
    problem: str  # empty when usable


def cgroups(root: str = CGROUP_ROOT) -> Cgroups:
    """Inspect the host's cgroup mount: pure v2, or v1 with the controllers pods need."""
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):
        if not os.access(os.path.join(root, "cgroup.subtree_control"), os.W_OK):
            return Cgroups(2, f"{root} (cgroup v2) is not writable; run the agent as root with cgroups mounted rw")
        return Cgroups(2, "")
    missing = [c for c in V1_CONTROLLERS if not os.path.isdir(os.path.join(root, c))]
    if missing:
        return Cgroups(0, f"cgroup controllers {', '.join(missing)} are not mounted under {root}")
    if not os.access(os.path.join(root, "memory"), os.W_OK):
        return Cgroups(1, f"{root}/memory is not writable; run the agent as root with cgroups mounted rw")
    return Cgroups(1, "")
