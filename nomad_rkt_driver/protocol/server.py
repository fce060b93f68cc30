"""The plugin process: a grpc.aio server, the handshake line, and a clean exit on Shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nomad_rkt_driver.driver.driver import RktDriver
from nomad_rkt_driver.protocol import handshake
from nomad_rkt_driver.protocol.gen import base_pb2_grpc, driver_pb2_grpc, grpc_controller_pb2_grpc, grpc_stdio_pb2_grpc
from nomad_rkt_driver.protocol.servicers import (
    BasePluginServicer,
    ControllerServicer,
    DriverServicer,
    StdioServicer,
)

log = logging.getLogger(__name__)
STOP_GRACE_S: Final = 0.5  # go-plugin waits 2 s after Shutdown before SIGKILL
MAX_MESSAGE: Final = 2**31 - 1  # Nomad's client dials with MaxInt32 send/recv limits
OPTIONS: Final = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]


async def _bind(server: grpc.aio.Server) -> handshake.Listen:
    path = handshake.unix_socket_path(os.environ)
    if path is not None:
        server.add_insecure_port(f"unix:{path}")
        return handshake.Listen("unix", path)
    for port in handshake.tcp_port_range(os.environ):
        try:
            if server.add_insecure_port(f"127.0.0.1:{port}"):
                return handshake.Listen("tcp", f"127.0.0.1:{port}")
        except RuntimeError:
            continue
    raise handshake.HandshakeError("no free TCP port between PLUGIN_MIN_PORT and PLUGIN_MAX_PORT")


def _ignore_host_signals() -> None:
    # Ctrl-C in the agent's terminal reaches the whole process group; the agent, not the
    # terminal, decides when we stop. A dead parent (SIGHUP) must not stop us either: Nomad
    # re-attaches to a running plugin after a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


async def serve() -> None:
    """Serve until the host calls GRPCController.Shutdown (or SIGTERM)."""
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, shutdown.set)
    driver = RktDriver()
    server = grpc.aio.server(options=OPTIONS)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(ControllerServicer(shutdown), server)
    grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(StdioServicer(shutdown), server)
    base_pb2_grpc.add_BasePluginServicer_to_server(BasePluginServicer(driver), server)
    driver_pb2_grpc.add_DriverServicer_to_server(DriverServicer(driver), server)
    listen = await _bind(server)
    try:
        await server.start()
        sys.stdout.write(listen.line() + "\n")
        sys.stdout.flush()
        sys.stdout = sys.stderr  # stdout belongs to the handshake alone; stray prints go to the log
        log.info("plugin serving", extra={"network": listen.network, "address": listen.address, "pid": os.getpid()})
        await shutdown.wait()
        await server.stop(STOP_GRACE_S)
    finally:
        if listen.network == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listen.address)
    log.debug("plugin stopped")


def run() -> int:
    """Entry point in plugin mode: the caller has checked the cookie."""
    _ignore_host_signals()
    try:
        handshake.check_versions(os.environ)
    except handshake.HandshakeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    asyncio.run(serve())
    return 0
