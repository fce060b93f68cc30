"""Every base RPC and the driver RPCs as they stand, over a real connection to the plugin process."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgpack
import pytest
from google.rpc import status_pb2

from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2, recoverable_error_pb2

from .plugin import Plugin

PLUGIN_KEYS = (
    "runtime",
    "conmon",
    "cni_path",
    "cni_config_dir",
    "default_network_subnet",
    "default_network_subnet6",
    "data_dir",
    "fingerprint_period",
    "allow_privileged",
    "allow_caps",
    "cgroup_parent",
    "volumes",
    "allow_devices",
    "pids_limit",
    "vault",
    "auth",
    "trust",
    "gc",
    "trust_dir",
    "default_image_transport",
    "tls_ca_file",
    "pull_activity_timeout",
)
TASK_KEYS = (
    "image",
    "command",
    "args",
    "port_map",
    "ports",
    "net",
    "dns_servers",
    "dns_search_domains",
    "dns_options",
    "extra_hosts",
    "insecure_options",
    "trust_prefix",
    "entrypoint",
    "working_dir",
    "hostname",
    "readonly_rootfs",
    "cap_add",
    "cap_drop",
    "privileged",
    "volumes",
    "devices",
    "pids_limit",
    "oom_score_adj",
    "no_overlay",
    "force_pull",
    "image_pull_timeout",
    "auth",
)


def encode(keys: tuple[str, ...], **values: Any) -> bytes:
    """Nomad's encoding: every schema key, None where unset."""
    body: dict[str, Any] = dict.fromkeys(keys)
    body.update(values)
    return msgpack.packb(body)


def set_config(plugin: Plugin, data: bytes, *, nomad: bool = True) -> None:
    request = base_pb2.SetConfigRequest(msgpack_config=data, plugin_api_version="v0.1.0")
    if nomad:
        cores = [base_pb2.ClientTopologyCore(core_id=i, base_speed=2400) for i in range(2)]
        request.nomad_config.CopyFrom(
            base_pb2.NomadConfig(
                driver=base_pb2.NomadDriverConfig(
                    ClientMinPort=14000, ClientMaxPort=14512, Topology=base_pb2.ClientTopology(cores=cores)
                )
            )
        )
    plugin.base.SetConfig(request, timeout=10)


def refused(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def task(data: bytes) -> driver_pb2.TaskConfig:
    return driver_pb2.TaskConfig(id="8f1c2a/web/abcd1234", name="web", alloc_id="8f1c2a", msgpack_driver_config=data)


@pytest.fixture
def configured(plugin: Plugin, data_dir: Path) -> Iterator[Plugin]:
    set_config(plugin, encode(PLUGIN_KEYS, data_dir=str(data_dir)))
    yield plugin


def test_plugin_info(plugin: Plugin) -> None:
    info = plugin.base.PluginInfo(base_pb2.PluginInfoRequest())
    assert info.type == base_pb2.DRIVER and info.name == "rkt"
    assert "v0.1.0" in info.plugin_api_versions
    assert info.plugin_version == "0.1.0"


def test_config_schemas_are_objects_with_every_attribute(plugin: Plugin) -> None:
    spec = plugin.base.ConfigSchema(base_pb2.ConfigSchemaRequest()).spec
    assert set(spec.object.attributes) == set(PLUGIN_KEYS)
    task_spec = plugin.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest()).spec
    assert set(task_spec.object.attributes) == set(TASK_KEYS)
    assert task_spec.object.attributes["image"].Attr.required


def test_set_config_accepts_valid_empty_and_validation_launches(plugin: Plugin, data_dir: Path) -> None:
    set_config(plugin, encode(PLUGIN_KEYS, data_dir=str(data_dir)), nomad=False)
    set_config(plugin, encode(PLUGIN_KEYS, data_dir=str(data_dir)), nomad=False)  # Nomad sends it twice
    set_config(plugin, b"")  # a plugin without a config block
    set_config(plugin, encode(PLUGIN_KEYS, data_dir=str(data_dir), fingerprint_period="45s"))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (encode(PLUGIN_KEYS, bogus=1), "bogus: is not a known attribute"),
        (encode(PLUGIN_KEYS, runtime=["x"]), "runtime: expected a string"),
        (encode(PLUGIN_KEYS, fingerprint_period="-5s"), "fingerprint_period: must be at least 1s"),
        (b"\xc1\x00\xff", "could not be decoded"),
        (encode(PLUGIN_KEYS, cni_path=["relative"]), "cni_path"),
    ],
)
def test_set_config_rejects_bad_values_naming_the_attribute(plugin: Plugin, data: bytes, needle: str) -> None:
    err = refused(plugin.base.SetConfig, base_pb2.SetConfigRequest(msgpack_config=data))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.details() and 'plugin "rkt" config' in err.details()
    assert plugin.base.PluginInfo(base_pb2.PluginInfoRequest()).name == "rkt"  # still serving


def test_capabilities_are_truthful(plugin: Plugin) -> None:
    caps = plugin.driver.Capabilities(driver_pb2.CapabilitiesRequest()).capabilities
    assert caps.fs_isolation == driver_pb2.DriverCapabilities.IMAGE
    assert caps.send_signals and caps.exec
    assert list(caps.network_isolation_modes) == [
        driver_pb2.NetworkIsolationSpec.HOST,
        driver_pb2.NetworkIsolationSpec.GROUP,
    ]


