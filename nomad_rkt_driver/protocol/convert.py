"""Pure conversions between protobuf messages and domain types (no logic beyond mapping)."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from nomad_rkt_driver.protocol.gen import attribute_pb2, base_pb2, driver_pb2
from nomad_rkt_driver.types import AgentConfig, Capabilities, Core, Fingerprint, TaskEvent, TaskRequest, Topology

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


def task_from_proto(msg: driver_pb2.TaskConfig) -> TaskRequest:
    return TaskRequest(
        id=msg.id,
        name=msg.name,
        alloc_id=msg.alloc_id,
        driver_config=msg.msgpack_driver_config,
        env=dict(msg.env),
        alloc_dir=msg.alloc_dir,
        stdout_path=msg.stdout_path,
        stderr_path=msg.stderr_path,
    )
