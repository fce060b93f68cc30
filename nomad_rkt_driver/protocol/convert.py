"""Pure conversions between protobuf messages and domain types (no logic beyond mapping)."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from nomad_rkt_driver.network.ports import DriverNetwork
from nomad_rkt_driver.protocol.gen import attribute_pb2, base_pb2, driver_pb2
from nomad_rkt_driver.types import (
    DNS,
    AgentConfig,
    Capabilities,
    Core,
    CpuUsage,
    Device,
    ExitResult,
    Fingerprint,
    MemoryUsage,
    Mount,
    NetworkIsolation,
    NetworkMode,
    PortMapping,
    Resources,
    ResourceUsage,
    TaskEvent,
    TaskRequest,
    TaskStats,
    TaskStatusView,
    Topology,
)

Attr = attribute_pb2.Attribute


def agent_config_from_proto(msg: base_pb2.SetConfigRequest) -> AgentConfig | None:
    """The agent facts of a SetConfig; None when Nomad sent none (its validation launch)."""
    if not msg.HasField("nomad_config") or not msg.nomad_config.HasField("driver"):
        return None
    driver = msg.nomad_config.driver
    topology = Topology()
    if driver.HasField("Topology"):
        top = driver.Topology
        topology = Topology(
            cores=tuple(
                Core(
                    core_id=c.core_id,
                    base_mhz=c.base_speed,
                    max_mhz=c.max_speed,
                    guess_mhz=c.guess_speed,
                    disabled=c.disable,
                )
                for c in top.cores
            ),
            override_total_compute_mhz=top.override_total_compute,
        )
    return AgentConfig(client_min_port=driver.ClientMinPort, client_max_port=driver.ClientMaxPort, topology=topology)


def attribute_to_proto(value: str | int | float | bool) -> attribute_pb2.Attribute:
    if isinstance(value, bool):
        return Attr(bool_val=value)
    if isinstance(value, int):
        return Attr(int_val=value)
    if isinstance(value, float):
        return Attr(float_val=value)
    return Attr(string_val=value)


def fingerprint_to_proto(fp: Fingerprint) -> driver_pb2.FingerprintResponse:
    return driver_pb2.FingerprintResponse(
        attributes={k: attribute_to_proto(v) for k, v in fp.attributes.items()},
        health=fp.health.value,  # type: ignore[arg-type]
        health_description=fp.description,
    )


def capabilities_to_proto(caps: Capabilities) -> driver_pb2.DriverCapabilities:
    return driver_pb2.DriverCapabilities(
        send_signals=caps.send_signals,
        exec=caps.exec,
        fs_isolation=caps.fs_isolation.value,  # type: ignore[arg-type]
        network_isolation_modes=[m.value for m in caps.network_modes],  # type: ignore[misc]
        must_create_network=caps.must_create_network,
        mount_configs=(
            driver_pb2.DriverCapabilities.ANY_MOUNTS if caps.mounts else driver_pb2.DriverCapabilities.NO_MOUNTS
        ),
        disable_log_collection=caps.disable_log_collection,
        dynamic_workload_users=caps.dynamic_workload_users,
    )


def timestamp(epoch: float) -> Timestamp:
    # Split before scaling: epoch * 1e9 in a float loses the sub-microsecond part.
    seconds = math.floor(epoch)
    nanos = min(round((epoch - seconds) * 1e9), 999_999_999)
    return Timestamp(seconds=seconds, nanos=nanos)


def event_to_proto(event: TaskEvent) -> driver_pb2.DriverTaskEvent:
    return driver_pb2.DriverTaskEvent(
        task_id=event.task_id,
        alloc_id=event.alloc_id,
        task_name=event.task_name,
        timestamp=timestamp(event.timestamp),
        message=event.message,
        annotations=event.annotations,
    )


def _resources_from_proto(msg: driver_pb2.Resources) -> Resources:
    allocated, linux = msg.allocated_resources, msg.linux_resources
    return Resources(
        cpu_mhz=allocated.cpu.cpu_shares,
        memory_mb=allocated.memory.memory_mb,
        memory_max_mb=allocated.memory.memory_max_mb,
        cpu_period=linux.cpu_period,
        cpu_quota=linux.cpu_quota,
        cpu_shares=linux.cpu_shares,
        memory_limit_bytes=linux.memory_limit_bytes,
        oom_score_adj=linux.oom_score_adj,
        cpuset_cpus=linux.cpuset_cpus,
        cpuset_cgroup=linux.cpuset_cgroup,
        ports=tuple(PortMapping(p.label, p.value, p.to, p.host_ip) for p in msg.ports),
    )


def task_from_proto(msg: driver_pb2.TaskConfig) -> TaskRequest:
    """Nomad's TaskConfig as the driver sees it (every field the driver may use)."""
    spec = msg.network_isolation_spec
    network = NetworkIsolation(mode=NetworkMode(spec.mode), path=spec.path, hostname=spec.hostsConfig.hostname)
    dns = None
    if msg.HasField("dns"):
        dns = DNS(servers=tuple(msg.dns.servers), searches=tuple(msg.dns.searches), options=tuple(msg.dns.options))
    return TaskRequest(
        id=msg.id,
        name=msg.name,
        alloc_id=msg.alloc_id,
        driver_config=msg.msgpack_driver_config,
        env=dict(msg.env),
        alloc_dir=msg.alloc_dir,
        stdout_path=msg.stdout_path,
        stderr_path=msg.stderr_path,
        user=msg.user,
        resources=_resources_from_proto(msg.resources),
        mounts=tuple(Mount(m.task_path, m.host_path, m.readonly, m.propagation_mode) for m in msg.mounts),
        devices=tuple(Device(d.task_path, d.host_path, d.cgroup_permissions or "rwm") for d in msg.devices),
        network=network,
        dns=dns,
        job_id=msg.job_id,
        job_name=msg.job_name,
        task_group=msg.task_group_name,
        namespace=msg.namespace,
        node_id=msg.node_id,
        node_name=msg.node_name,
    )


