"""`nomad-rkt-driver run JOBFILE`: a one-node Nomad for the job's rkt tasks, through the plugin.

The plugin executable is launched through the go-plugin handshake and driven over gRPC exactly
as a Nomad agent drives it (SetConfig, StartTask, WaitTask, StopTask, DestroyTask), so what runs
here runs the same under Nomad.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.duration_pb2 import Duration as DurationProto

from nomad_rkt_driver.cli.env import interpolate, task_env
from nomad_rkt_driver.cli.events import EventPrinter, EventWatcher
from nomad_rkt_driver.cli.hclfile import encode_like_nomad, load_hcl, plugin_block, single
from nomad_rkt_driver.cli.jobfile import GroupSpec, JobFileError, JobSpec, TaskSpec
from nomad_rkt_driver.cli.logmon import LogMon
from nomad_rkt_driver.cli.plugin_client import PluginProcess
from nomad_rkt_driver.cli.ports import Allocated
from nomad_rkt_driver.config.decode import decode_msgpack
from nomad_rkt_driver.config.plugin import WHERE as PLUGIN_WHERE
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.network import conflist
from nomad_rkt_driver.network.group import (
    BridgeSettings,
    GroupNetwork,
    GroupNetworks,
    GroupPort,
    ensure_admin_rule,
    nomad_bridge,
)
from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2
from nomad_rkt_driver.runtime.owners import RUNNER_ENV

MIB = 1 << 20


@dataclass
class RunningTask:
    """One task of the allocation: its dirs, log readers, and the current Nomad task id."""

    spec: TaskSpec
    group: GroupSpec
    config: dict[str, Any]
    env: dict[str, str]
    logmons: list[LogMon] = field(default_factory=list)
    task_id: str = ""
    result: driver_pb2.WaitTaskResponse | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Runner:
    """Runs one job's rkt tasks on this host until they end (batch) or Ctrl-C (service)."""

    def __init__(self, job: JobSpec, job_dir: Path, plugin_body: dict[str, Any], out: TextIO = sys.stdout) -> None:
        self.job = job
        self.job_dir = job_dir
        self.out = out
        self.plugin_body = plugin_body
        self.plugin_config: PluginConfig = decode_msgpack(
            PluginConfig, encode_like_nomad(PluginConfig, plugin_body), PLUGIN_WHERE
        )
        self.alloc_id = secrets.token_hex(16)
        self.alloc_dir = Path(self.plugin_config.data_dir) / "allocs" / self.alloc_id
        self.stopping = threading.Event()
        self._print_lock = threading.Lock()
        self.bridge = BridgeSettings()
        self.group_networks = GroupNetworks(
            Path(self.plugin_config.data_dir) / "network" / "groups", self.plugin_config.cni_path
        )
        self.netns: dict[str, GroupNetwork] = {}  # group name → its namespace (modes other than host)

    def say(self, text: str, stream: TextIO | None = None) -> None:
        with self._print_lock:
            print(text, file=stream or self.out, flush=True)

    # -- set up ---------------------------------------------------------------------------

    def _resolve_image(self, config: dict[str, Any]) -> dict[str, Any]:
        # A relative oci:/oci-archive:/docker-archive: path, or a relative .aci file, is taken relative to
        # the job file.
        image = str(config.get("image", ""))
        if image.endswith(".aci") and ":" not in image and not image.startswith("/"):
            return {**config, "image": str((self.job_dir / image).resolve())}
        for transport in ("oci:", "oci-archive:", "docker-archive:"):
            if image.startswith(transport) and not image[len(transport) :].startswith("/"):
                return {**config, "image": transport + str((self.job_dir / image[len(transport) :]).resolve())}
        return config

    def prepare(self, group: GroupSpec, spec: TaskSpec, ports: tuple[Allocated, ...]) -> RunningTask:
        env = task_env(self.job, group, spec, self.alloc_id, ports)
        config = self._resolve_image(interpolate(spec.config, env, f'task "{spec.name}" config'))
        where = f'{self.job.name}: task "{spec.name}" rkt config'
        decode_msgpack(TaskConfig, encode_like_nomad(TaskConfig, config), where)  # fail before starting anything
        task_dir = self.alloc_dir / spec.name
        for sub in (
            self.alloc_dir / "alloc" / "logs",
            self.alloc_dir / "alloc" / "data",
            self.alloc_dir / "alloc" / "tmp",
            task_dir / "local",
            task_dir / "secrets",
            task_dir / "tmp",
        ):
            sub.mkdir(parents=True, exist_ok=True)
        return RunningTask(spec, group, config, env)

    def _task_config(self, task: RunningTask, ports: tuple[Allocated, ...]) -> driver_pb2.TaskConfig:
        logs = self.alloc_dir / "alloc" / "logs"
        memory_max = max(task.spec.memory_mb, task.spec.memory_max_mb)
        isolation = None
        joined = self.netns.get(task.group.name)
        if joined is not None:  # Nomad's group namespace: the plugin joins it
            hosts = driver_pb2.HostsConfig(hostname=task.group.hostname, address=joined.ip)
            isolation = driver_pb2.NetworkIsolationSpec(
                mode=driver_pb2.NetworkIsolationSpec.GROUP,
                path=joined.path,
                hostsConfig=hosts if task.group.hostname else None,
            )
        return driver_pb2.TaskConfig(
            id=f"{self.alloc_id}/{task.spec.name}/{secrets.token_hex(4)}",
            name=task.spec.name,
            alloc_id=self.alloc_id,
            job_name=self.job.name,
            job_id=self.job.name,
            task_group_name=task.group.name,
            namespace="default",
            user=task.spec.user,
            msgpack_driver_config=encode_like_nomad(TaskConfig, task.config),
            env=task.env,
            alloc_dir=str(self.alloc_dir),
            stdout_path=str(logs / f".{task.spec.name}.stdout.fifo"),
            stderr_path=str(logs / f".{task.spec.name}.stderr.fifo"),
            resources=driver_pb2.Resources(
                allocated_resources=driver_pb2.AllocatedTaskResources(
                    cpu=driver_pb2.AllocatedCpuResources(cpu_shares=task.spec.cpu_mhz),
                    memory=driver_pb2.AllocatedMemoryResources(
                        memory_mb=task.spec.memory_mb, memory_max_mb=task.spec.memory_max_mb
                    ),
                ),
                linux_resources=driver_pb2.LinuxResources(
                    cpu_shares=task.spec.cpu_mhz, memory_limit_bytes=memory_max * MIB
                ),
                ports=[driver_pb2.PortMapping(label=p.label, value=p.value, to=p.to, host_ip=p.host_ip) for p in ports],
            ),
            network_isolation_spec=isolation,
        )

    def _start_logs(self, task: RunningTask, config: driver_pb2.TaskConfig) -> None:
        logs = self.alloc_dir / "alloc" / "logs"
        name = task.spec.name
        for path, kind, stream in (
            (config.stdout_path, "stdout", self.out),
            (config.stderr_path, "stderr", sys.stderr),
        ):
            if not Path(path).exists():
                task.logmons.append(LogMon(Path(path), logs, f"{name}.{kind}", self._echo(name, stream)))

    def _echo(self, name: str, stream: TextIO) -> Callable[[str], None]:
        return lambda line: self.say(f"{name} | {line}", stream)

    # -- group networks (what a Nomad client makes for network { mode = ... }) --------------

    def group_confs(self, groups: list[GroupSpec]) -> dict[str, conflist.NetworkConf | None]:
        """The CNI network of each group with a namespace of its own (None: ``none``, only lo),
        checked before anything starts."""
        confs: dict[str, conflist.NetworkConf | None] = {}
        for group in groups:
            if group.network_mode == "bridge":
                confs[group.name] = nomad_bridge(self.bridge)
            elif group.network_mode == "none":
                confs[group.name] = None
            elif group.network_mode.startswith("cni/"):
                confs[group.name] = self._named_cni(group)
        return confs

    def _named_cni(self, group: GroupSpec) -> conflist.NetworkConf:
        name = group.network_mode[len("cni/") :]
        conf_dir = self.plugin_config.cni_config_dir
        found = conflist.scan(conf_dir)
        conf = found.networks.get(name)
        if conf is not None:
            return conf
        problem = (
            f'{self.job.name}: group "{group.name}": network mode "{group.network_mode}": no CNI network named '
            f'"{name}" in {conf_dir} (the plugin config\'s cni_config_dir); '
            f"known there: {', '.join(sorted(found.networks)) or 'none'}"
        )
        if found.broken:
            problem += "; unreadable files there: " + "; ".join(f"{p}: {e}" for p, e in found.broken.items())
        raise JobFileError(problem)

    def netns_name(self, groups: list[GroupSpec], group: GroupSpec) -> str:
        """Nomad names an allocation's namespace after the allocation; the runner's one allocation
        holds every group, so with several such groups each gets ``<alloc id>-<n>``."""
        own = [g.name for g in groups if g.own_netns]
        return self.alloc_id if len(own) == 1 else f"{self.alloc_id}-{own.index(group.name)}"

    def create_networks(
        self,
        groups: list[GroupSpec],
        confs: dict[str, conflist.NetworkConf | None],
        ports: dict[str, tuple[Allocated, ...]],
    ) -> None:
        for group in groups:
            if group.name not in confs:
                continue
            conf = confs[group.name]
            if group.network_mode == "bridge":
                ensure_admin_rule(self.bridge)
            forwards = [GroupPort(p.label, p.value, p.to, p.host_ip) for p in ports[group.name]]
            made = self.group_networks.create(self.netns_name(groups, group), conf, forwards)
            self.netns[group.name] = made
            where = f" on {conf.name} ({made.ip})" if conf is not None and made.ip else " (only lo)"
            self.say(f"{group.name}: network mode {group.network_mode}: namespace {made.path}{where}")

    def destroy_networks(self) -> None:
        """Each group's CNI DEL and namespace; every one is tried, the first error is raised."""
        first: Exception | None = None
        for group, made in list(self.netns.items()):
            try:
                self.group_networks.destroy(made.name)
                del self.netns[group]
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    def reap_stale_networks(self) -> None:
        """Group networks of an earlier run that was killed before it could tear them down."""
        for name in self.group_networks.stale():
            try:
                self.group_networks.destroy(name)
                self.say(f"removed the group network {name} of an earlier run that is gone")
            except Exception as exc:
                self.say(f"nomad-rkt-driver: cannot remove the stale group network {name}: {exc}", sys.stderr)

    def warn_ignored_ports(self, task: RunningTask) -> None:
        """port_map/ports of a task in a group namespace do nothing: the client forwards the group's ports."""
        port_map = task.config.get("port_map") or {}
        blocks = port_map if isinstance(port_map, list) else [port_map]  # python-hcl2 gives blocks as lists
        labels = [str(k) for block in blocks if isinstance(block, dict) for k in block]
        labels += [str(label) for label in task.config.get("ports") or []]
        if not task.group.own_netns or not labels:
            return
        self.say(
            f"{task.spec.name}: warning: port_map/ports ({', '.join(dict.fromkeys(labels))}) are ignored in "
            f'network mode "{task.group.network_mode}": each group port is forwarded from its host port to its '
            '`to` (port "<label>" { to = <port> }), and the task listens on NOMAD_PORT_<label>',
            sys.stderr,
        )

    # -- running --------------------------------------------------------------------------

    def start(self, plugin: PluginProcess, task: RunningTask, ports: tuple[Allocated, ...]) -> None:
        config = self._task_config(task, ports)
        self._start_logs(task, config)
        task.task_id = ""  # a restart's previous pod is destroyed already
        response = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config))
        task.task_id = config.id
        address = response.network_override.addr
        self.say(f"{task.spec.name}: started" + (f", pod address {address}" if address else ""))
        task.done.clear()
        threading.Thread(target=self._wait, args=(plugin, task), daemon=True).start()

    def _wait(self, plugin: PluginProcess, task: RunningTask) -> None:
        task.result = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task.task_id))
        task.done.set()

    def stop(self, plugin: PluginProcess, task: RunningTask) -> None:
        if task.task_id and not task.done.is_set():
            timeout = DurationProto()
            timeout.FromNanoseconds(int(task.spec.kill_timeout_s * 1e9))
            plugin.driver.StopTask(
                driver_pb2.StopTaskRequest(task_id=task.task_id, timeout=timeout, signal=task.spec.kill_signal)
            )
            task.done.wait(task.spec.kill_timeout_s + 15)
        self.destroy(plugin, task)

    def destroy(self, plugin: PluginProcess, task: RunningTask) -> None:
        if task.task_id:
            plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=task.task_id, force=True))

    def set_config(self, plugin: PluginProcess) -> None:
        cores = [base_pb2.ClientTopologyCore(core_id=i, guess_speed=2000) for i in range(os.cpu_count() or 1)]
        plugin.base.SetConfig(
            base_pb2.SetConfigRequest(
                msgpack_config=encode_like_nomad(PluginConfig, self.plugin_body),
                plugin_api_version="v0.1.0",
                nomad_config=base_pb2.NomadConfig(
                    driver=base_pb2.NomadDriverConfig(Topology=base_pb2.ClientTopology(cores=cores))
                ),
            )
        )

    def watch_events(self, plugin: PluginProcess) -> EventWatcher:
        """Show this allocation's task events (pull progress, OOM kills, warnings) as they come."""
        stream = plugin.driver.TaskEvents(driver_pb2.TaskEventsRequest())
        return EventWatcher(stream, EventPrinter(self.alloc_id, self.say))

    def cleanup(self, tasks: list[RunningTask]) -> None:
        for task in tasks:
            for logmon in task.logmons:
                logmon.stop()
        shutil.rmtree(self.alloc_dir, ignore_errors=True)


