"""go-plugin's handshake: the magic cookie, protocol versions, the listen address and the line.

Facts (protocol.md §1.2 and §1.3): the host sets NOMAD_PLUGIN_MAGIC_COOKIE and
PLUGIN_PROTOCOL_VERSIONS; the plugin answers with ``CORE|APP|NETWORK|ADDRESS|grpc|`` on stdout,
only once it is serving. Go plugins listen on a unix socket made in PLUGIN_UNIX_SOCKET_DIR or
TMPDIR; we do the same and fall back to 127.0.0.1 in PLUGIN_MIN_PORT..PLUGIN_MAX_PORT when the
socket path would be too long.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Final

COOKIE_KEY: Final = "NOMAD_PLUGIN_MAGIC_COOKIE"
COOKIE_VALUE: Final = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
CORE_PROTOCOL_VERSION: Final = 1
APP_PROTOCOL_VERSION: Final = 2
UNIX_PATH_MAX: Final = 107  # sun_path is 108 bytes including the NUL

NOT_A_PROGRAM: Final = (
    "This binary is a plugin. These are not meant to be executed directly.\n"
    "Please execute the program that consumes these plugins, which will\n"
    "load any plugins automatically.\n"
    "(nomad-rkt-driver is a Nomad task driver: put it in the agent's plugin_dir, or run\n"
    "`nomad-rkt-driver --help` for the commands it offers on its own.)\n"
)


class HandshakeError(Exception):
    """The host and this plugin cannot talk; the message is printed on stderr before exit 1."""


def has_cookie(env: dict[str, str] | os._Environ[str]) -> bool:
    return env.get(COOKIE_KEY) == COOKIE_VALUE


def check_versions(env: dict[str, str] | os._Environ[str]) -> None:
    """Refuse a host that does not accept app protocol 2 (go-plugin's own behaviour)."""
    offered = env.get("PLUGIN_PROTOCOL_VERSIONS", "")
    if not offered:
        return  # an old host sends none and expects the default, which is ours
    versions = {v.strip() for v in offered.split(",") if v.strip()}
    if str(APP_PROTOCOL_VERSION) not in versions:
        raise HandshakeError(
            f"Incompatible API version with plugin. Plugin version: {APP_PROTOCOL_VERSION}, "
            f"Client versions: {sorted(versions)} (nomad-rkt-driver speaks Nomad's plugin protocol 2)"
        )


@dataclass(frozen=True)
class Listen:
    """Where the gRPC server listens, and how the handshake line names it."""

    network: str  # "unix" or "tcp"
    address: str  # socket path, or 127.0.0.1:PORT once bound

    @property
    def grpc_target(self) -> str:
        return f"unix:{self.address}" if self.network == "unix" else self.address

    def line(self) -> str:
        return f"{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|{self.network}|{self.address}|grpc|"


def unix_socket_path(env: dict[str, str] | os._Environ[str]) -> str | None:
    """A fresh socket path like Go's os.CreateTemp(dir, "plugin*"), or None if it would be too long."""
    directory = env.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="plugin", dir=directory)
    os.close(fd)
    os.unlink(path)  # the name is ours; the server creates the socket there
    return path if len(path.encode()) <= UNIX_PATH_MAX else None


def tcp_port_range(env: dict[str, str] | os._Environ[str]) -> range:
    low = int(env.get("PLUGIN_MIN_PORT") or 10000)
    high = int(env.get("PLUGIN_MAX_PORT") or 25000)
    if low > high:
        raise HandshakeError(f"PLUGIN_MIN_PORT {low} is above PLUGIN_MAX_PORT {high}")
    return range(low, high + 1)
