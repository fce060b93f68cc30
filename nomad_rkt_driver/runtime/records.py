"""Pod ids, the durable pod record, exit results and their JSON form.

A :class:`PodRecord` is written atomically to ``<state>/pods/<id>/pod.json`` once the pod runs
and holds everything a brand-new process needs to find the pod again. The first time an exit
is observed its :class:`ExitResult` is written next to it (``result.json``), so the result
survives the removal of the cgroup (where the OOM count lives).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument
from nomad_rkt_driver.types import ExitResult

RECORD_VERSION: Final = 1
POD_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_UNSAFE_RE: Final = re.compile(r"[^A-Za-z0-9_.-]+")
READABLE_MAX_CHARS: Final = 80
HASH_CHARS: Final = 10
SIGNAL_MAX: Final = 64  # SIGRTMAX on Linux


class CorruptRecord(FailedPrecondition):
    """A pod's state file is missing fields or is not JSON; the message names the file."""


def pod_id_for(task_id: str) -> str:
    """A runc/cgroup/path-safe pod id for Nomad's task id (``<alloc_id>/<task>/<random>``).

    Unsafe runs of characters (``/``, spaces, ...) become ``-``, the result is cut to 80
    characters, and the first 10 hex digits of the task id's SHA-256 are appended, so two
    task ids never share a pod id even when they sanitise alike. Deterministic: the same task
    id always gives the same pod id.
    """
    readable = _UNSAFE_RE.sub("-", task_id).strip("-.")[:READABLE_MAX_CHARS] or "task"
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:HASH_CHARS]
    return f"{readable}-{digest}" if readable[0].isalnum() else f"t{readable}-{digest}"


def check_pod_id(pod_id: str) -> str:
    """Return ``pod_id`` when safe as a runc id, cgroup and file name; else raise InvalidArgument."""
    if not POD_ID_RE.match(pod_id):
        raise InvalidArgument(f"pod id {pod_id!r} is not safe (letters, digits, _ . - only); use pod_id_for(task_id)")
    return pod_id


def exit_result_from_status(status: int, *, oom_killed: bool) -> ExitResult:
    """From conmon's status (which already encodes a signal death as 128+signo), Nomad style."""
    signo = status - 128 if 128 < status <= 128 + SIGNAL_MAX else 0
    return ExitResult(exit_code=status, signal=signo, oom_killed=oom_killed)


@dataclass(frozen=True)
class PodStatus:
    """``state`` is ``running``, ``exited`` (then ``result`` is set) or ``gone`` (no monitor, no record)."""

    pod_id: str
    state: str
    result: ExitResult | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass(frozen=True)
class PodRecord:
    """Everything needed to find, wait for, stop and clean up a pod from any process."""

    pod_id: str
    bundle: str
    cgroups_path: str
    exit_file: str
    persist_dir: str
    conmon_pid: int
    conmon_started: int  # /proc start time (ticks), guards against pid reuse
    container_pid: int
    container_started: int
    started_at: float  # wall clock, seconds since the epoch
    stdout_path: str
    stderr_path: str
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> PodRecord:
        """Parse a record; raises CorruptRecord naming ``where``."""
        try:
            raw: dict[str, Any] = json.loads(text)
            if raw.get("version") != RECORD_VERSION:
                raise CorruptRecord(f"pod record {where} has version {raw.get('version')!r}, expected {RECORD_VERSION}")
            return cls(**raw)
        except (ValueError, TypeError, AttributeError) as exc:
            raise CorruptRecord(f"pod record {where} is corrupt ({exc}); destroy the pod and start it again") from exc


def _durable_temp(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` durably (unique temp file, fsync, rename); safe from many threads."""
    os.replace(_durable_temp(path, text), path)


def write_once(path: Path, text: str) -> bool:
    """Create ``path`` durably with ``text`` unless it exists (first writer wins); True if this call wrote it."""
    tmp = _durable_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def result_to_json(result: ExitResult, finished_at: float) -> str:
    """The durable form of an exit result."""
    return json.dumps({**asdict(result), "finished_at": finished_at})


def result_from_json(text: str, where: str) -> tuple[ExitResult, float]:
    """Parse ``result.json``; raises CorruptRecord."""
    try:
        raw = json.loads(text)
        finished = float(raw.pop("finished_at", 0.0))
        return ExitResult(**raw), finished
    except (ValueError, TypeError, AttributeError) as exc:
        raise CorruptRecord(f"exit result {where} is corrupt ({exc}); destroy the pod") from exc