def exit_code_of(result: driver_pb2.WaitTaskResponse | None) -> int:
    if result is None:
        return 1
    if result.err:
        return 1
    return result.result.exit_code & 0xFF if result.result.exit_code >= 0 else 1


def supervise(
    runner: Runner, plugin: PluginProcess, tasks: list[RunningTask], ports: dict[str, tuple[Allocated, ...]]
) -> int:
    """Report exits, restart per restart {} attempts; the batch exit code (service: 0 after Ctrl-C)."""
    batch = runner.job.type in ("batch", "sysbatch")
    attempts = {id(t): 0 for t in tasks}
    reported: set[int] = set()
    while not runner.stopping.is_set():
        for task in tasks:
            if not task.done.is_set() or id(task) in reported:
                continue
            reported.add(id(task))
            code = exit_code_of(task.result)
            err = task.result.err if task.result else ""
            runner.say(f"{task.spec.name} exited with code {code}{': ' + err if err else ''}")
            if code != 0 and attempts[id(task)] < task.spec.restart.attempts:
                attempts[id(task)] += 1
                runner.destroy(plugin, task)
                time.sleep(task.spec.restart.delay_s)
                runner.say(f"{task.spec.name}: restarting (attempt {attempts[id(task)]})")
                runner.start(plugin, task, ports[task.group.name])
                reported.discard(id(task))
            elif not batch:
                runner.say(f"{task.spec.name} will not be restarted; stopping the job")
                runner.stopping.set()
        if batch and len(reported) == len(tasks):
            break
        runner.stopping.wait(0.2)
    codes = [exit_code_of(t.result) for t in tasks if t.done.is_set()]
    return next((c for c in codes if c != 0), 0)


