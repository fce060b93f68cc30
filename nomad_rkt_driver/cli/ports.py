"""Port allocation for the local runner, as a Nomad client does: static ports as asked, dynamic ones
picked from 20000-32000, no two the same, each free on the host IP when allocated."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from typing import Final

from nomad_rkt_driver.cli.jobfile import PortSpec

DYNAMIC_MIN: Final = 20000
DYNAMIC_MAX: Final = 32000
ATTEMPTS: Final = 200


class PortError(ValueError):
    """A static port is taken or no dynamic port could be found."""


@dataclass(frozen=True)
class Allocated:
    label: str
    value: int  # the host port
    to: int
    host_ip: str


def _free(host_ip: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host_ip, port))
            except OSError:
                return False
    return True


def allocate(specs: tuple[PortSpec, ...], host_ip: str = "127.0.0.1") -> tuple[Allocated, ...]:
    """One host port per label; raises PortError naming the label."""
    taken: set[int] = set()
    result: list[Allocated] = []
    for spec in specs:
        if spec.static:
            if spec.static in taken or not _free(host_ip, spec.static):
                raise PortError(f'port "{spec.label}": static port {spec.static} is already in use on {host_ip}')
            port = spec.static
        else:
            port = next(
                (
                    p
                    for p in (random.randint(DYNAMIC_MIN, DYNAMIC_MAX) for _ in range(ATTEMPTS))
                    if p not in taken and _free(host_ip, p)
                ),
                0,
            )
            if not port:
                raise PortError(f'port "{spec.label}": no free dynamic port in {DYNAMIC_MIN}-{DYNAMIC_MAX}')
        taken.add(port)
        result.append(Allocated(spec.label, port, spec.to, host_ip))
    return tuple(result)