def exit_result_to_proto(result: ExitResult) -> driver_pb2.ExitResult:
    return driver_pb2.ExitResult(exit_code=result.exit_code, signal=result.signal, oom_killed=result.oom_killed)


_CPU_FIELDS = {
    "System Mode": driver_pb2.CPUUsage.SYSTEM_MODE,
    "User Mode": driver_pb2.CPUUsage.USER_MODE,
    "Total Ticks": driver_pb2.CPUUsage.TOTAL_TICKS,
    "Throttled Periods": driver_pb2.CPUUsage.THROTTLED_PERIODS,
    "Throttled Time": driver_pb2.CPUUsage.THROTTLED_TIME,
    "Percent": driver_pb2.CPUUsage.PERCENT,
}
_MEMORY_FIELDS = {
    "RSS": driver_pb2.MemoryUsage.RSS,
    "Cache": driver_pb2.MemoryUsage.CACHE,
    "Max Usage": driver_pb2.MemoryUsage.MAX_USAGE,
    "Kernel Usage": driver_pb2.MemoryUsage.KERNEL_USAGE,
    "Kernel Max Usage": driver_pb2.MemoryUsage.KERNEL_MAX_USAGE,
    "Usage": driver_pb2.MemoryUsage.USAGE,
    "Swap": driver_pb2.MemoryUsage.SWAP,
}


def _cpu_to_proto(cpu: CpuUsage) -> driver_pb2.CPUUsage:
    return driver_pb2.CPUUsage(
        system_mode=cpu.system_mode,
        user_mode=cpu.user_mode,
        total_ticks=cpu.total_ticks,
        throttled_periods=cpu.throttled_periods,
        throttled_time=cpu.throttled_time_ns,
        percent=cpu.percent,
        measured_fields=[_CPU_FIELDS[name] for name in cpu.measured],
    )


def _memory_to_proto(memory: MemoryUsage) -> driver_pb2.MemoryUsage:
    return driver_pb2.MemoryUsage(
        rss=memory.rss,
        cache=memory.cache,
        swap=memory.swap,
        usage=memory.usage,
        max_usage=memory.max_usage,
        kernel_usage=memory.kernel_usage,
        kernel_max_usage=memory.kernel_max_usage,
        measured_fields=[_MEMORY_FIELDS[name] for name in memory.measured],
    )


def _usage_to_proto(usage: ResourceUsage) -> driver_pb2.TaskResourceUsage:
    return driver_pb2.TaskResourceUsage(cpu=_cpu_to_proto(usage.cpu), memory=_memory_to_proto(usage.memory))


def stats_to_proto(stats: TaskStats) -> driver_pb2.TaskStatsResponse:
    """A TaskStats sample with the fields Nomad's client dereferences always set (protocol.md §2.4)."""
    return driver_pb2.TaskStatsResponse(
        stats=driver_pb2.TaskStats(
            id=stats.task_id,
            timestamp=timestamp(stats.timestamp),
            agg_resource_usage=_usage_to_proto(stats.total),
            resource_usage_by_pid={str(pid): _usage_to_proto(u) for pid, u in stats.by_pid.items()},
        )
    )


def task_status_to_proto(view: TaskStatusView) -> driver_pb2.TaskStatus:
    """Nomad dereferences started_at, completed_at and result: always set them."""
    return driver_pb2.TaskStatus(
        id=view.id,
        name=view.name,
        state=driver_pb2.RUNNING if view.running else driver_pb2.EXITED,
        started_at=timestamp(view.started_at),
        completed_at=timestamp(view.completed_at),
        result=exit_result_to_proto(view.result),
    )


def network_override_to_proto(network: DriverNetwork | None) -> driver_pb2.NetworkOverride | None:
    """StartTask/InspectTask's network_override (address_mode = "driver" services); None to leave it unset."""
    if network is None:
        return None
    return driver_pb2.NetworkOverride(
        port_map=dict(network.port_map), addr=network.addr, auto_advertise=network.auto_advertise
    )