def _start_and_supervise(
    runner: Runner,
    plugin: PluginProcess,
    tasks: list[RunningTask],
    groups: list[GroupSpec],
    ports: dict[str, tuple[Allocated, ...]],
) -> int:
    for task in tasks:
        runner.warn_ignored_ports(task)
        runner.say(f"{task.spec.name}: starting {task.config['image']}")
        runner.start(plugin, task, ports[task.group.name])
    for group in groups:
        for port in ports[group.name]:
            runner.say(f"{group.name}: port {port.label} -> http://{port.host_ip}:{port.value}/")
    return supervise(runner, plugin, tasks, ports)


def client_bridge(path: Path) -> BridgeSettings:
    """The Nomad client's bridge settings from a ``client {}`` block of the agent config file that
    holds the plugin block (``bridge_network_name``, ``bridge_network_subnet``,
    ``bridge_network_hairpin_mode``); Nomad's defaults without one."""
    body = single(load_hcl(path).get("client")) or {}
    default = BridgeSettings()
    settings = BridgeSettings(
        name=str(body.get("bridge_network_name") or default.name),
        subnet=str(body.get("bridge_network_subnet") or default.subnet),
        hairpin=bool(body.get("bridge_network_hairpin_mode", default.hairpin)),
    )
    try:
        settings.check(f"{path}: client")
    except ValueError as exc:
        raise JobFileError(str(exc)) from None
    return settings


