"""Named network namespaces for pods (``ip netns``: bind mounts under /run/netns).

A pod's namespace is named ``rkt-<pod id>`` so an operator sees which pod owns it and the driver
can find orphans. Deleting is idempotent.

For a pod with IPv6, duplicate address detection is switched off inside its namespace before any
interface is made (``accept_dad = 0`` for the namespace's defaults): its interfaces are ends of
point-to-point links or bridge ports whose addresses IPAM hands out once, and with DAD on, the
``ptp`` plugin waits about two seconds for each IPv6 address to leave its tentative state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Final

from nomad_rkt_driver.errors import FailedPrecondition

NETNS_DIR: Final = "/run/netns"
PREFIX: Final = "rkt-"
IPROUTE_HINT: Final = "install iproute2 (apt-get install iproute2)"
NO_DAD: Final = ("net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")


def name_for(pod_id: str) -> str:
    return PREFIX + pod_id


def path_of(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise FailedPrecondition(f"the ip command is not installed; {IPROUTE_HINT}", recoverable=True) from None


def create(name: str, ipv6: bool = False) -> str:
    """Create the namespace (with ``lo`` up, and DAD off when the pod gets IPv6); its path.
    Raises FailedPrecondition when ``ip`` fails."""
    done = _ip("netns", "add", name)
    if done.returncode != 0 and not os.path.exists(path_of(name)):
        raise FailedPrecondition(f"cannot create network namespace {name}: {done.stderr.strip()}", recoverable=True)
    up = _ip("-n", name, "link", "set", "lo", "up")
    if up.returncode != 0:
        delete(name)
        raise FailedPrecondition(f"cannot bring up lo in network namespace {name}: {up.stderr.strip()}")
    if ipv6:
        _no_dad(name)
    return path_of(name)


def _no_dad(name: str) -> None:
    try:
        done = subprocess.run(
            ["nsenter", f"--net={path_of(name)}", "sysctl", "-q", "-w", *NO_DAD],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        delete(name)
        raise FailedPrecondition(
            "the nsenter command is not installed; install util-linux (apt-get install util-linux)", recoverable=True
        ) from None
    if done.returncode != 0:
        delete(name)
        raise FailedPrecondition(f"cannot turn off IPv6 DAD in network namespace {name}: {done.stderr.strip()}")


def ipv6_problem(proc_root: str = "/proc") -> str:
    """Why this host cannot give pods IPv6 ("" when it can): kernel IPv6 off, or no ip6tables."""
    conf = os.path.join(proc_root, "sys/net/ipv6/conf")
    if not os.path.isdir(conf):
        return "the kernel has IPv6 disabled (booted with ipv6.disable=1)"
    for scope in ("all", "default"):
        try:
            with open(os.path.join(conf, scope, "disable_ipv6")) as flag:
                if flag.read().strip() == "1":
                    return (
                        f"IPv6 is disabled on this host (net.ipv6.conf.{scope}.disable_ipv6 = 1; "
                        f"sysctl -w net.ipv6.conf.{scope}.disable_ipv6=0 enables it)"
                    )
        except OSError:
            continue
    if shutil.which("ip6tables") is None:
        return "ip6tables is not installed (apt-get install iptables), and IPv6 masquerade and port forwarding need it"
    return ""


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
