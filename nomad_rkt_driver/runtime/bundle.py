"""Per-pod OCI bundles: an overlayfs (or copied) rootfs over image layer dirs, plus ``config.json``.

Layout of a bundle dir ``B``: ``B/rootfs`` (the overlay mount point), ``B/upper`` and ``B/work``
(the pod's private overlay dirs), ``B/config.json``. :func:`create_bundle` undoes every step it
has done when a later one fails, so a failure leaves no mount and no directory;
:func:`delete_bundle` is idempotent.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.errors import DriverError, FailedPrecondition, InvalidArgument
from nomad_rkt_driver.runtime import aside

log = logging.getLogger(__name__)

MNT_DETACH: Final = 2
OVERLAY_OPTIONS_MAX_BYTES: Final = 4095  # the mount(2) data argument is one page
CONFIG_NAME: Final = "config.json"
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MountFailed(FailedPrecondition):
    """mount(2) or umount(2) refused; the message names the path and the errno."""


@dataclass(frozen=True)
class Bundle:
    """Paths of a created bundle."""

    path: Path
    rootfs: Path
    overlay: bool

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME


def mount_overlay(lower_dirs: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount overlayfs at ``target`` with ``lower_dirs`` (top first); raises MountFailed/InvalidArgument."""
    if not lower_dirs:
        raise InvalidArgument("no image layer directories to build the rootfs from; the image has no layers")
    for d in lower_dirs:
        if not d.is_dir() or "," in str(d) or ":" in str(d):
            raise InvalidArgument(f"layer dir {d} does not exist or has ',' or ':' in its path; re-unpack the image")
    data = f"lowerdir={':'.join(str(d) for d in lower_dirs)},upperdir={upper},workdir={work}"
    if len(data) > OVERLAY_OPTIONS_MAX_BYTES:
        raise InvalidArgument(f"{len(lower_dirs)} layers make overlay options too long; use no_overlay for this image")
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise MountFailed(f"overlay mount at {target} failed: {os.strerror(err)} (options {data})")


def unmount(target: Path) -> None:
    """Unmount ``target`` if it is mounted (lazily when busy); raises MountFailed on other errors."""
    while is_mountpoint(target):
        if _libc.umount2(str(target).encode(), 0) == 0:
            continue
        err = ctypes.get_errno()
        if err == errno.EBUSY and _libc.umount2(str(target).encode(), MNT_DETACH) == 0:
            continue
        if err in (errno.EINVAL, errno.ENOENT):
            return
        raise MountFailed(f"cannot unmount {target}: {os.strerror(err)}; check `fuser -m {target}`")


def is_mountpoint(path: Path) -> bool:
    """True when ``path`` is a mount point in this process's mount namespace."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(_unescape(line.split()[4]) == target for line in f)


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below ``prefix`` (used by cleanup checks)."""
    root = os.path.realpath(prefix)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [_unescape(line.split()[4]) for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def copy_layers(lower_dirs: list[Path], target: Path) -> None:
    """``no_overlay`` mode: copy the layers bottom-up into ``target`` (whiteouts are not interpreted)."""
    for layer in reversed(lower_dirs):
        shutil.copytree(layer, target, symlinks=True, dirs_exist_ok=True)


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` as JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, path)


def create_bundle(path: Path, lower_dirs: list[Path], config: dict[str, Any], *, no_overlay: bool = False) -> Bundle:
    """Create the bundle at ``path`` (must not exist); raises FailedPrecondition/InvalidArgument, leaving nothing."""
    if path.exists():
        raise FailedPrecondition(f"bundle dir {path} already exists; destroy the pod first")
    bundle = Bundle(path=path, rootfs=path / "rootfs", overlay=not no_overlay)
    with contextlib.ExitStack() as undo:
        path.mkdir(parents=True)
        undo.callback(delete_bundle, path)
        bundle.rootfs.mkdir()
        if no_overlay:
            copy_layers(lower_dirs, bundle.rootfs)
        else:
            (path / "upper").mkdir()
            (path / "work").mkdir()
            mount_overlay(lower_dirs, path / "upper", path / "work", bundle.rootfs)
        write_config(bundle.config, {**config, "root": {**config.get("root", {}), "path": str(bundle.rootfs)}})
        undo.pop_all()
    log.debug("bundle created at %s (overlay=%s)", path, not no_overlay)
    return bundle


def delete_bundle(path: Path) -> None:
    """Unmount the rootfs, rename the dir aside atomically and remove it; quiet when already gone."""
    rootfs = path / "rootfs"
    if rootfs.exists():
        unmount(rootfs)
    if not path.exists():
        return
    try:
        aside.remove(path)
    except OSError as exc:
        raise DriverError(
            f"cannot remove bundle {path}: {exc}; its renamed-aside copy is collected by the next reconcile pass"
        ) from exc
