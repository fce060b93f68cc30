"""Removing a directory tree by renaming it aside first, and collecting what a crash left of that.

A pod's state dir and its bundle are renamed to ``.deleting-<name>-<random>`` beside themselves in one
atomic step, then deleted; a crash (SIGKILL, a power cut) in between leaves the renamed tree. Such a
leftover is never looked at again by the pod code, so the reconcile pass collects it
(:func:`leftovers`, :func:`collect`) once it is older than the creation grace. A removal in progress
in this process registers its name before the rename, so a pass in the same process never deletes a
tree another thread is deleting; for other processes the grace stands guard (a rename sets the
tree's ctime, and every entry deleted from it moves its mtime).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Final

PREFIX: Final = ".deleting-"
_lock = threading.Lock()
_in_progress: set[Path] = set()


def remove(path: Path) -> None:
    """Rename ``path`` aside atomically, then delete it; quiet when it is already gone.
    An OSError of the deletion goes up (the renamed tree then waits for :func:`collect`)."""
    doomed = path.with_name(f"{PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    with _lock:
        _in_progress.add(doomed)
    try:
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed)
    finally:
        with _lock:
            _in_progress.discard(doomed)


def in_progress(path: Path) -> bool:
    """Whether a removal of this process is deleting ``path`` now."""
    with _lock:
        return path in _in_progress


def _age(now: float, path: Path) -> float | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return now - max(info.st_mtime, info.st_ctime)


def leftovers(roots: Iterable[Path], now: float | None = None) -> list[tuple[Path, float]]:
    """Renamed-aside trees in each root and one level down (a bundle inside a pod's dir), with their
    age; those a removal of this process is deleting now are left out."""
    now = time.time() if now is None else now
    found: list[tuple[Path, float]] = []
    for root in roots:
        if not root.is_dir():
            continue
        candidates = [*root.glob(f"{PREFIX}*"), *root.glob(f"*/{PREFIX}*")]
        for path in sorted(candidates):
            if path.parent != root and path.parent.name.startswith(PREFIX):
                continue  # inside a leftover: goes with it
            age = _age(now, path)
            if age is not None and not in_progress(path):
                found.append((path, age))
    return found


def collect(path: Path) -> None:
    """Delete one leftover of :func:`leftovers`. Refuses (FailedPrecondition) while a removal of this
    process deletes it, or while anything is mounted under it (never deletes across a mount)."""
    from nomad_rkt_driver.errors import FailedPrecondition
    from nomad_rkt_driver.runtime.bundle import mounts_under

    if not path.name.startswith(PREFIX):
        raise FailedPrecondition(f"{path} is not a removal leftover ({PREFIX}*)")
    with _lock:
        if path in _in_progress:
            raise FailedPrecondition(f"{path} is being removed by this process now")
        _in_progress.add(path)  # our own removals use fresh names; this keeps a second pass out
    try:
        mounted = mounts_under(path)
        if mounted:
            raise FailedPrecondition(f"{path} still has mounts {mounted}; unmount them, then run gc again")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
    finally:
        with _lock:
            _in_progress.discard(path)
