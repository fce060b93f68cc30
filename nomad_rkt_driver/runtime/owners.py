"""Who a pod belongs to: the ``owner.json`` mark in its state dir.

A Nomad agent's plugin and the local runner (``nomad-rkt-driver run``) may share one data dir, so
each pod says which process is responsible for it: ``agent`` (the plugin process that started or
last recovered it) or ``runner`` (the runner process, not its plugin child). A process is named by
its pid and its /proc start time, so a reused pid is never mistaken for it. A pod without a mark
(state written before marks existed) belongs to the agent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from nomad_rkt_driver import procs

OWNER_FILE: Final = "owner.json"
RUNNER_ENV: Final = "NOMAD_RKT_RUNNER_PID"  # set by the runner for its plugin child: the runner's pid
Kind = Literal["agent", "runner"]


@dataclass(frozen=True)
class Owner:
    kind: Kind
    pid: int
    started: int  # /proc start time in ticks (0: unknown, then the pid alone is checked)
    task_id: str = ""
    since: float = 0.0  # wall clock of the mark

    def alive(self) -> bool:
        """Whether the owning process still runs."""
        return procs.alive(self.pid, self.started)

    def same_process(self, other: Owner) -> bool:
        return (self.pid, self.started) == (other.pid, other.started)

    def describe(self) -> str:
        return f"{'the runner' if self.kind == 'runner' else 'plugin'} pid {self.pid}"


def this_process(environ: dict[str, str] | None = None) -> Owner:
    """The owner this plugin process writes: the runner named by RUNNER_ENV if it runs, else the agent's plugin."""
    env = os.environ if environ is None else environ
    raw = env.get(RUNNER_ENV, "")
    if raw.isdigit():
        started = procs.start_time(int(raw))
        if started is not None:
            return Owner("runner", int(raw), started)
    pid = os.getpid()
    return Owner("agent", pid, procs.start_time(pid) or 0)


def write(pod_dir: Path, owner: Owner, task_id: str) -> None:
    """Mark ``pod_dir`` as ``owner``'s (atomic rename; the pod's own record is untouched)."""
    mark = Owner(owner.kind, owner.pid, owner.started, task_id, time.time())
    temp = pod_dir / f".{OWNER_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    temp.write_text(json.dumps(asdict(mark)))
    os.replace(temp, pod_dir / OWNER_FILE)


def read(pod_dir: Path) -> Owner | None:
    """The pod's mark; None when there is none or it is unreadable (then the agent owns the pod)."""
    try:
        raw = json.loads((pod_dir / OWNER_FILE).read_text())
        kind: Kind = "runner" if raw["kind"] == "runner" else "agent"
        return Owner(kind, int(raw["pid"]), int(raw["started"]), str(raw.get("task_id", "")), float(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
