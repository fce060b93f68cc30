"""Reading Nomad job files (HCL2) for the rkt tasks they contain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nomad_rkt_driver.cli.hclfile import load_hcl, single


@dataclass(frozen=True)
class RktTask:
    job: str
    group: str
    task: str
    config: dict[str, Any]


def _labelled(blocks: Any) -> list[tuple[str, dict[str, Any]]]:
    """python-hcl2 gives ``name "label" { }`` blocks as [{label: body-or-[body]}]."""
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in blocks or []:
        for label, body in entry.items():
            found.append((label, single(body)))
    return found


def rkt_tasks(path: Path) -> list[RktTask]:
    """Every task with ``driver = "rkt"`` in the job file, with its ``config {}`` body."""
    data = load_hcl(path)
    tasks = []
    for job_name, job in _labelled(data.get("job")):
        for group_name, group in _labelled(job.get("group")):
            for task_name, task in _labelled(group.get("task")):
                if task.get("driver") == "rkt":
                    config = single(task.get("config", {})) or {}
                    tasks.append(RktTask(job_name, group_name, task_name, dict(config)))
    return tasks
