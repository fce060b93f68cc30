"""Starting the plugin executable exactly as a Nomad agent does, for the protocol tests.

Deliberately independent of nomad_rkt_driver.cli.plugin_client: these tests check the plugin
from the outside, with their own reading of the handshake.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from nomad_rkt_driver.protocol.gen import base_pb2_grpc, driver_pb2_grpc, grpc_controller_pb2, grpc_controller_pb2_grpc

COOKIE = ("NOMAD_PLUGIN_MAGIC_COOKIE", "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255")
PLUGIN = Path(sys.executable).parent / "nomad-rkt-driver"


# Sockets go to a directory of the test run: a plugin killed with SIGKILL cannot remove its own.
SOCKET_DIR = tempfile.mkdtemp(prefix="rkt-plugin-sockets-")
atexit.register(shutil.rmtree, SOCKET_DIR, True)


def nomad_env(**extra: str) -> dict[str, str]:
    """The environment go-plugin gives a Nomad plugin (agent env + handshake variables)."""
    env = dict(os.environ, PLUGIN_UNIX_SOCKET_DIR=SOCKET_DIR)
    env.update(
        {
            COOKIE[0]: COOKIE[1],
            "PLUGIN_PROTOCOL_VERSIONS": "2",
            "PLUGIN_MIN_PORT": "10000",
            "PLUGIN_MAX_PORT": "25000",
            "NOMAD_RKT_LOG_LEVEL": "debug",
        }
    )
    env.update(extra)
    return env


@dataclass
class Plugin:
    proc: subprocess.Popen[bytes]
    handshake: str
    channel: grpc.Channel
    stderr_lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        # Read stderr continuously, as go-plugin does, so a chatty plugin never blocks on a full pipe.
        def pump() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                self.stderr_lines.append(raw.decode())

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()

    @property
    def base(self) -> Any:
        return base_pb2_grpc.BasePluginStub(self.channel)

    @property
    def driver(self) -> Any:
        return driver_pb2_grpc.DriverStub(self.channel)

    def shutdown(self) -> float:
        """GRPCController.Shutdown, then the seconds until the process exited (go-plugin allows 2)."""
        if self.proc.poll() is not None:
            return 0.0  # already shut down by the test itself
        start = time.monotonic()
        grpc_controller_pb2_grpc.GRPCControllerStub(self.channel).Shutdown(grpc_controller_pb2.Empty(), timeout=5)
        self.proc.wait(timeout=10)
        return time.monotonic() - start

    def drain(self) -> tuple[bytes, list[dict[str, Any]]]:
        """After exit: what else reached stdout, and every stderr line parsed as JSON."""
        assert self.proc.stdout is not None and self._reader is not None
        rest = self.proc.stdout.read()
        self._reader.join(timeout=10)
        return rest, [json.loads(line) for line in self.stderr_lines if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.channel.close()
        if self._reader is not None:
            self._reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def launch(env: dict[str, str] | None = None, command: list[str] | None = None) -> Plugin:
    """Exec the plugin like go-plugin, wait for the handshake line, dial it like Nomad."""
    proc = subprocess.Popen(
        command or [str(PLUGIN)],
        env=env or nomad_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "no handshake line within 30 s"
    line = proc.stdout.readline().decode()
    parts = line.strip().split("|")
    assert len(parts) >= 5 and parts[:2] == ["1", "2"] and parts[4] == "grpc", f"bad handshake {line!r}"
    target = f"unix:{parts[3]}" if parts[2] == "unix" else parts[3]
    options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    return Plugin(proc=proc, handshake=line, channel=channel)
