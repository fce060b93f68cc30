"""Launching the plugin executable the way Nomad does, and talking to it over gRPC.

Used by the operator commands (and later the local runner) so that they exercise the very
process a Nomad agent would load, never an in-process shortcut.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Final

import grpc

from nomad_rkt_driver.protocol import handshake
from nomad_rkt_driver.protocol.gen import base_pb2_grpc, driver_pb2_grpc, grpc_controller_pb2, grpc_controller_pb2_grpc

HANDSHAKE_TIMEOUT_S: Final = 60.0  # go-plugin's StartTimeout
EXIT_WAIT_S: Final = 2.0


def plugin_command() -> list[str]:
    """The plugin executable: the installed console script, else this interpreter's module."""
    script = shutil.which(
        "nomad-rkt-driver", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    return [script] if script else [sys.executable, "-m", "nomad_rkt_driver"]


class PluginProcess:
    """A plugin child process with its handshake done and a channel open."""

    def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("NOMAD_RKT_LOG_LEVEL", "warn")  # operator commands show results, not chatter
        child_env[handshake.COOKIE_KEY] = handshake.COOKIE_VALUE
        child_env["PLUGIN_PROTOCOL_VERSIONS"] = str(handshake.APP_PROTOCOL_VERSION)
        self.proc = subprocess.Popen(
            command or plugin_command(),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._stderr = threading.Thread(target=self._relay_logs, daemon=True)
        self._stderr.start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        parts = line.split("|")
        if len(parts) < 5 or parts[0] != "1" or parts[1] != "2" or parts[4] != "grpc":
            self.proc.kill()
            raise RuntimeError(f"plugin did not complete the go-plugin handshake (got {line!r})")
        target = f"unix:{parts[3]}" if parts[2] == "unix" else parts[3]
        self.channel = grpc.insecure_channel(target)
        self.base = base_pb2_grpc.BasePluginStub(self.channel)
        self.driver = driver_pb2_grpc.DriverStub(self.channel)
        self._controller = grpc_controller_pb2_grpc.GRPCControllerStub(self.channel)

    def _relay_logs(self) -> None:
        """Show the plugin's hclog lines to a person: "rkt plugin: warn: message"."""
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            text = raw.decode(errors="replace").strip()
            try:
                entry = json.loads(text)
                text = f"{entry.get('@level', 'info')}: {entry.get('@message', '')}"
            except (ValueError, AttributeError):
                pass
            if text:
                print(f"rkt plugin: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Ask the plugin to shut down like go-plugin's Kill(): Shutdown, wait 2 s, then SIGKILL."""
        with contextlib.suppress(grpc.RpcError):
            self._controller.Shutdown(grpc_controller_pb2.Empty(), timeout=EXIT_WAIT_S)
        self.channel.close()
        deadline = time.monotonic() + EXIT_WAIT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> PluginProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
