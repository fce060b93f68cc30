"""Plain domain types shared by the layers (no protobuf, no grpc)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Health(enum.Enum):
    UNDETECTED = 0
    UNHEALTHY = 1
    HEALTHY = 2


class FSIsolation(enum.Enum):
    NONE = 0
    CHROOT = 1
    IMAGE = 2


class NetworkMode(enum.Enum):
    HOST = 0
    GROUP = 1
    TASK = 2
    NONE = 3


@dataclass(frozen=True)
class Fingerprint:
    """What the driver tells Nomad about itself on this host."""

    health: Health
    description: str
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """The protocol features this driver really provides (kept truthful at every commit)."""

    send_signals: bool
    exec: bool
    fs_isolation: FSIsolation
    network_modes: tuple[NetworkMode, ...]
    must_create_network: bool
    mounts: bool
    disable_log_collection: bool
    dynamic_workload_users: bool


@dataclass(frozen=True)
class Core:
    """One CPU core from Nomad's client topology; speeds in MHz."""

    core_id: int
    base_mhz: int
    max_mhz: int
    guess_mhz: int
    disabled: bool = False

    @property
    def mhz(self) -> int:
        return self.base_mhz or self.max_mhz or self.guess_mhz


@dataclass(frozen=True)
class Topology:
    """The client's CPU topology, which turns CPU percent into MHz for stats."""

    cores: tuple[Core, ...] = ()
    override_total_compute_mhz: int = 0

    @property
    def total_compute_mhz(self) -> int:
        if self.override_total_compute_mhz > 0:
            return self.override_total_compute_mhz
        return sum(core.mhz for core in self.cores)

    @property
    def mhz_per_core(self) -> float:
        return self.total_compute_mhz / len(self.cores) if self.cores else 0.0


@dataclass(frozen=True)
class AgentConfig:
    """What the Nomad agent tells every driver at SetConfig (absent at validation launches)."""

    client_min_port: int = 0
    client_max_port: int = 0
    topology: Topology = field(default_factory=Topology)


@dataclass(frozen=True)
class TaskEvent:
    """A driver event about one task, shown by Nomad as a "Driver" task event."""

    task_id: str
    alloc_id: str
    task_name: str
    timestamp: float
    message: str
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PortMapping:
    """One of the alloc's ports: host port ``value`` on ``host_ip``, optionally mapped ``to``."""

    label: str
    value: int
    to: int = 0
    host_ip: str = ""


@dataclass(frozen=True)
class Mount:
    """A host path Nomad wants inside the task (volume_mount, CSI, host volumes)."""

    task_path: str
    host_path: str
    readonly: bool = False
    propagation_mode: str = ""


@dataclass(frozen=True)
class Device:
    task_path: str
    host_path: str
    cgroup_permissions: str = "rwm"


@dataclass(frozen=True)
class Resources:
    """Nomad's resource decisions for one task (MHz, MiB, and the computed Linux values)."""

    cpu_mhz: int = 0
    memory_mb: int = 0
    memory_max_mb: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_cgroup: str = ""
    ports: tuple[PortMapping, ...] = ()


@dataclass(frozen=True)
class NetworkIsolation:
    """Where Nomad wants the task's network: its own netns path in GROUP mode."""

    mode: NetworkMode = NetworkMode.HOST
    path: str = ""
    hostname: str = ""


@dataclass(frozen=True)
class DNS:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskRequest:
    """Nomad's TaskConfig in domain form: everything the driver may use to start a task."""

    id: str
    name: str
    alloc_id: str
    driver_config: bytes
    env: dict[str, str] = field(default_factory=dict)
    alloc_dir: str = ""
    stdout_path: str = ""
    stderr_path: str = ""
    user: str = ""
    resources: Resources = field(default_factory=Resources)
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    network: NetworkIsolation = field(default_factory=NetworkIsolation)
    dns: DNS | None = None
    job_id: str = ""
    job_name: str = ""
    task_group: str = ""
    namespace: str = ""
    node_id: str = ""
    node_name: str = ""


@dataclass(frozen=True)
class ExitResult:
    """How a task ended; a death by signal N is exit_code 128+N with signal N (Nomad's executor)."""

    exit_code: int = 0
    signal: int = 0
    oom_killed: bool = False

    @property
    def successful(self) -> bool:
        return self.exit_code == 0 and self.signal == 0 and not self.oom_killed


@dataclass(frozen=True)
class CpuUsage:
    """CPU use over the last interval: percents of one core, ticks in MHz, throttling counters."""

    system_mode: float = 0.0
    user_mode: float = 0.0
    percent: float = 0.0
    total_ticks: float = 0.0
    throttled_periods: int = 0
    throttled_time_ns: int = 0
    measured: tuple[str, ...] = ()  # names among Nomad's: System Mode, User Mode, Percent, ...


@dataclass(frozen=True)
class MemoryUsage:
    """Memory in bytes."""

    rss: int = 0
    cache: int = 0
    swap: int = 0
    usage: int = 0
    max_usage: int = 0
    kernel_usage: int = 0
    kernel_max_usage: int = 0
    measured: tuple[str, ...] = ()  # names among Nomad's: RSS, Cache, Swap, Usage, Max Usage, ...


@dataclass(frozen=True)
class ResourceUsage:
    cpu: CpuUsage = field(default_factory=CpuUsage)
    memory: MemoryUsage = field(default_factory=MemoryUsage)


@dataclass(frozen=True)
class TaskStats:
    """One sample for TaskStats: the pod as a whole and, where known, per pid."""

    task_id: str
    timestamp: float
    total: ResourceUsage
    by_pid: dict[int, ResourceUsage] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskStatusView:
    """InspectTask's answer: times are wall-clock seconds (completed_at 0 while running)."""

    id: str
    name: str
    running: bool
    started_at: float
    completed_at: float
    result: ExitResult
