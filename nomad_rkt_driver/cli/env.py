"""The NOMAD_* environment a Nomad client gives a task, and ${...} interpolation in job values."""

from __future__ import annotations

import re
from typing import Any

from nomad_rkt_driver.cli.jobfile import GroupSpec, JobSpec, TaskSpec
from nomad_rkt_driver.cli.ports import Allocated

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class InterpolationError(ValueError):
    """A ${NAME} in the job names nothing the task's environment has."""


def task_env(
    job: JobSpec, group: GroupSpec, task: TaskSpec, alloc_id: str, ports: tuple[Allocated, ...]
) -> dict[str, str]:
    """NOMAD_* variables as Nomad sets them for an image-isolated task, then the task's env {}."""
    env = {
        "NOMAD_ALLOC_ID": alloc_id,
        "NOMAD_ALLOC_NAME": f"{job.name}.{group.name}[0]",
        "NOMAD_ALLOC_INDEX": "0",
        "NOMAD_JOB_ID": job.name,
        "NOMAD_JOB_NAME": job.name,
        "NOMAD_GROUP_NAME": group.name,
        "NOMAD_TASK_NAME": task.name,
        "NOMAD_NAMESPACE": "default",
        "NOMAD_REGION": "global",
        "NOMAD_DC": "dc1",
        "NOMAD_ALLOC_DIR": "/alloc",
        "NOMAD_TASK_DIR": "/local",
        "NOMAD_SECRETS_DIR": "/secrets",
        "NOMAD_CPU_LIMIT": str(task.cpu_mhz),
        "NOMAD_MEMORY_LIMIT": str(task.memory_mb),
    }
    for port in ports:
        inside = port.to if port.to > 0 else port.value
        env.update(
            {
                f"NOMAD_PORT_{port.label}": str(inside),
                f"NOMAD_ALLOC_PORT_{port.label}": str(inside),
                f"NOMAD_HOST_PORT_{port.label}": str(port.value),
                f"NOMAD_IP_{port.label}": port.host_ip,
                f"NOMAD_HOST_IP_{port.label}": port.host_ip,
                f"NOMAD_ADDR_{port.label}": f"{port.host_ip}:{port.value}",
                f"NOMAD_HOST_ADDR_{port.label}": f"{port.host_ip}:{port.value}",
            }
        )
    env.update({f"NOMAD_META_{k}": v for k, v in job.meta.items()})
    for key, value in task.env.items():
        env[key] = interpolate(value, env, f'env "{key}"')
    return env


def interpolate(value: Any, env: dict[str, str], where: str) -> Any:
    """Replace ${NAME} in strings (recursively in lists and maps) with the task's environment."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise InterpolationError(f"{where}: ${{{name}}} is not set for this task")
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [interpolate(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    return value
