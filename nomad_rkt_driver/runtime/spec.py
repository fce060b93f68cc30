"""The OCI runtime ``config.json`` of a pod, built from a frozen :class:`PodSpec` by pure functions.

One small function per concern (process, mounts, resources, namespaces, security, rlimits);
:func:`build_config` assembles them. Nothing here touches the host except
:func:`host_hard_limits`, whose result is passed in so the rest stays pure.
"""

from __future__ import annotations

import os
import resource
import stat
from dataclasses import dataclass, field
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.runtime import security

OCI_VERSION: Final = "1.0.2"
DEFAULT_PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NOFILE_SOFT: Final = 1024
SHM_SIZE_BYTES: Final = 64 * 1024 * 1024
RLIMIT_NAMES: Final = tuple(n for n in dir(resource) if n.startswith("RLIMIT_"))


PROPAGATIONS: Final = ("rprivate", "rslave", "rshared")


@dataclass(frozen=True)
class Bind:
    """A host path bind-mounted into the pod (alloc/local/secrets dirs, Nomad mounts, volumes).

    ``propagation``: ``rprivate`` (the default), ``rslave`` (host mounts below the source appear
    in the pod) or ``rshared`` (and the pod's mounts there appear on the host).
    """

    source: str
    destination: str
    readonly: bool = False
    propagation: str = "rprivate"


@dataclass(frozen=True)
class Device:
    """A host device node made inside the pod at ``path`` and allowed by the devices cgroup.

    ``kind`` is ``c`` (character) or ``b`` (block); ``access`` a subset of ``rwm``.
    """

    path: str
    kind: str
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    access: str = "rwm"


@dataclass(frozen=True)
class Rlimit:
    """A POSIX resource limit for the pod's process, e.g. ``Rlimit("RLIMIT_NOFILE", 1024, 4096)``."""

    type: str
    soft: int
    hard: int


@dataclass(frozen=True)
class Resources:
    """Cgroup limits; 0 (or None) means "not set". Memory in bytes, CPU quota/period in µs."""

    memory_limit_bytes: int = 0  # hard limit (Nomad's memory_max when set, else memory)
    memory_reservation_bytes: int = 0  # soft limit (Nomad's memory when memory_max is larger)
    cpu_shares: int = 0
    cpu_quota_us: int = 0
    cpu_period_us: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class PodSpec:
    """Everything the runtime needs to run one task as a pod.

    ``netns``: ``""`` gives the pod its own empty network namespace, ``"host"`` shares the
    host's, an absolute path joins that namespace (e.g. one Nomad or CNI created).
    ``insecure_options``: rkt's values; ``capabilities``/``paths``/``seccomp``/``all-run``/``all``
    switch the matching protection off (fetch-only values such as ``image`` are ignored here).
    ``cgroups_path`` empty → the pods facade chooses one (see ``nomad_cgroup``).
    ``nomad_cgroup``: the cgroup Nomad wants the task in (LinuxResources.cpuset_cgroup), or ``""``.
    """

    pod_id: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = ""
    readonly_rootfs: bool = False
    binds: tuple[Bind, ...] = ()
    devices: tuple[Device, ...] = ()
    resources: Resources = field(default_factory=Resources)
    cgroups_path: str = ""
    nomad_cgroup: str = ""
    netns: str = ""
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    base_caps: tuple[str, ...] | None = None  # the set cap_add/cap_drop start from; None: security.DEFAULT_CAPS
    no_new_privileges: bool = True
    insecure_options: tuple[str, ...] = ()
    rlimits: tuple[Rlimit, ...] = ()


@dataclass(frozen=True)
class HostLimits:
    """What the host lets a pod have: hard rlimits (-1 = unlimited) and the bounding capabilities."""

    hard_rlimits: dict[str, int]
    caps: frozenset[str]


def host_limits() -> HostLimits:
    """This process's hard limit of every RLIMIT_* and its capability bounding set."""
    hard = {name: resource.getrlimit(getattr(resource, name))[1] for name in RLIMIT_NAMES}
    with open("/proc/self/status", encoding="ascii") as f:
        caps = security.bounding_caps(f.read())
    return HostLimits(hard_rlimits=hard, caps=caps)


