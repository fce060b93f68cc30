# mypy: disallow-untyped-calls=False
# (grpcio-tools writes no types for the *_pb2_grpc helpers)
"""The floor: the smallest honest go-plugin server a Python plugin can be.

grpc.aio server on a unix socket, the health service with "plugin" = SERVING, a GRPCController whose
Shutdown stops the server and lets the process exit, and the handshake line on stdout. Nothing else,
so the benchmark can tell what the real plugin adds on top of Python + grpcio themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nomad_rkt_driver.protocol.gen import grpc_controller_pb2, grpc_controller_pb2_grpc


class Controller(grpc_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    async def Shutdown(self, request: grpc_controller_pb2.Empty, context: Any) -> grpc_controller_pb2.Empty:
        asyncio.get_running_loop().call_soon(self._stop.set)  # answer first, then stop
        return grpc_controller_pb2.Empty()


async def serve() -> None:
    stop = asyncio.Event()
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(Controller(stop), server)
    fd, path = tempfile.mkstemp(prefix="plugin")  # like Go's os.CreateTemp("", "plugin*")
    os.close(fd)
    os.unlink(path)
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    sys.stdout.write(f"1|2|unix|{path}|grpc|\n")
    sys.stdout.flush()
    try:
        await stop.wait()
        await server.stop(0.5)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


if __name__ == "__main__":
    asyncio.run(serve())
