"""Named network namespaces for pods (``ip netns``: bind mounts under /run/netns).

A pod's namespace is named ``rkt-<pod id>`` so an operator sees which pod owns it and the driver
can find orphans. Deleting is idempotent.
"""

from __future__ import annotations

import os
import subprocess
from typing import Final

from nomad_rkt_driver.errors import FailedPrecondition

NETNS_DIR: Final = "/run/netns"
PREFIX: Final = "rkt-"
IPROUTE_HINT: Final = "install iproute2 (apt-get install iproute2)"


def name_for(pod_id: str) -> str:
    return PREFIX + pod_id


def path_of(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise FailedPrecondition(f"the ip command is not installed; {IPROUTE_HINT}", recoverable=True) from None


def create(name: str) -> str:
    """Create the namespace (with ``lo`` up); its path. Raises FailedPrecondition when ``ip`` fails."""
    done = _ip("netns", "add", name)
    if done.returncode != 0 and not os.path.exists(path_of(name)):
        raise FailedPrecondition(f"cannot create network namespace {name}: {done.stderr.strip()}", recoverable=True)
    up = _ip("-n", name, "link", "set", "lo", "up")
    if up.returncode != 0:
        delete(name)
        raise FailedPrecondition(f"cannot bring up lo in network namespace {name}: {up.stderr.strip()}")
    return path_of(name)


def exists(name: str) -> bool:
    return os.path.exists(path_of(name))


def delete(name: str) -> None:
    """Remove the namespace; nothing to do when it is already gone."""
    if not exists(name):
        return
    done = _ip("netns", "delete", name)
    if done.returncode != 0 and exists(name):
        raise FailedPrecondition(f"cannot delete network namespace {name}: {done.stderr.strip()}", recoverable=True)


def list_ours() -> list[str]:
    """The names of the driver's namespaces present on this host."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIX))
    except FileNotFoundError:
        return []
