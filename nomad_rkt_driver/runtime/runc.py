"""A thin wrapper over the ``runc`` command with a state root of our own.

Every call runs ``runc --root <state root> ...`` so the driver never sees or touches
containers of other tools (``/run/runc``). runc's error text is turned into the driver's
error kinds in exactly one place, :func:`classify`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nomad_rkt_driver import procs
from nomad_rkt_driver.errors import DriverError, FailedPrecondition, NotFound

log = logging.getLogger(__name__)

RUNC_TIMEOUT_S: Final = 30.0
EXEC_FIFO: Final = "exec.fifo"  # in runc's state dir while a container is created, not yet started
FIFO_CHECK_S: Final = 0.1
_MSG_RE: Final = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


class ContainerNotFound(NotFound):
    """runc has no container with that id in our state root."""


class ContainerNotRunning(FailedPrecondition):
    """The container exists but its process has already finished."""


class RuncFailed(DriverError):
    """runc failed for a reason the driver does not recognise; the message carries runc's words."""


@dataclass(frozen=True)
class ContainerState:
    """What ``runc state`` says about a container."""

    id: str
    pid: int
    status: str  # created, running, paused, stopped
    bundle: str


def runc_message(stderr: str) -> str:
    """The human part of runc's stderr: the ``msg="..."`` of its last log line, or the last line."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return "(runc printed nothing)"
    found = _MSG_RE.findall(lines[-1])
    return found[-1].replace('\\"', '"') if found else lines[-1].strip()


def classify(op: str, container_id: str, stderr: str) -> DriverError:
    """The one mapping from runc's stderr to an error kind (not found / not running / other)."""
    msg = runc_message(stderr)
    low = msg.lower()
    if "does not exist" in low or "container not found" in low:
        return ContainerNotFound(f"runc {op} {container_id}: no such container ({msg})")
    if "not running" in low or "process already finished" in low or "has stopped" in low:
        return ContainerNotRunning(f"runc {op} {container_id}: container is not running ({msg})")
    return RuncFailed(f"runc {op} {container_id} failed: {msg}")


class Runc:
    """``runc`` at ``binary`` using ``root`` as its state directory."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def base_args(self) -> list[str]:
        """``[runc, --root, ROOT]`` — also handed to conmon as its runtime arguments."""
        return [self.binary, "--root", str(self.root)]

    def _run(self, op: str, container_id: str, *args: str) -> str:
        cmd = [*self.base_args(), op, *args, container_id]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=RUNC_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuncFailed(f"runc {op} {container_id} did not finish in {RUNC_TIMEOUT_S}s", recoverable=True) from exc
        except OSError as exc:
            raise FailedPrecondition(f"cannot run {self.binary}: {exc}; install runc", recoverable=True) from exc
        if done.returncode != 0:
            raise classify(op, container_id, done.stderr)
        return done.stdout

    def state(self, container_id: str) -> ContainerState:
        """The container's state; raises ContainerNotFound."""
        raw = json.loads(self._run("state", container_id))
        return ContainerState(id=raw["id"], pid=int(raw.get("pid", 0)), status=raw["status"], bundle=raw["bundle"])

    def start(self, container_id: str, init_pid: int = 0) -> None:
        """Start the user process of a created container.

        ``runc start`` only opens the container's ``exec.fifo`` in runc's state dir, reads the byte
        ``runc init`` writes there (which lets init exec the user process) and removes the fifo, by
        which runc tells *created* from *running*. Spawning runc for that costs ~8 ms (a Go binary's
        start-up); doing those three steps here costs ~0.1 ms (bench/pods). ``init_pid`` (the
        container pid from ``runc create``) guards the wait: if init dies first, the start fails
        instead of hanging. Another runtime (crun, ...) or no fifo: its own ``start`` runs.
        """
        fifo = self.root / container_id / EXEC_FIFO
        try:
            if os.path.basename(self.binary) != "runc":
                raise FileNotFoundError(fifo)
            fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)  # a fifo opened read-write never blocks
        except FileNotFoundError:
            self._run("start", container_id)
            return
        try:
            deadline = time.monotonic() + RUNC_TIMEOUT_S
            while not select.select([fd], [], [], FIFO_CHECK_S)[0]:
                if init_pid and procs.start_time(init_pid) is None:
                    raise ContainerNotRunning(f"runc start {container_id}: its init process {init_pid} died")
                if time.monotonic() > deadline:
                    raise RuncFailed(
                        f"runc start {container_id}: init did not signal in {RUNC_TIMEOUT_S}s", recoverable=True
                    )
            os.read(fd, 16)
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)

    def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        """Send ``signum`` to the container's init (or all its processes); raises ContainerNotRunning/NotFound."""
        extra = ["--all"] if all_processes else []
        cmd = [*self.base_args(), "kill", *extra, container_id, str(signum)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=RUNC_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
        if done.returncode != 0:
            raise classify("kill", container_id, done.stderr)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete the container (``--force`` kills it first); quiet when it does not exist."""
        try:
            self._run("delete", container_id, *(["--force"] if force else []))
        except ContainerNotFound:
            log.debug("runc delete %s: already gone", container_id)

    def list_ids(self) -> list[str]:
        """Ids of the containers in our state root."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())
