"""Signal names as Nomad and job files write them ("SIGHUP", "HUP", "sigusr1")."""

from __future__ import annotations

import signal

from nomad_rkt_driver.errors import InvalidArgument


def parse_signal(name: str) -> signal.Signals:
    """The signal called ``name``; raise InvalidArgument naming valid examples otherwise."""
    text = name.strip().upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise InvalidArgument(
            f'"{name}" is not a signal name; use e.g. SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2 or SIGKILL'
        ) from None
