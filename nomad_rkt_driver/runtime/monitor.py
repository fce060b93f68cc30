"""Start a pod's container under Debian's ``conmon`` so it outlives the plugin.

conmon is spawned first and held at its start pipe (``_OCI_STARTPIPE``) while the caller builds
the bundle and moves it out of the plugin's cgroup; released, it forks its daemon half, which
(passthrough mode) runs ``runc create``, reaps the container and writes its exit
status to ``<exit dir>/<id>`` (``128+signo`` for a signal death) and an ``oom`` file to its
persist dir when the kernel OOM-killed the container. The task's stdout/stderr are Nomad's
FIFOs, opened O_WRONLY here and handed to conmon as its fds 1 and 2; conmon passes them to
the container unchanged. conmon double-forks and starts a new session, so it survives the
process that started it. It runs in the pod's persist dir because it also drops an ``oom``
file in its working directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nomad_rkt_driver.errors import DriverError, FailedPrecondition, NotFound
from nomad_rkt_driver.runtime.runc import Runc, runc_message

log = logging.getLogger(__name__)

FIFO_OPEN_TIMEOUT_S: Final = 10.0
FIFO_RETRY_S: Final = 0.02
CREATE_TIMEOUT_S: Final = 30.0
CONMON_EXIT_TIMEOUT_S: Final = 10.0


class CreateFailed(FailedPrecondition):
    """``runc create`` under conmon failed; the message carries runc's reason."""


@dataclass(frozen=True)
class MonitorPaths:
    """Files conmon reads and writes for one pod."""

    exit_dir: Path
    persist_dir: Path
    conmon_pidfile: Path
    container_pidfile: Path
    runc_log: Path

    def exit_file(self, pod_id: str) -> Path:
        return self.exit_dir / pod_id


