"""The pods facade: create, inspect, wait for, signal, stop, destroy and measure pods.

Synchronous and thread-safe (no shared mutable state; every call reads the durable files),
so the driver may call it from many threads and from a brand-new process after a restart.

State layout under ``state_dir``::

    runc/                 runc --root (our containers only)
    pods/<id>/pod.json    PodRecord (written before ``runc start``)
    pods/<id>/result.json ExitResult, the first time the exit is seen
    pods/<id>/bundle/     config.json, rootfs (overlay mount), upper, work
    pods/<id>/exits/<id>  conmon's exit status; pods/<id>/persist/oom when OOM-killed
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import Final

from nomad_rkt_driver import procs
from nomad_rkt_driver.errors import DriverError, FailedPrecondition, InvalidArgument, NotFound
from nomad_rkt_driver.runtime import aside, cgroupmove, cgroups
from nomad_rkt_driver.runtime.bundle import create_bundle, delete_bundle, mounts_under
from nomad_rkt_driver.runtime.monitor import MonitorPaths, read_exit_code, read_pid, spawn_monitor
from nomad_rkt_driver.runtime.records import (
    PodRecord,
    PodStatus,
    check_pod_id,
    exit_result_from_status,
    result_from_json,
    result_to_json,
    write_atomic,
    write_once,
)
from nomad_rkt_driver.runtime.runc import ContainerNotFound, ContainerNotRunning, Runc
from nomad_rkt_driver.runtime.spec import PodSpec, build_config, host_limits
from nomad_rkt_driver.types import ExitResult

log = logging.getLogger(__name__)

DEFAULT_CGROUP_PARENT: Final = "/nomad-rkt"
MONITORS_CGROUP: Final = "monitors"  # <cgroup_parent>/monitors: conmons, outside the plugin's cgroup
WAIT_POLL_MIN_S: Final = 0.01
WAIT_POLL_MAX_S: Final = 0.2
KILL_WAIT_S: Final = 10.0
MONITOR_EXIT_WAIT_S: Final = 5.0


class PodLost(FailedPrecondition):
    """The pod's monitor is gone without recording an exit (e.g. killed, or the host rebooted)."""


@dataclass(frozen=True)
class PodStats:
    """One sample of a pod's cgroup; ``timestamp`` is wall-clock seconds."""

    pod_id: str
    timestamp: float
    cpu: cgroups.CpuStats
    memory: cgroups.MemoryStats
    pids: tuple[int, ...]


