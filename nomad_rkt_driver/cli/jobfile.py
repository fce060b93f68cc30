"""Reading Nomad job files (HCL2) for what the local runner and `validate` need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nomad_rkt_driver.cli.hclfile import load_hcl, single
from nomad_rkt_driver.cli.variables import VariableError, VarInputs, apply
from nomad_rkt_driver.config.durations import Duration


class JobFileError(ValueError):
    """The job file cannot be used; the message names the file and the block."""


@dataclass(frozen=True)
class RktTask:
    job: str
    group: str
    task: str
    config: dict[str, Any]


@dataclass(frozen=True)
class PortSpec:
    label: str
    static: int = 0
    to: int = 0


@dataclass(frozen=True)
class Restart:
    attempts: int = 0
    delay_s: float = 1.0


@dataclass(frozen=True)
class TaskSpec:
    name: str
    driver: str
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    kill_signal: str = ""
    kill_timeout_s: float = 5.0
    cpu_mhz: int = 100
    memory_mb: int = 300
    memory_max_mb: int = 0
    restart: Restart = field(default_factory=Restart)


@dataclass(frozen=True)
class GroupSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    ports: tuple[PortSpec, ...] = ()
    network_mode: str = "host"
    restart: Restart = field(default_factory=Restart)
    hostname: str = ""  # network { hostname = ... } (bridge mode)

    @property
    def own_netns(self) -> bool:
        """Whether the group gets a network namespace of its own (every mode but host)."""
        return self.network_mode != "host"


@dataclass(frozen=True)
class JobSpec:
    name: str
    type: str
    groups: tuple[GroupSpec, ...]
    meta: dict[str, str] = field(default_factory=dict)


def _labelled(blocks: Any) -> list[tuple[str, dict[str, Any]]]:
    """python-hcl2 gives ``name "label" { }`` blocks as [{label: body-or-[body]}]."""
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in blocks or []:
        for label, body in entry.items():
            found.append((label, single(body)))
    return found


def _duration(value: Any, where: str) -> float:
    try:
        return float(Duration.parse(str(value)))
    except ValueError as exc:
        raise JobFileError(f"{where}: {exc}") from exc


def _restart(block: Any, where: str, base: Restart) -> Restart:
    body = single(block) if block else None
    if not body:
        return base
    return Restart(
        attempts=int(body.get("attempts", base.attempts)),
        delay_s=_duration(body["delay"], f"{where} restart.delay") if "delay" in body else base.delay_s,
    )


SUPPORTED_MODES = "host (the default), bridge, none, cni/<network name>"


def _network(network: Any, where: str) -> tuple[tuple[PortSpec, ...], str, str]:
    """The group's ports, network mode and hostname; JobFileError for a mode Nomad does not know."""
    if isinstance(network, list) and len(network) > 1:
        raise JobFileError(f"{where}: {len(network)} network blocks; a group has at most one")
    body = single(network) if network else None
    if not body:
        return (), "host", ""
    ports = tuple(
        PortSpec(label, int(spec.get("static", 0) or 0), int(spec.get("to", 0) or 0))
        for label, spec in _labelled(body.get("port"))
    )
    mode = str(body.get("mode") or "host")
    if mode not in ("host", "bridge", "none") and not (mode.startswith("cni/") and len(mode) > len("cni/")):
        raise JobFileError(f'{where}: network mode "{mode}" is not supported; use one of {SUPPORTED_MODES}')
    if mode == "none" and ports:
        raise JobFileError(
            f'{where}: network mode "none" has no network to forward ports to; '
            f"remove the port blocks ({', '.join(p.label for p in ports)}) or use another mode"
        )
    return ports, mode, str(body.get("hostname") or "")


def _check_task_network(group: GroupSpec, task: TaskSpec, where: str) -> None:
    """A task in a group namespace joins it: its own ``net`` cannot apply (the plugin would ignore it)."""
    if not group.own_netns or task.driver != "rkt" or "net" not in task.config:
        return
    raise JobFileError(
        f"{where}: config net = {task.config['net']!r} cannot apply: the group's network mode is "
        f'"{group.network_mode}", so every task joins the allocation\'s network namespace; remove net, '
        'or leave the group in mode "host" to give each task its own networks'
    )


def _task(name: str, body: dict[str, Any], where: str, restart: Restart) -> TaskSpec:
    resources = single(body.get("resources")) or {}
    return TaskSpec(
        name=name,
        driver=str(body.get("driver", "")),
        config=dict(single(body.get("config")) or {}),
        env={str(k): str(v) for k, v in (single(body.get("env")) or {}).items()},
        user=str(body.get("user", "")),
        kill_signal=str(body.get("kill_signal", "")),
        kill_timeout_s=_duration(body["kill_timeout"], f"{where} kill_timeout") if "kill_timeout" in body else 5.0,
        cpu_mhz=int(resources.get("cpu", 100)),
        memory_mb=int(resources.get("memory", 300)),
        memory_max_mb=int(resources.get("memory_max", 0)),
        restart=_restart(body.get("restart"), where, restart),
    )


def load_job(path: Path, inputs: VarInputs | None = None) -> JobSpec:
    """The one job in ``path`` with its input variables evaluated (``inputs``: -var, -var-file,
    NOMAD_VAR_*); raises JobFileError (or the HCL parser's error) when unusable."""
    try:
        data = apply(load_hcl(path), str(path), inputs)
    except VariableError as exc:
        raise JobFileError(str(exc)) from None
    jobs = _labelled(data.get("job"))
    if len(jobs) != 1:
        raise JobFileError(f"{path}: expected exactly one job block, found {len(jobs)}")
    job_name, job = jobs[0]
    groups = []
    for group_name, group in _labelled(job.get("group")):
        where = f'{path}: group "{group_name}"'
        restart = _restart(group.get("restart"), where, Restart())
        ports, mode, hostname = _network(group.get("network"), where)
        tasks = tuple(
            _task(task_name, body, f'{where} task "{task_name}"', restart)
            for task_name, body in _labelled(group.get("task"))
        )
        spec = GroupSpec(group_name, tasks, ports, mode, restart, hostname)
        for task in tasks:
            _check_task_network(spec, task, f'{where} task "{task.name}"')
        groups.append(spec)
    meta = {str(k): str(v) for k, v in (single(job.get("meta")) or {}).items()}
    return JobSpec(job_name, str(job.get("type", "service")), tuple(groups), meta)


def rkt_tasks(path: Path, inputs: VarInputs | None = None) -> list[RktTask]:
    """Every task with ``driver = "rkt"`` in the job file, with its ``config {}`` body."""
    job = load_job(path, inputs)
    return [
        RktTask(job.name, group.name, task.name, task.config)
        for group in job.groups
        for task in group.tasks
        if task.driver == "rkt"
    ]