def open_log_fd(path: str, timeout_s: float = FIFO_OPEN_TIMEOUT_S) -> int:
    """Open Nomad's FIFO (or a file such as /dev/null) O_WRONLY, waiting up to ``timeout_s`` for a reader.

    Raises NotFound when the path does not exist and FailedPrecondition (recoverable) when no reader
    (Nomad's logmon) opens the FIFO in time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"log path {path} does not exist; Nomad's logmon creates it before StartTask") from exc
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise FailedPrecondition(f"cannot open log path {path}: {exc}") from exc
            if time.monotonic() > deadline:
                raise FailedPrecondition(
                    f"no reader opened the log FIFO {path} within {timeout_s}s; is Nomad's logmon running?",
                    recoverable=True,
                ) from exc
            time.sleep(FIFO_RETRY_S)
            continue
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return fd


def conmon_args(conmon: str, runc: Runc, pod_id: str, bundle: Path, paths: MonitorPaths) -> list[str]:
    """The conmon command line (passthrough logs, our runc root, runc's own log for errors)."""
    args = [
        conmon, "--api-version", "1", "-c", pod_id, "-u", pod_id, "-n", pod_id,
        "-r", runc.binary, "-b", str(bundle), "-p", str(paths.container_pidfile),
        "--exit-dir", str(paths.exit_dir), "--persist-dir", str(paths.persist_dir),
        "--conmon-pidfile", str(paths.conmon_pidfile), "-l", "passthrough:", "--log-level", "error",
    ]  # fmt: skip
    for extra in ("--root", str(runc.root), "--log", str(paths.runc_log), "--log-format", "json"):
        args += ["--runtime-arg", extra]
    return args


def read_sync(fd: int, timeout_s: float) -> bytes:
    """Read conmon's sync pipe until EOF or the first complete JSON line, within ``timeout_s``."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise CreateFailed(f"conmon did not report the container within {timeout_s}s", recoverable=True)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def runc_error(runc_log: Path) -> str:
    """The last error runc wrote to its JSON log, or a hint when there is none."""
    try:
        lines = runc_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "runc left no log"
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("level") in ("error", "fatal"):
                return str(entry.get("msg", line))
    return runc_message("\n".join(lines))


class Monitor:
    """A conmon spawned for one pod and held at its start pipe until :meth:`release`.

    conmon reads its start pipe before it forks or runs anything, so its own start-up (exec,
    dynamic linking) overlaps the caller's work on the bundle, which ``runc create`` needs.
    Then: :meth:`release`, :meth:`detached` (the daemon's pid: what the caller does with it
    overlaps ``runc create``), :meth:`created` (the container's pid).
    """

    def __init__(self, pod_id: str, proc: subprocess.Popen[bytes], start_w: int, sync_r: int, paths: MonitorPaths):
        self.pod_id = pod_id
        self.proc = proc
        self.paths = paths
        self._start_w = start_w
        self._sync_r = sync_r

    @property
    def pid(self) -> int:
        """conmon's pid until it forks (its daemon child, named in the conmon pidfile, lives on)."""
        return self.proc.pid

    def release(self) -> None:
        """Let conmon go on: it forks its daemon, which runs ``runc create``."""
        if self._start_w < 0:
            return
        try:
            os.write(self._start_w, b"0")
        except OSError as exc:  # conmon died before reading: created() reports its status
            log.debug("conmon start pipe of %s: %s", self.pod_id, exc)
        finally:
            os.close(self._start_w)
            self._start_w = -1

    def detached(self) -> int:
        """After :meth:`release`: wait for conmon's parent half to exit; the daemon's pid.

        The parent writes the daemon's pid file and exits right after forking, while the daemon's
        ``runc create`` runs: what the caller does next overlaps with it. Raises CreateFailed.
        """
        try:
            rc = self.proc.wait(CONMON_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            raise CreateFailed(f"conmon for {self.pod_id} did not detach within {CONMON_EXIT_TIMEOUT_S}s") from exc
        if rc != 0:
            raise CreateFailed(f"conmon for {self.pod_id} exited with status {rc}: {runc_error(self.paths.runc_log)}")
        pid = read_pid(self.paths.conmon_pidfile)
        if pid <= 0:
            raise CreateFailed(f"conmon for {self.pod_id} wrote no pid file {self.paths.conmon_pidfile}")
        return pid

    def created(self, timeout_s: float = CREATE_TIMEOUT_S) -> int:
        """Wait until ``runc create`` has finished under conmon; the container pid. Raises CreateFailed."""
        try:
            sync = read_sync(self._sync_r, timeout_s)
        finally:
            os.close(self._sync_r)
            self._sync_r = -1
        return _container_pid(sync, self.pod_id, self.paths)

    def abort(self) -> None:
        """Undo :func:`spawn_monitor` before :meth:`release`: kill the waiting conmon; afterwards only close fds."""
        if self._start_w >= 0:
            self.proc.kill()  # before closing the pipe: an empty read would let conmon go on
            self.proc.wait()
            os.close(self._start_w)
            self._start_w = -1
        if self._sync_r >= 0:
            os.close(self._sync_r)
            self._sync_r = -1
        if self.proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(CONMON_EXIT_TIMEOUT_S)


def spawn_monitor(
    conmon: str, runc: Runc, pod_id: str, bundle: Path, paths: MonitorPaths, stdout_path: str, stderr_path: str
) -> Monitor:
    """Start conmon for ``pod_id``, waiting at its start pipe (see :class:`Monitor`).

    The bundle need not exist yet: conmon runs ``runc create`` only after :meth:`Monitor.release`.
    Raises NotFound/FailedPrecondition for the log paths and FailedPrecondition when conmon cannot run.
    """
    with contextlib.ExitStack() as fds:
        out_fd = open_log_fd(stdout_path)
        fds.callback(os.close, out_fd)
        err_fd = open_log_fd(stderr_path)
        fds.callback(os.close, err_fd)
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        start_r, start_w = os.pipe2(os.O_CLOEXEC)
        fds.callback(os.close, sync_w)
        fds.callback(os.close, start_r)
        try:
            env = {
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "_OCI_SYNCPIPE": str(sync_w),
                "_OCI_STARTPIPE": str(start_r),
            }
            proc = subprocess.Popen(
                conmon_args(conmon, runc, pod_id, bundle, paths),
                stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd, env=env, cwd=paths.persist_dir,
                pass_fds=(sync_w, start_r), start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            os.close(sync_r)
            os.close(start_w)
            raise FailedPrecondition(f"cannot run conmon {conmon}: {exc}; install conmon", recoverable=True) from exc
    return Monitor(pod_id, proc, start_w, sync_r, paths)


def _container_pid(sync: bytes, pod_id: str, paths: MonitorPaths) -> int:
    try:
        pid = int(json.loads(sync.decode()).get("data", -1)) if sync.strip() else -1
    except (ValueError, AttributeError):
        pid = -1
    if pid <= 0:
        raise CreateFailed(f"runc could not create pod {pod_id}: {runc_error(paths.runc_log)}")
    return pid


def read_pid(path: Path) -> int:
    """A pid from a pid file, 0 when missing or garbled."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def read_exit_code(path: Path) -> int | None:
    """conmon's exit file: the status, or None while the container is still running."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise DriverError(f"exit file {path} holds {text!r}, not a number; destroy the pod") from exc