def host_device(path: str, access: str = "rwm") -> Device:
    """The device node at ``path`` on this host (symlinks followed), to be made at the same path.

    Raises FileNotFoundError when it does not exist and ValueError when it is not a character or
    block device; callers turn both into errors naming their own attribute.
    """
    info = os.stat(path)
    if stat.S_ISCHR(info.st_mode):
        kind = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        raise ValueError(f"{path} is not a character or block device")
    return Device(
        path=path,
        kind=kind,
        major=os.major(info.st_rdev),
        minor=os.minor(info.st_rdev),
        file_mode=stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
        access=access,
    )


def process_block(spec: PodSpec) -> dict[str, Any]:
    """``process``: args, env (PATH added when missing), cwd and user; never a terminal."""
    if not spec.args:
        raise InvalidArgument(f"pod {spec.pod_id}: no command to run; set the task's command or use an image with one")
    if not spec.cwd.startswith("/"):
        raise InvalidArgument(f"pod {spec.pod_id}: working directory {spec.cwd!r} must be an absolute path")
    env = [f"{key}={value}" for key, value in spec.env]
    if not any(key == "PATH" for key, _ in spec.env):
        env.insert(0, DEFAULT_PATH_ENV)
    user: dict[str, Any] = {"uid": spec.uid, "gid": spec.gid}
    if spec.additional_gids:
        user["additionalGids"] = list(spec.additional_gids)
    return {"terminal": False, "args": list(spec.args), "env": env, "cwd": spec.cwd, "user": user}


def rlimits_block(requested: tuple[Rlimit, ...], host_hard: dict[str, int]) -> list[dict[str, Any]]:
    """``process.rlimits``: NOFILE defaults to 1024/host hard; any request above the host's hard limit is refused."""
    limits = {"RLIMIT_NOFILE": Rlimit("RLIMIT_NOFILE", DEFAULT_NOFILE_SOFT, host_hard.get("RLIMIT_NOFILE", 1024))}
    for lim in requested:
        if lim.type not in RLIMIT_NAMES:
            raise InvalidArgument(f"unknown resource limit {lim.type!r}; use one of {', '.join(sorted(RLIMIT_NAMES))}")
        cap = host_hard.get(lim.type, -1)
        if lim.soft > lim.hard or (cap >= 0 and lim.hard > cap):
            raise InvalidArgument(
                f"{lim.type} soft={lim.soft} hard={lim.hard} is not allowed: the host's hard limit is {cap} "
                "and soft must not exceed hard; lower the limit or raise the agent's limit"
            )
        limits[lim.type] = lim
    soft = limits["RLIMIT_NOFILE"]
    if soft.soft > soft.hard:
        limits["RLIMIT_NOFILE"] = Rlimit("RLIMIT_NOFILE", soft.hard, soft.hard)
    return [{"type": lim.type, "soft": lim.soft, "hard": lim.hard} for lim in limits.values()]