class Pods:
    """Pods kept under ``state_dir``, run by ``runc`` and watched by ``conmon``."""

    def __init__(self, state_dir: Path, runc: str, conmon: str, cgroup_parent: str = DEFAULT_CGROUP_PARENT) -> None:
        self.state_dir = state_dir
        self.runc = Runc(runc, state_dir / "runc")
        self.conmon = conmon
        self.cgroup_parent = "/" + cgroup_parent.strip("/")
        self.monitors_cgroup = f"{self.cgroup_parent.rstrip('/')}/{MONITORS_CGROUP}"  # every pod's conmon
        (state_dir / "pods").mkdir(parents=True, exist_ok=True)
        self.runc.root.mkdir(parents=True, exist_ok=True)

    def pod_dir(self, pod_id: str) -> Path:
        return self.state_dir / "pods" / check_pod_id(pod_id)

    def _paths(self, pod_dir: Path) -> MonitorPaths:
        return MonitorPaths(
            exit_dir=pod_dir / "exits",
            persist_dir=pod_dir / "persist",
            conmon_pidfile=pod_dir / "conmon.pid",
            container_pidfile=pod_dir / "container.pid",
            runc_log=pod_dir / "runc.log",
        )

    def create(
        self, spec: PodSpec, lower_dirs: list[Path], stdout_path: str, stderr_path: str, *, no_overlay: bool = False
    ) -> PodRecord:
        """Build the bundle, start the pod under conmon and persist its record.

        Raises InvalidArgument (bad spec, missing mount source), FailedPrecondition (pod exists,
        runc/conmon failed; CreateFailed carries runc's reason), NotFound (log path). On any failure
        every step already done is undone: no mount, no cgroup, no container, no monitor, no dir.
        """
        pod_dir = self.pod_dir(spec.pod_id)
        if pod_dir.exists():
            raise FailedPrecondition(f"pod {spec.pod_id} already exists; destroy it first or use a new id")
        for bind in spec.binds:
            if not os.path.exists(bind.source):
                raise InvalidArgument(f"mount source {bind.source} (for {bind.destination}) does not exist on the host")
        place = cgroups.placement(spec.pod_id, self.cgroup_parent, spec.nomad_cgroup)
        spec = replace(spec, cgroups_path=spec.cgroups_path or place.cgroups_path)
        config = build_config(spec, "rootfs", host_limits())
        paths = self._paths(pod_dir)
        with contextlib.ExitStack() as undo:
            pod_dir.mkdir(parents=True)
            undo.callback(_remove_tree, pod_dir)
            paths.exit_dir.mkdir()
            paths.persist_dir.mkdir()
            # conmon starts first and waits at its start pipe: its start-up overlaps the bundle's
            monitor = spawn_monitor(
                self.conmon, self.runc, spec.pod_id, pod_dir / "bundle", paths, stdout_path, stderr_path
            )
            undo.callback(cgroupmove.prune, self.monitors_cgroup)
            undo.callback(monitor.abort)  # kills it while it waits, before the prune above
            bundle = create_bundle(pod_dir / "bundle", lower_dirs, config, no_overlay=no_overlay)
            undo.callback(delete_bundle, bundle.path)
            undo.callback(self._teardown, spec.pod_id, spec.cgroups_path, paths)
            monitor.release()
            # Out of the plugin's cgroup while its runc create runs (a cgroup move waits for the kernel's
            # cgroup lock, ~10 ms here; overlapped, it costs StartTask nothing: docs/benchmarks.md)
            cgroupmove.move(monitor.detached(), self.monitors_cgroup)
            container_pid = monitor.created()
            if place.join_cpuset is not None:  # cgroup v1: Nomad's cpuset cgroup, before the task runs
                cgroups.join(place.join_cpuset, container_pid, spec.resources.cpuset_cpus)
            record = self._record(spec, bundle.path, paths, container_pid, stdout_path, stderr_path)
            write_atomic(pod_dir / "pod.json", record.to_json())
            self.runc.start(spec.pod_id, container_pid)
            undo.pop_all()
        log.info("pod %s started: container pid %d, conmon pid %d", spec.pod_id, container_pid, record.conmon_pid)
        return record

    def _record(
        self, spec: PodSpec, bundle: Path, paths: MonitorPaths, container_pid: int, stdout_path: str, stderr_path: str
    ) -> PodRecord:
        conmon_pid = read_pid(paths.conmon_pidfile)
        return PodRecord(
            pod_id=spec.pod_id,
            bundle=str(bundle),
            cgroups_path=spec.cgroups_path,
            exit_file=str(paths.exit_file(spec.pod_id)),
            persist_dir=str(paths.persist_dir),
            conmon_pid=conmon_pid,
            conmon_started=procs.start_time(conmon_pid) or 0,
            container_pid=container_pid,
            container_started=procs.start_time(container_pid) or 0,
            started_at=time.time(),
            stdout_path=stdout_path,
            stderr_path=stderr_path,
        )

    def load(self, pod_id: str) -> PodRecord:
        """The pod's record; raises NotFound for unknown ids and CorruptRecord for a damaged file."""
        path = self.pod_dir(pod_id) / "pod.json"
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise NotFound(f"no pod {pod_id} under {self.state_dir}; it was never started or was destroyed") from exc
        return PodRecord.from_json(text, str(path))

    def status(self, pod_id: str) -> PodStatus:
        """running / exited (with the result, recorded durably on first sight) / gone; raises NotFound."""
        record = self.load(pod_id)
        result_file = self.pod_dir(pod_id) / "result.json"
        with contextlib.suppress(FileNotFoundError):
            result, finished = result_from_json(result_file.read_text(), str(result_file))
            return PodStatus(pod_id, "exited", result, record.started_at, finished)
        for attempt in range(2):
            code = read_exit_code(Path(record.exit_file))
            if code is not None:
                oom = (
                    os.path.exists(os.path.join(record.persist_dir, "oom"))
                    or cgroups.oom_kills(record.cgroups_path) > 0
                )
                result, finished = exit_result_from_status(code, oom_killed=oom), time.time()
                if not write_once(result_file, result_to_json(result, finished)):
                    result, finished = result_from_json(result_file.read_text(), str(result_file))
                return PodStatus(pod_id, "exited", result, record.started_at, finished)
            running = procs.alive(record.container_pid, record.container_started)
            if attempt == 0 and (running or procs.alive(record.conmon_pid, record.conmon_started)):
                return PodStatus(pod_id, "running", None, record.started_at)
        return PodStatus(pod_id, "gone", None, record.started_at)

    def wait(self, pod_id: str, timeout_s: float | None = None) -> ExitResult | None:
        """Block until the pod exits and return its result; None after ``timeout_s``.

        Safe from many threads at once (each polls the durable files). Raises NotFound for an
        unknown pod and PodLost when the monitor died without recording an exit.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = WAIT_POLL_MIN_S
        while True:
            st = self.status(pod_id)
            if st.state == "exited":
                return st.result
            if st.state == "gone":
                raise PodLost(f"pod {pod_id}: its monitor is gone and recorded no exit; destroy and restart the task")
            if deadline is not None and time.monotonic() >= deadline:
                return None
            left = WAIT_POLL_MAX_S if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(min(delay, left))
            delay = min(delay * 2, WAIT_POLL_MAX_S)

    def signal(self, pod_id: str, signum: int) -> None:
        """Send ``signum`` to the pod's main process; raises NotFound, or FailedPrecondition when it is not running."""
        self.load(pod_id)
        try:
            self.runc.kill(pod_id, signum)
        except (ContainerNotRunning, ContainerNotFound) as exc:
            raise FailedPrecondition(f"pod {pod_id} is not running; cannot send signal {signum}") from exc

    def stop(self, pod_id: str, signum: int = SIGTERM, timeout_s: float = 5.0) -> ExitResult | None:
        """Send ``signum``, wait ``timeout_s``, then SIGKILL; the result, or None for an unknown or lost pod."""
        try:
            current = self.status(pod_id)
            if current.state != "running":
                return current.result
            with contextlib.suppress(ContainerNotRunning, ContainerNotFound):
                self.runc.kill(pod_id, signum)
            result = self.wait(pod_id, timeout_s)
            if result is None:
                log.info("pod %s still running %.1fs after signal %d; sending SIGKILL", pod_id, timeout_s, signum)
                with contextlib.suppress(ContainerNotRunning, ContainerNotFound):
                    self.runc.kill(pod_id, SIGKILL, all_processes=True)
                result = self.wait(pod_id, KILL_WAIT_S)
        except (NotFound, PodLost):
            return None
        if result is None:
            raise FailedPrecondition(f"pod {pod_id} survived SIGKILL for {KILL_WAIT_S}s", recoverable=True)
        return result

    def destroy(self, pod_id: str) -> None:
        """Force-remove the pod: container, monitor, cgroup, mounts, bundle and state; quiet when unknown."""
        pod_dir = self.pod_dir(pod_id)
        cgroups_path = f"{self.cgroup_parent}/{pod_id}"
        with contextlib.suppress(DriverError):
            cgroups_path = self.load(pod_id).cgroups_path
        self._teardown(pod_id, cgroups_path, self._paths(pod_dir))
        delete_bundle(pod_dir / "bundle")
        _remove_tree(pod_dir)
        log.info("pod %s destroyed", pod_id)

    def _teardown(self, pod_id: str, cgroups_path: str, paths: MonitorPaths) -> None:
        """Kill and delete the container, wait for (or kill) conmon, remove the cgroup."""
        self.runc.delete(pod_id, force=True)
        conmon_pid = read_pid(paths.conmon_pidfile)
        started = procs.start_time(conmon_pid) or 0
        deadline = time.monotonic() + MONITOR_EXIT_WAIT_S
        while procs.alive(conmon_pid, started) and time.monotonic() < deadline:
            time.sleep(WAIT_POLL_MIN_S)
        if procs.kill(conmon_pid, started, SIGKILL):
            log.warning("conmon %d of pod %s did not exit after its container; killed it", conmon_pid, pod_id)
        busy = cgroups.remove(cgroups_path)
        cgroupmove.prune(self.monitors_cgroup)  # once the last monitor is gone (else still busy: kept)
        if busy:
            raise FailedPrecondition(f"cgroups {busy} of pod {pod_id} are still busy; retry destroy", recoverable=True)

    def list(self) -> list[str]:
        """Ids of every pod we know of: state dirs and containers in our runc root."""
        pods_dir = self.state_dir / "pods"
        ids = {p.name for p in pods_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
        return sorted(ids | set(self.runc.list_ids()))

    def stats(self, pod_id: str) -> PodStats:
        """A sample of the pod's cgroup counters; raises NotFound."""
        record = self.load(pod_id)
        sample = cgroups.stats(record.cgroups_path)
        return PodStats(pod_id, time.time(), sample.cpu, sample.memory, sample.pids)

    def monitor_rss_bytes(self, pod_id: str) -> int:
        """Resident memory of the pod's conmon (0 once it has exited); raises NotFound."""
        record = self.load(pod_id)
        return procs.rss_bytes(record.conmon_pid) if procs.alive(record.conmon_pid, record.conmon_started) else 0


def _remove_tree(path: Path) -> None:
    """Rename ``path`` aside atomically and remove it; quiet when already gone."""
    if mounts_under(path):
        raise FailedPrecondition(f"{path} still has mounts {mounts_under(path)}; unmount them, then destroy again")
    aside.remove(path)
