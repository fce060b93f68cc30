"""Locating the reference CNI plugins the driver's networks are built from."""

from __future__ import annotations

import os
from typing import Final

# default network: ptp + host-local IPAM; port forwarding: portmap; rkt's other default: bridge.
REQUIRED_PLUGINS: Final = ("ptp", "bridge", "host-local", "portmap")


def find_plugins(search_dirs: tuple[str, ...], names: tuple[str, ...] = REQUIRED_PLUGINS) -> dict[str, str]:
    """Map each plugin name to the first executable found in ``search_dirs`` (missing ones are absent)."""
    found: dict[str, str] = {}
    for name in names:
        for directory in search_dirs:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                found[name] = path
                break
    return found
