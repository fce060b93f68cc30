"""Default protections of a pod: capabilities, masked and read-only paths, a seccomp denylist.

Pure data and pure functions; ``spec.py`` assembles them into the OCI config. rkt's
``insecure_options`` values ``capabilities``, ``paths`` and ``seccomp`` (and ``all-run``/``all``)
switch the matching protection off; ``privileged`` switches all of them off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidArgument

# The capability set docker and podman give a container by default.
DEFAULT_CAPS: Final = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

# Every capability Linux 5.x/6.x knows (capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
ALL_CAPS: Final = (
    *DEFAULT_CAPS,
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_DAC_READ_SEARCH",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_NET_ADMIN",
    "CAP_NET_BROADCAST",
    "CAP_PERFMON",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
)

MASKED_PATHS: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS: Final = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Syscalls refused (EPERM) by the default profile unless the pod holds the capability that
# legitimately needs them; the rest of the kernel's syscalls stay allowed (a denylist).
GATED_SYSCALLS: Final[dict[str, tuple[str, ...]]] = {
    "CAP_SYS_ADMIN": (
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "setns",
        "unshare",
        "quotactl",
        "lookup_dcookie",
        "name_to_handle_at",
        "open_by_handle_at",
        "fanotify_init",
        "bpf",
        "perf_event_open",
    ),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module", "create_module", "query_module"),
    "CAP_SYS_BOOT": ("reboot", "kexec_load", "kexec_file_load"),
    "CAP_SYS_PTRACE": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_NICE": ("mbind", "set_mempolicy", "move_pages"),
}
# Refused whatever the capabilities (obsolete or only useful to attack the host).
ALWAYS_DENIED: Final = (
    "add_key", "keyctl", "request_key", "get_kernel_syms", "nfsservctl", "swapon", "swapoff", "sysfs",
    "_sysctl", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
)  # fmt: skip
EPERM: Final = 1
INSECURE_ALL: Final = frozenset({"all", "all-run"})
INSECURE_KNOWN: Final = frozenset({"capabilities", "paths", "seccomp"}) | INSECURE_ALL


def insecure(options: Iterable[str], protection: str) -> bool:
    """True when rkt-style ``insecure_options`` switch ``protection`` off."""
    opts = set(options)
    return protection in opts or bool(opts & INSECURE_ALL)


def normalise_cap(name: str) -> str:
    """``net_admin``/``NET_ADMIN``/``CAP_NET_ADMIN`` → ``CAP_NET_ADMIN``; raises InvalidArgument if unknown."""
    upper = name.strip().upper()
    cap = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if upper == "ALL":
        return "ALL"
    if cap not in ALL_CAPS:
        raise InvalidArgument(f"unknown capability {name!r} in cap_add/cap_drop; use a name like NET_ADMIN or ALL")
    return cap


def capability_set(cap_add: Iterable[str], cap_drop: Iterable[str], *, all_caps: bool) -> list[str]:
    """The sorted capability list: defaults (or all), plus cap_add, minus cap_drop (``ALL`` allowed in both)."""
    added = {normalise_cap(c) for c in cap_add}
    dropped = {normalise_cap(c) for c in cap_drop}
    caps = set(ALL_CAPS) if all_caps or "ALL" in added else set(DEFAULT_CAPS)
    caps |= added - {"ALL"}
    caps = set() if "ALL" in dropped else caps - dropped
    return sorted(caps)


def capabilities_block(caps: list[str]) -> dict[str, list[str]]:
    """The OCI ``process.capabilities`` object (no inheritable/ambient: a non-root user gets none)."""
    return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}


def seccomp_profile(caps: Iterable[str]) -> dict[str, Any]:
    """The default seccomp profile: allow everything except the denied syscalls (EPERM)."""
    held = set(caps)
    denied = [*ALWAYS_DENIED]
    for cap, calls in GATED_SYSCALLS.items():
        if cap not in held:
            denied.extend(calls)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": sorted(set(denied)), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}],
    }
