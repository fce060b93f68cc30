"""What the driver tells Nomad it can do (kept truthful at every commit)."""

from __future__ import annotations

from nomad_rkt_driver.types import Capabilities, FSIsolation, NetworkMode

# Truthful for this version: signals and exec (runc exec, with or without a terminal); every task
# gets its own image root; host networking, or joining the group namespace Nomad made (bridge
# mode); Nomad mounts become binds.
CAPABILITIES = Capabilities(
    send_signals=True,
    exec=True,
    fs_isolation=FSIsolation.IMAGE,
    network_modes=(NetworkMode.HOST, NetworkMode.GROUP),
    must_create_network=False,
    mounts=True,
    disable_log_collection=False,
    dynamic_workload_users=False,
)
