"""The task lifecycle: Nomad's task verbs on top of the image store, the network and the pods runtime.

StartTask: image → network (network/attach.py; rolled back if the pod does not start) → pod.
DestroyTask: pod, then its network (CNI DEL needs the namespace, which the pod no longer holds).
What network teardown needs is on disk under ``<data_dir>/network``; the driver_state says where.

Blocking work (pulls, unpacking, runc, conmon) runs in a bounded thread pool; waiting is a pidfd
on each pod's conmon in the event loop (exits.py). A task is known to this process after StartTask or RecoverTask; its
pod and exit code live on disk, so they survive this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver import podspec
from nomad_rkt_driver.driver.events import EventBus
from nomad_rkt_driver.driver.execstream import ExecStream
from nomad_rkt_driver.driver.exits import ExitWatcher
from nomad_rkt_driver.driver.imaging import Images, ReadyImage
from nomad_rkt_driver.driver.sampler import StatsSampler
from nomad_rkt_driver.driver.signals import parse_signal
from nomad_rkt_driver.driver.state import TaskStore, decode_state, encode_state
from nomad_rkt_driver.driver.stats import TaskUsage
from nomad_rkt_driver.errors import FailedPrecondition, NotFound
from nomad_rkt_driver.images.pull import Puller, PullProgress
from nomad_rkt_driver.images.store import Store
from nomad_rkt_driver.network import ports
from nomad_rkt_driver.network.attach import PodNetworks
from nomad_rkt_driver.runtime import execs, owners
from nomad_rkt_driver.runtime.pods import PodLost, Pods
from nomad_rkt_driver.runtime.probe import locate
from nomad_rkt_driver.runtime.records import PodRecord, PodStatus, exit_result_from_status, pod_id_for
from nomad_rkt_driver.types import (
    ExitResult,
    TaskEvent,
    TaskRequest,
    TaskStats,
    TaskStatusView,
    Topology,
)

log = logging.getLogger(__name__)
WORKERS: Final = 32
DEFAULT_STOP_SIGNAL: Final = "SIGTERM"
R = TypeVar("R")


@dataclass
class Task:
    """What this process knows about one running (or exited, not yet destroyed) task."""

    id: str
    name: str
    alloc_id: str
    pod_id: str
    pods: Pods
    stop_signal: str
    driver_state: bytes
    networks: PodNetworks | None = None
    network: ports.DriverNetwork | None = None
    image: str = ""  # the image record's name, for garbage collection
    images: Images | None = None
    gc_delay_s: float | None = None  # None: the plugin keeps unused images


class TaskManager:
    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="rkt")
        self._exits = ExitWatcher(self._executor)
        self._sampler = StatsSampler(self._executor)
        self._gc_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: TaskStore[Task] = TaskStore()
        self._pods: dict[str, Pods] = {}
        self._images: dict[str, Images] = {}
        self.owner = owners.this_process()  # written into each pod's owner mark (reconcile.py)
        self._busy: set[str] = set()  # pods being started or recovered: never dangling
        self._reaping: set[str] = set()  # pods the reconciler is removing: not recoverable

    async def _run(self, work: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    # -- the parts, per plugin config -------------------------------------------------------

    def _pods_for(self, state_dir: str, plugin: PluginConfig) -> Pods:
        pods = self._pods.get(state_dir)
        if pods is None:
            runc, conmon = locate(plugin.runtime), locate(plugin.conmon)
            if runc is None or conmon is None:
                raise FailedPrecondition(
                    f"runtime {plugin.runtime!r} or monitor {plugin.conmon!r} is not installed", recoverable=True
                )
            pods = Pods(Path(state_dir), runc, conmon, plugin.cgroup_parent)
            self._pods[state_dir] = pods
        return pods

    @staticmethod
    def _networks_for(plugin: PluginConfig) -> PodNetworks:
        return PodNetworks(
            Path(plugin.data_dir) / "network",
            plugin.cni_path,
            plugin.cni_config_dir,
            plugin.default_network_subnet,
            plugin.default_network_subnet6,
        )

    def _event(self, request: TaskRequest, message: str, details: dict[str, str]) -> None:
        self._events.publish(TaskEvent(request.id, request.alloc_id, request.name, time.time(), message, details))

    def _images_for(self, plugin: PluginConfig) -> Images:
        root = str(Path(plugin.data_dir) / "images")
        images = self._images.get(root)
        if images is None:
            store = Store(root)
            images = Images(
                store, Puller(store, activity_timeout_s=float(plugin.pull_activity_timeout)), self._image_names
            )
            self._images[root] = images
        images.budget = plugin.gc.image_store_max_bytes  # for the budget pass after image GC timers
        return images

    def _task(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id!r} is not known to the rkt driver")
        return task

    # -- verbs ----------------------------------------------------------------------------

    async def start(self, request: TaskRequest, cfg: TaskConfig, plugin: PluginConfig, where: str) -> bytes:
        """Fetch the image and start the pod; returns the driver_state for Nomad's handle."""
        if self._tasks.get(request.id) is not None:
            raise FailedPrecondition(f"task {request.id} is already running in the rkt driver")
        pod_id = pod_id_for(request.id)
        self._busy.add(pod_id)
        try:
            return await self._start(request, cfg, plugin, where)
        finally:
            self._busy.discard(pod_id)

    async def _start(self, request: TaskRequest, cfg: TaskConfig, plugin: PluginConfig, where: str) -> bytes:
        loop = asyncio.get_running_loop()
        images = self._images_for(plugin)
        state_dir = str(Path(plugin.data_dir) / "pods")
        pods = self._pods_for(state_dir, plugin)

        def progress(p: PullProgress) -> None:
            message = (
                f"Downloading image: {p.layers_done}/{p.layers_total} layers, "
                f"{p.bytes_done / 1e6:.1f}/{p.bytes_total / 1e6:.1f} MB"
            )
            event = TaskEvent(
                request.id,
                request.alloc_id,
                request.name,
                time.time(),
                message,
                {
                    "image": cfg.image,
                    "percent": f"{p.percent:.0f}",
                    "layers_done": str(p.layers_done),
                    "layers_total": str(p.layers_total),
                    "bytes_done": str(p.bytes_done),
                    "bytes_total": str(p.bytes_total),
                    "rate_bytes_per_s": f"{p.rate_bytes_per_s:.0f}",
                    "done": "true" if p.done else "false",
                },
            )
            loop.call_soon_threadsafe(self._events.publish, event)

        ready = await self._run(lambda: images.prepare(cfg, plugin, where, progress))
        try:
            return await self._start_from(request, cfg, plugin, where, pods, state_dir, ready)
        finally:
            ready.release()  # the task references the image now (or failed): the start's pin goes

    async def _start_from(
        self,
        request: TaskRequest,
        cfg: TaskConfig,
        plugin: PluginConfig,
        where: str,
        pods: Pods,
        state_dir: str,
        ready: ReadyImage,
    ) -> bytes:
        images = self._images_for(plugin)
        self._cancel_image_gc(ready.record.name)  # used again: not garbage any more
        net_request, warning = podspec.network_request(request, cfg, ready.defaults, where)
        if warning:
            self._event(request, warning, {"net": ",".join(cfg.net)})
        networks = self._networks_for(plugin)
        attachment = await self._run(lambda: networks.setup(net_request, where))
        try:
            spec = podspec.build(request, cfg, ready.defaults, ready.lower_dirs, plugin, where, attachment)

            def create() -> PodRecord:
                made = pods.create(
                    spec, list(ready.lower_dirs), request.stdout_path, request.stderr_path, no_overlay=cfg.no_overlay
                )
                self._mark(pods, made.pod_id, request.id)
                return made

            record = await self._run(create)
        except BaseException:
            await asyncio.shield(self._run(lambda: networks.teardown(net_request.pod_id)))
            raise
        network = None
        if attachment.forwards or attachment.interfaces:
            network = ports.DriverNetwork(attachment.ip, ports.driver_port_map(attachment.forwards))
        stop_signal = ready.defaults.stop_signal or DEFAULT_STOP_SIGNAL
        state = encode_state(
            {
                "task_id": request.id,
                "name": request.name,
                "alloc_id": request.alloc_id,
                "pod_id": record.pod_id,
                "state_dir": state_dir,
                "stop_signal": stop_signal,
                "runtime": plugin.runtime,
                "conmon": plugin.conmon,
                "cgroup_parent": plugin.cgroup_parent,
                "network_root": str(networks.root),
                "cni_path": list(plugin.cni_path),
                "net_pod_id": net_request.pod_id,
                "image": ready.record.name,
                "network": {"addr": network.addr, "port_map": network.port_map} if network else None,
            }
        )
        self._tasks.set(
            request.id,
            Task(
                request.id,
                request.name,
                request.alloc_id,
                record.pod_id,
                pods,
                stop_signal,
                state,
                networks,
                network,
                ready.record.name,
                images,
                float(plugin.gc.image_delay) if plugin.gc.image else None,
            ),
        )
        log.info("task started", extra={"task_id": request.id, "pod_id": record.pod_id, "image": cfg.image})
        return state

    async def recover(self, task_id: str, driver_state: bytes, plugin: PluginConfig) -> None:
        """Take a running (or exited) pod back after a plugin restart; idempotent."""
        if self._tasks.get(task_id) is not None:
            return
        state = decode_state(driver_state, task_id)
        claimed = str(state.get("pod_id", ""))
        if claimed in self._reaping:
            raise FailedPrecondition(
                f"task {task_id}: its pod {claimed} is being removed as dangling; Nomad will start the task again"
            )
        self._busy.add(claimed)
        try:
            await self._recover(task_id, driver_state, state, plugin)
        finally:
            self._busy.discard(claimed)

    async def _recover(self, task_id: str, driver_state: bytes, state: dict[str, Any], plugin: PluginConfig) -> None:
        try:
            pods = self._pods_for(str(state["state_dir"]), plugin)
            pod_id = str(state["pod_id"])
            status = await self._run(lambda: self._claim(pods, pod_id, task_id))
        except KeyError as exc:
            raise FailedPrecondition(f"task {task_id}: the driver state lacks {exc}; it cannot be recovered") from exc
        if status.state == "gone":
            networks, _ = _network_from_state(state)
            if networks is not None:  # the pod will not come back: its network must not outlive it
                await self._run(lambda: networks.teardown(pod_id))
            raise FailedPrecondition(
                f"task {task_id}: its pod {pod_id} is gone (monitor died, host rebooted?); "
                "Nomad will start the task again"
            )
        self._tasks.set(
            task_id,
            Task(
                task_id,
                str(state.get("name", "")),
                str(state.get("alloc_id", "")),
                pod_id,
                pods,
                str(state.get("stop_signal") or DEFAULT_STOP_SIGNAL),
                driver_state,
                *_network_from_state(state),
                str(state.get("image", "")),
                self._images_for(plugin),
                float(plugin.gc.image_delay) if plugin.gc.image else None,
            ),
        )
        log.info("task recovered", extra={"task_id": task_id, "pod_id": pod_id, "state": status.state})
        self._task_event(task_id, f"Recovered pod {pod_id} after a plugin restart ({status.state})", {"pod": pod_id})

    async def wait(self, task_id: str) -> tuple[ExitResult, str]:
        """The task's exit, and an error text when the pod was lost instead of exiting."""
        task = self._task(task_id)
        try:
            result = await self._exits.wait(task.pods, task.pod_id)
        except (PodLost, NotFound) as exc:
            return ExitResult(exit_code=-1), str(exc)
        if result.oom_killed:
            self._task_event(task_id, "OOM killed: the task used more memory than its limit", {"pod": task.pod_id})
        return result, ""

    def _task_event(self, task_id: str, message: str, annotations: dict[str, str]) -> None:
        """A driver task event for a task this process knows (routed by alloc id and task name)."""
        task = self._tasks.get(task_id)
        if task is not None:
            self._events.publish(TaskEvent(task_id, task.alloc_id, task.name, time.time(), message, annotations))

    async def stop(self, task_id: str, timeout_s: float, signal_name: str) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            log.debug("stop of unknown task ignored", extra={"task_id": task_id})
            return
        signum = parse_signal(signal_name or task.stop_signal)
        await self._run(lambda: task.pods.stop(task.pod_id, int(signum), timeout_s))

    async def destroy(self, task_id: str, force: bool) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        if not force:
            status = await self._run(lambda: task.pods.status(task.pod_id))
            if status.state == "running":
                raise FailedPrecondition(f"task {task_id} is still running; stop it first or destroy with force")
        await self._run(lambda: remove_pod(task.pods, task.networks, task.pod_id))
        self._tasks.delete(task_id)
        self._schedule_image_gc(task)

    # -- ownership, for the dangling-pod reconciler (reconcile.py) -----------------------------

    def _mark(self, pods: Pods, pod_id: str, task_id: str) -> None:
        """Write this process's owner mark into the pod's state dir (a failure only costs the mark)."""
        try:
            owners.write(pods.pod_dir(pod_id), self.owner, task_id)
        except OSError as exc:
            log.warning("could not mark the pod's owner", extra={"pod_id": pod_id, "err": str(exc)})

    def _claim(self, pods: Pods, pod_id: str, task_id: str) -> PodStatus:
        """RecoverTask's look at the pod; a pod that is still there becomes this process's."""
        status = pods.status(pod_id)
        if status.state != "gone":
            self._mark(pods, pod_id, task_id)
        return status

    def parts_for(self, plugin: PluginConfig) -> tuple[Pods, PodNetworks]:
        """The pods and pod networks of a plugin config (FailedPrecondition without runc or conmon)."""
        return self._pods_for(str(Path(plugin.data_dir) / "pods"), plugin), self._networks_for(plugin)

    def claimed_pods(self) -> set[str]:
        """Pods a task of this process refers to, or that a StartTask/RecoverTask is working on."""
        known = {t.pod_id for t in (self._tasks.get(i) for i in self._tasks.ids()) if t is not None}
        return known | self._busy

    async def reap(self, pod_id: str, removal: Callable[[], None]) -> bool:
        """Run ``removal`` unless a task claimed the pod meanwhile; a RecoverTask during it is refused."""
        if pod_id in self.claimed_pods():
            return False
        self._reaping.add(pod_id)
        try:
            await self._run(removal)
        finally:
            self._reaping.discard(pod_id)
        return True

    # -- image garbage collection -----------------------------------------------------------

    def _schedule_image_gc(self, task: Task) -> None:
        """Remove the task's image after the delay unless a task uses it again meanwhile."""
        images, name, delay = task.images, task.image, task.gc_delay_s
        if images is None or not name or delay is None:
            return
        if name in self._image_names():
            return
        self._cancel_image_gc(name)
        loop = asyncio.get_running_loop()
        self._gc_timers[name] = loop.call_later(delay, lambda: asyncio.ensure_future(self._collect(images, name)))

    def _cancel_image_gc(self, name: str) -> None:
        timer = self._gc_timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    async def _collect(self, images: Images, name: str) -> None:
        self._gc_timers.pop(name, None)
        if name in self._image_names():
            return
        removed = await self._run(lambda: images.remove_unused(name))
        log.info("unused image %s", "removed" if removed else "kept (in use elsewhere)", extra={"image": name})
        await self._run(images.enforce_budget)

    def _image_names(self) -> set[str]:
        """Images the tasks of this process use (called from worker threads too)."""
        return {t.image for t in (self._tasks.get(i) for i in self._tasks.ids()) if t is not None and t.image}

    async def inspect(self, task_id: str) -> TaskStatusView:
        task = self._task(task_id)
        status = await self._run(lambda: task.pods.status(task.pod_id))
        result = ExitResult()
        if status.result is not None:
            result = ExitResult(status.result.exit_code, status.result.signal, status.result.oom_killed)
        return TaskStatusView(
            task.id, task.name, status.state == "running", status.started_at, status.finished_at, result
        )

    async def signal(self, task_id: str, signal_name: str) -> None:
        signum = parse_signal(signal_name)
        task = self._task(task_id)
        await self._run(lambda: task.pods.signal(task.pod_id, int(signum)))

    async def stats(self, task_id: str, interval_s: float, topology: Topology) -> AsyncIterator[TaskStats]:
        """A sample every ``interval_s`` until the caller stops; CPU rates need two samples."""
        task = self._task(task_id)
        cgroups_path = (await self._run(lambda: task.pods.load(task.pod_id))).cgroups_path  # once per stream
        usage = TaskUsage(task_id, topology)  # the pod's cgroup, and each of its processes
        async for sample in self._sampler.samples(cgroups_path, interval_s):
            yield usage.next(sample, time.time())

    async def exec(self, task_id: str, command: list[str], timeout_s: float) -> tuple[bytes, bytes, ExitResult]:
        """Run ``command`` in the task's pod to completion (script checks, template change_mode)."""
        task = self._task(task_id)
        out, err, code = await self._run(lambda: execs.run(task.pods, task.pod_id, command, timeout_s or None))
        return out, err, exit_result(code)

    async def exec_stream(self, task_id: str, command: list[str], tty: bool) -> ExecStream:
        """An interactive exec for ``nomad alloc exec``."""
        task = self._task(task_id)
        return await ExecStream.start(self._executor, task.pods, task.pod_id, command, tty)

    def network_of(self, task_id: str) -> ports.DriverNetwork | None:
        """The network_override for Nomad: pod address and label → container port (None without one)."""
        return self._task(task_id).network

    def state_of(self, task_id: str) -> dict[str, Any]:
        return decode_state(self._task(task_id).driver_state, task_id)


def _network_from_state(state: dict[str, Any]) -> tuple[PodNetworks | None, ports.DriverNetwork | None]:
    """The task's network parts from its driver_state (states from before networks have none)."""
    root = state.get("network_root")
    if not root:
        return None, None
    networks = PodNetworks(Path(str(root)), tuple(state.get("cni_path") or ()), "", "")
    saved = state.get("network")
    network = None
    if isinstance(saved, dict):
        network = ports.DriverNetwork(str(saved.get("addr", "")), dict(saved.get("port_map") or {}))
    return networks, network


def remove_pod(pods: Pods, networks: PodNetworks | None, pod_id: str) -> None:
    """DestroyTask's teardown: the pod (container, monitor, cgroup, mounts, state), then its network."""
    pods.destroy(pod_id)
    if networks is not None:  # after the pod: DEL runs while our namespace still exists
        networks.teardown(pod_id)


def exit_result(code: int) -> ExitResult:
    """An exec's exit status, Nomad style (a negative Popen code is a signal death)."""
    return exit_result_from_status(128 - code if code < 0 else code, oom_killed=False)
