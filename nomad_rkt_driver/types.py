"""Plain domain types shared by the layers (no protobuf, no grpc)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

PLUGIN_NAME: Final = "rkt"
PLUGIN_API_VERSIONS: Final = ("v0.1.0",)


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
class TaskRequest:
    """The parts of Nomad's TaskConfig the driver reads (more join with the pods issue)."""

    id: str
    name: str
    alloc_id: str
    driver_config: bytes
    env: dict[str, str] = field(default_factory=dict)
    alloc_dir: str = ""
    stdout_path: str = ""
    stderr_path: str = ""