def standard_mounts() -> list[dict[str, Any]]:
    """/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys and a read-only cgroup view."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE_BYTES}"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def bind_mount(bind: Bind) -> dict[str, Any]:
    """One ``rbind`` mount entry; raises InvalidArgument for relative paths or an unknown propagation."""
    if not os.path.isabs(bind.source) or not os.path.isabs(bind.destination):
        raise InvalidArgument(f"mount {bind.source!r} -> {bind.destination!r}: both paths must be absolute")
    if bind.propagation not in PROPAGATIONS:
        raise InvalidArgument(
            f"mount {bind.source!r} -> {bind.destination!r}: propagation {bind.propagation!r} "
            f"is not one of {', '.join(PROPAGATIONS)}"
        )
    mode = "ro" if bind.readonly else "rw"
    return {
        "destination": bind.destination,
        "type": "bind",
        "source": bind.source,
        "options": ["rbind", bind.propagation, mode],
    }


def rootfs_propagation(binds: tuple[Bind, ...]) -> str:
    """``linux.rootfsPropagation``: ``rshared`` when a bind must share mounts back to the host
    (runc needs the root shared for that), else ``""`` (runc's own default, rslave)."""
    return "rshared" if any(b.propagation == "rshared" for b in binds) else ""


def device_entry(device: Device) -> dict[str, Any]:
    """One ``linux.devices`` node; raises InvalidArgument for a relative path or a bad kind/access."""
    if not os.path.isabs(device.path) or device.kind not in ("c", "b"):
        raise InvalidArgument(f"device {device.path!r}: needs an absolute path and kind 'c' or 'b'")
    if not device.access or set(device.access) - set("rwm"):
        raise InvalidArgument(f"device {device.path!r}: access {device.access!r} must be letters of 'rwm'")
    return {
        "path": device.path,
        "type": device.kind,
        "major": device.major,
        "minor": device.minor,
        "fileMode": device.file_mode,
        "uid": device.uid,
        "gid": device.gid,
    }


def device_rule(device: Device) -> dict[str, Any]:
    """The devices-cgroup rule that lets the pod use ``device`` with its access."""
    return {"allow": True, "type": device.kind, "major": device.major, "minor": device.minor, "access": device.access}


def mounts_block(spec: PodSpec) -> list[dict[str, Any]]:
    """Standard mounts followed by the spec's binds (later mounts win on the same destination)."""
    return standard_mounts() + [bind_mount(b) for b in spec.binds]


def resources_block(res: Resources, *, privileged: bool, devices: tuple[Device, ...] = ()) -> dict[str, Any]:
    """``linux.resources``: memory, CPU, cpuset and pids limits; devices denied unless privileged
    or listed (runc adds its default nodes, /dev/null and friends, itself)."""
    rules = [{"allow": privileged, "access": "rwm"}]
    if not privileged:
        rules += [device_rule(d) for d in devices]
    out: dict[str, Any] = {"devices": rules}
    memory = {"limit": res.memory_limit_bytes, "reservation": res.memory_reservation_bytes}
    memory = {k: v for k, v in memory.items() if v > 0}
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {"shares": res.cpu_shares, "quota": res.cpu_quota_us, "period": res.cpu_period_us}
    cpu = {k: v for k, v in cpu.items() if v > 0}
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if cpu:
        out["cpu"] = cpu
    if res.pids_limit > 0:
        out["pids"] = {"limit": res.pids_limit}
    return out


def namespaces_block(netns: str) -> list[dict[str, str]]:
    """pid, ipc, uts and mount namespaces, plus the network one described by ``netns``."""
    spaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns == "":
        spaces.append({"type": "network"})
    elif os.path.isabs(netns):
        spaces.append({"type": "network", "path": netns})
    elif netns != "host":
        raise InvalidArgument(f"network namespace {netns!r}: use '' (own), 'host' or an absolute netns path")
    return spaces


def security_blocks(spec: PodSpec, host_caps: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(process additions, linux additions): capabilities, no_new_privileges, masked paths, seccomp."""
    all_caps = spec.privileged or security.insecure(spec.insecure_options, "capabilities")
    caps = security.capability_set(
        spec.cap_add, spec.cap_drop, all_caps=all_caps, host_caps=host_caps, base=spec.base_caps
    )
    process: dict[str, Any] = {
        "capabilities": security.capabilities_block(caps),
        "noNewPrivileges": spec.no_new_privileges and not spec.privileged,
    }
    linux: dict[str, Any] = {}
    if not (spec.privileged or security.insecure(spec.insecure_options, "paths")):
        linux["maskedPaths"] = list(security.MASKED_PATHS)
        linux["readonlyPaths"] = list(security.READONLY_PATHS)
    if not (spec.privileged or security.insecure(spec.insecure_options, "seccomp")):
        linux["seccomp"] = security.seccomp_profile(caps)
    return process, linux


def build_config(spec: PodSpec, rootfs: str, host: HostLimits) -> dict[str, Any]:
    """The whole OCI runtime config of ``spec`` with ``rootfs`` as root path; raises InvalidArgument."""
    process = process_block(spec)
    process["rlimits"] = rlimits_block(spec.rlimits, host.hard_rlimits)
    sec_process, sec_linux = security_blocks(spec, host.caps)
    process.update(sec_process)
    linux: dict[str, Any] = {
        "resources": resources_block(spec.resources, privileged=spec.privileged, devices=spec.devices),
        "namespaces": namespaces_block(spec.netns),
        **sec_linux,
    }
    if spec.devices:
        linux["devices"] = [device_entry(d) for d in spec.devices]
    propagation = rootfs_propagation(spec.binds)
    if propagation:
        linux["rootfsPropagation"] = propagation
    if spec.cgroups_path:
        linux["cgroupsPath"] = spec.cgroups_path
    if spec.resources.oom_score_adj is not None:
        process["oomScoreAdj"] = spec.resources.oom_score_adj
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": spec.readonly_rootfs},
        "hostname": spec.hostname or spec.pod_id[:63],
        "mounts": mounts_block(spec),
        "linux": linux,
    }