def run_job(job: JobSpec, job_path: Path, plugin_config: Path | None) -> int:
    """Run ``job``; the process exit code (the first failing task's code for batch jobs)."""
    from nomad_rkt_driver.cli.ports import allocate

    body = plugin_block(plugin_config) if plugin_config else {}
    runner = Runner(job, job_path.parent, body)
    runner.bridge = client_bridge(plugin_config) if plugin_config else BridgeSettings()
    groups = [g for g in job.groups if any(t.driver == "rkt" for t in g.tasks)]
    if not groups:
        runner.say(f'{job_path}: no task uses driver = "rkt"', sys.stderr)
        return 1
    confs = runner.group_confs(groups)  # a missing cni/<name> network fails before anything is made
    ports = {g.name: allocate(g.ports) for g in groups}
    tasks = [runner.prepare(g, t, ports[g.name]) for g in groups for t in g.tasks if t.driver == "rkt"]
    previous = signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    try:
        # The runner's pods are marked as its own: an agent's plugin sharing the data dir leaves them alone.
        with PluginProcess(env={**os.environ, RUNNER_ENV: str(os.getpid())}) as plugin:
            runner.set_config(plugin)
            watcher = runner.watch_events(plugin)
            try:
                runner.reap_stale_networks()
                runner.create_networks(groups, confs, ports)
                code = _start_and_supervise(runner, plugin, tasks, groups, ports)
                if runner.stopping.is_set():
                    runner.say("stopping: each task gets its kill_signal, then SIGKILL after its kill_timeout")
            finally:
                try:
                    for task in tasks:  # also the ones started before another failed to start
                        runner.stop(plugin, task)
                finally:
                    runner.destroy_networks()  # after the tasks, as a Nomad client does
                    watcher.stop()
            runner.say(f"job {job.name}: all tasks stopped and cleaned up")
            return code
    except grpc.RpcError as exc:
        runner.say(f"nomad-rkt-driver: {exc.details()}", sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
        runner.cleanup(tasks)
