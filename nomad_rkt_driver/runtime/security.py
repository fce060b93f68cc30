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

# Every capability Linux knows, by bit number (linux/capability.h).
CAP_BITS: Final[dict[str, int]] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
ALL_CAPS: Final = tuple(CAP_BITS)


def caps_from_mask(mask_hex: str) -> frozenset[str]:
    """Capability names in a /proc status mask such as ``CapBnd:\t000001fffeffffff``."""
    mask = int(mask_hex, 16)
    return frozenset(name for name, bit in CAP_BITS.items() if mask >> bit & 1)


def bounding_caps(status_text: str) -> frozenset[str]:
    """The capabilities a process may pass on, from the text of its /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("CapBnd:"):
            return caps_from_mask(line.split(":", 1)[1].strip())
    return frozenset(ALL_CAPS)


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


def capability_set(
    cap_add: Iterable[str],
    cap_drop: Iterable[str],
    *,
    all_caps: bool,
    host_caps: frozenset[str],
    base: Iterable[str] | None = None,
) -> list[str]:
    """The sorted capability list: ``base`` (default: :data:`DEFAULT_CAPS`; all the host has when
    ``all_caps``), plus cap_add, minus cap_drop.

    ``base`` (e.g. an image's retain-set) is a bound, so what the host lacks is left out of it, as
    of the defaults. ``ALL`` is allowed in both lists. Raises InvalidArgument when cap_add names a
    capability the host (the runtime's bounding set, ``host_caps``) does not have.
    """
    added = {normalise_cap(c) for c in cap_add}
    dropped = {normalise_cap(c) for c in cap_drop}
    missing = sorted(added - host_caps - {"ALL"})
    if missing:
        raise InvalidArgument(f"cap_add {missing}: this host's runtime does not hold them; remove them from cap_add")
    start = DEFAULT_CAPS if base is None else base
    caps = set(host_caps) if all_caps or "ALL" in added else set(start) & host_caps
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
