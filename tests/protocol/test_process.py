"""The plugin as a process: handshake, stdout discipline, stderr log format, signals, exit."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nomad_rkt_driver.protocol.gen import (
    base_pb2,
    driver_pb2,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
)

from .plugin import COOKIE, PLUGIN, Plugin, launch, nomad_env

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


def test_without_the_cookie_it_explains_and_exits_1() -> None:
    env = {k: v for k, v in nomad_env().items() if k != COOKIE[0]}
    done = subprocess.run([str(PLUGIN)], env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"This binary is a plugin" in done.stderr


def test_a_host_without_protocol_2_is_refused() -> None:
    done = subprocess.run(
        [str(PLUGIN)],
        env=nomad_env(PLUGIN_PROTOCOL_VERSIONS="1"),
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1 and done.stdout == b""
    assert b"Incompatible API version" in done.stderr


def test_handshake_then_nothing_else_on_stdout_and_hclog_on_stderr(plugin: Plugin) -> None:
    assert re.fullmatch(r"1\|2\|unix\|/[^|]+\|grpc\|\n", plugin.handshake)
    socket_path = plugin.handshake.split("|")[3]
    assert os.path.exists(socket_path)
    plugin.base.PluginInfo(base_pb2.PluginInfoRequest())
    assert plugin.shutdown() < 2.0
    rest, entries = plugin.drain()
    assert rest == b"", "nothing but the handshake line may reach stdout"
    assert entries, "the plugin should log at least its start"
    for entry in entries:
        assert entry["@level"] in {"trace", "debug", "info", "warn", "error"}
        assert isinstance(entry["@message"], str)
        assert isinstance(entry["@timestamp"], str) and TIMESTAMP.match(entry["@timestamp"])
    assert any(e["@message"] == "plugin serving" for e in entries)
    assert not os.path.exists(socket_path), "the socket is removed at exit"


def test_health_service_says_plugin_is_serving(plugin: Plugin) -> None:
    answer = health_pb2_grpc.HealthStub(plugin.channel).Check(health_pb2.HealthCheckRequest(service="plugin"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_stdio_stream_stays_open_and_broker_is_unimplemented(plugin: Plugin) -> None:
    from google.protobuf import empty_pb2

    stream = grpc_stdio_pb2_grpc.GRPCStdioStub(plugin.channel).StreamStdio(empty_pb2.Empty())
    try:
        time.sleep(0.3)
        assert not stream.done(), "StreamStdio should stay open (there is no stdio data to mirror)"
    finally:
        stream.cancel()
    broker = plugin.channel.stream_stream("/plugin.GRPCBroker/StartStream")
    try:
        list(broker(iter(()), timeout=5))
        raise AssertionError("the broker is not offered")
    except grpc.RpcError as err:
        assert err.code() is grpc.StatusCode.UNIMPLEMENTED


def test_sigint_and_sighup_are_ignored(plugin: Plugin) -> None:
    plugin.proc.send_signal(signal.SIGINT)
    plugin.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert plugin.proc.poll() is None
    assert plugin.base.PluginInfo(base_pb2.PluginInfoRequest()).name == "rkt"


def test_shutdown_is_fast_with_streams_open(plugin: Plugin) -> None:
    fingerprints = plugin.driver.Fingerprint(driver_pb2.FingerprintRequest())
    events = plugin.driver.TaskEvents(driver_pb2.TaskEventsRequest())
    next(fingerprints)
    assert plugin.shutdown() < 2.0
    assert plugin.proc.returncode == 0
    events.cancel()


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_keeps_serving_after_its_parent_dies(tmp_path: Path) -> None:
    # A shell starts the plugin in the background and is then killed, like an agent that crashed:
    # Nomad re-attaches to the same address, so the plugin must stay up.
    script = f'"{PLUGIN}" & echo $! > {tmp_path}/pid; wait'
    running = launch(nomad_env(), command=["bash", "-c", script])
    try:
        running.proc.kill()
        running.proc.wait()
        pid = int((tmp_path / "pid").read_text())
        time.sleep(0.3)
        assert alive(pid), "the plugin died with its parent"
        assert running.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=5).name == "rkt"
        grpc_controller_pb2_grpc.GRPCControllerStub(running.channel).Shutdown(grpc_controller_pb2.Empty())
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if not alive(pid):
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("orphaned plugin did not exit within 2 s of Shutdown")
    finally:
        running.kill()


def test_tcp_fallback_when_the_socket_dir_is_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 110)
    deep.mkdir()
    running = launch(nomad_env(PLUGIN_UNIX_SOCKET_DIR=str(deep), PLUGIN_MIN_PORT="21000", PLUGIN_MAX_PORT="21999"))
    try:
        _, _, network, address, protocol, *_ = running.handshake.strip().split("|")
        host, port = address.split(":")
        assert (network, host, protocol) == ("tcp", "127.0.0.1", "grpc") and 21000 <= int(port) <= 21999
        assert running.base.PluginInfo(base_pb2.PluginInfoRequest()).name == "rkt"
        assert running.shutdown() < 2.0
    finally:
        running.kill()


def test_start_up_needs_no_heavy_imports() -> None:
    # Nomad spawns the plugin three times at boot: keep optional libraries and the modules that
    # build many classes (loaded by the first RPC that needs them) out of the path to the handshake.
    heavy = (
        "hvac",
        "requests",
        "psutil",
        "hcl2",
        "lark",
        "nomad_rkt_driver.types",
        "nomad_rkt_driver.config.plugin",
        "nomad_rkt_driver.protocol.convert",
        "nomad_rkt_driver.driver.tasks",
    )
    code = (
        "import sys; sys.argv=['x']; "
        "import nomad_rkt_driver.protocol.server, nomad_rkt_driver.cli.main; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [str(PLUGIN.parent / "python"), "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