def test_fingerprint_answers_at_once_and_stays_open(configured: Plugin) -> None:
    stream = configured.driver.Fingerprint(driver_pb2.FingerprintRequest())
    first = next(stream)
    assert first.health == driver_pb2.FingerprintResponse.HEALTHY, first.health_description
    assert first.attributes["driver.rkt.version"].string_val == "0.1.0"
    assert first.attributes["driver.rkt.runtime.version"].string_val
    assert not stream.done()
    stream.cancel()
    # A client that went away mid-stream does not disturb the plugin.
    assert configured.base.PluginInfo(base_pb2.PluginInfoRequest()).name == "rkt"


def test_second_set_config_wins_and_wakes_fingerprints(configured: Plugin, data_dir: Path) -> None:
    stream = configured.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=30)
    assert next(stream).health == driver_pb2.FingerprintResponse.HEALTHY
    set_config(configured, encode(PLUGIN_KEYS, data_dir=str(data_dir), runtime="/nonexistent/runc"))
    changed = next(stream)  # re-sent on change, long before the 30 s period
    stream.cancel()
    assert changed.health == driver_pb2.FingerprintResponse.UNDETECTED
    assert "/nonexistent/runc" in changed.health_description


def test_task_events_stream_stays_open(configured: Plugin) -> None:
    events = configured.driver.TaskEvents(driver_pb2.TaskEventsRequest())
    time.sleep(1.5)
    assert not events.done(), "TaskEvents must stay open: an ended stream makes Nomad re-open it in a hot loop"
    events.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(events)
    assert info.value.code() is grpc.StatusCode.CANCELLED  # ended by us, not by the plugin


def test_start_task_on_an_unready_host_is_recoverable(configured: Plugin, data_dir: Path) -> None:
    set_config(configured, encode(PLUGIN_KEYS, data_dir=str(data_dir), runtime="/nonexistent/runc"))
    err = refused(
        configured.driver.StartTask, driver_pb2.StartTaskRequest(task=task(encode(TASK_KEYS, image="busybox")))
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "/nonexistent/runc" in err.details()
    blob = dict(err.trailing_metadata())["grpc-status-details-bin"]
    detail = status_pb2.Status.FromString(blob).details[0]
    assert detail.type_url == "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError"
    recoverable = recoverable_error_pb2.RecoverableError()
    assert detail.Unpack(recoverable) and recoverable.recoverable


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"insecure_options": ["bogus"]}, "insecure_options"),
        ({}, "image: is required"),
        ({"image": "busybox", "net": ["host", "default"]}, "net"),
    ],
)
def test_start_task_rejects_bad_task_config(configured: Plugin, values: dict[str, Any], needle: str) -> None:
    values = {"image": "busybox", **values} if values else values
    err = refused(configured.driver.StartTask, driver_pb2.StartTaskRequest(task=task(encode(TASK_KEYS, **values))))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.details() and 'task "web" rkt config' in err.details()
    assert "grpc-status-details-bin" not in dict(err.trailing_metadata() or ())


def test_unsigned_docker_images_are_refused_by_default(configured: Plugin) -> None:
    # Secure by default: no key is trusted for docker.io/library/busybox, so it is refused unless the job opts out.
    err = refused(
        configured.driver.StartTask, driver_pb2.StartTaskRequest(task=task(encode(TASK_KEYS, image="busybox")))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert 'insecure_options = ["image"]' in err.details()


def test_unknown_tasks(configured: Plugin) -> None:
    driver = configured.driver
    for call, request in [
        (driver.WaitTask, driver_pb2.WaitTaskRequest(task_id="x/y/z")),
        (driver.InspectTask, driver_pb2.InspectTaskRequest(task_id="x/y/z")),
        (driver.ExecTask, driver_pb2.ExecTaskRequest(task_id="x/y/z", command=["true"])),
        (driver.SignalTask, driver_pb2.SignalTaskRequest(task_id="x/y/z", signal="SIGHUP")),
    ]:
        assert refused(call, request).code() is grpc.StatusCode.NOT_FOUND
    # A handle without our driver state cannot be recovered: Nomad then restarts the task.
    handle = driver_pb2.TaskHandle(version=1, config=task(b""))
    err = refused(driver.RecoverTask, driver_pb2.RecoverTaskRequest(handle=handle))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "no driver state" in err.details()
    stats = driver.TaskStats(driver_pb2.TaskStatsRequest(task_id="x/y/z"))
    with pytest.raises(grpc.RpcError) as info:
        next(stats)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    # Stop and Destroy are idempotent: Nomad retries errors for minutes.
    driver.StopTask(driver_pb2.StopTaskRequest(task_id="x/y/z", signal="SIGTERM"), timeout=10)
    driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id="x/y/z", force=True), timeout=10)


def test_bad_signal_names_are_refused_clearly(configured: Plugin) -> None:
    err = refused(configured.driver.SignalTask, driver_pb2.SignalTaskRequest(task_id="x/y/z", signal="SIGBOGUS"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "SIGHUP" in err.details()


def test_network_rpcs_are_not_offered(configured: Plugin) -> None:
    err = refused(configured.driver.CreateNetwork, driver_pb2.CreateNetworkRequest(alloc_id="a"))
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED


def test_exec_streaming_for_unknown_task(configured: Plugin) -> None:
    setup = driver_pb2.ExecTaskStreamingRequest(
        setup=driver_pb2.ExecTaskStreamingRequest.Setup(task_id="x/y/z", command=["sh"])
    )
    with pytest.raises(grpc.RpcError) as info:
        list(configured.driver.ExecTaskStreaming(iter([setup]), timeout=10))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
