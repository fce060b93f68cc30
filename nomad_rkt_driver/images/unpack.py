"""Unpack one image layer on its own into an empty directory, safely, as an overlayfs lower dir.

Each layer is unpacked separately (layers are shared between images and unpacked once), so
OCI whiteouts cannot delete anything here. They become overlayfs markers instead, which
hide the lower layers' entries when the pod's rootfs is mounted:

* ``dir/.wh.NAME``      → a character device 0:0 at ``dir/NAME`` (unless this layer itself has NAME)
* ``dir/.wh..wh..opq``  → xattr ``trusted.overlay.opaque=y`` on ``dir``
* other ``.wh..wh.*``   → ignored (aufs bookkeeping)

Refused, with an :class:`UnsafeLayer` naming the layer digest and the entry, leaving nothing:
absolute names and names with ``..``; a write whose parent path goes through a symlink that
leaves the layer root (absolute target, or ``..`` past the root), including symlinks made
earlier in the same layer; hardlinks to a path outside the root or not yet extracted; block
and character devices other than the 0:0 whiteout unless ``allow_devices``; entry kinds tar
does not define. :class:`LayerBudgetExceeded` stops decompression bombs: the uncompressed
stream and the number of entries are both budgeted. Symlinks themselves may point anywhere:
they are data, resolved later inside the container's root.

Kept: numeric uid/gid, full modes (setuid/setgid/sticky), mtimes (directories last), and
xattrs from PAX ``SCHILY.xattr.*`` / ``LIBARCHIVE.xattr.*`` headers (``trusted.overlay.*``
ones other than ``opaque=y`` are dropped: they would steer overlayfs). The uncompressed
stream is hashed as it is read and checked against ``diff_id`` when one is given.

All paths are handled through an in-memory model of what this unpack has created, so no
filesystem lookup can be fooled: the directory is private until the caller renames it.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images.decompress import CorruptLayer, Readable, UnsupportedCompression, decompressed
from nomad_rkt_driver.images.store import digest_hasher

log = logging.getLogger(__name__)
__all__ = [
    "CorruptLayer",
    "LayerBudgetExceeded",
    "UnpackBudget",
    "UnpackStats",
    "UnsafeLayer",
    "UnsupportedCompression",
    "unpack_layer",
]

DEFAULT_MAX_BYTES = 16 << 30  # uncompressed tar stream of one layer
DEFAULT_MAX_ENTRIES = 1_000_000
MAX_HEADER_BYTES = 1 << 20  # one PAX / GNU long-name header, read into memory by tarfile
_MAX_SYMLINK_HOPS = 40
_COPY_CHUNK = 1 << 20
# tarfile's stream reader re-slices its buffer on every read: 32 KiB measured fastest here
# (10 KiB default: +25% time; 64 KiB: +20%) on a layer of 3000 small and 4 big files.
_TAR_READ_BYTES = 32 << 10
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_OVERLAY_OPAQUE = "trusted.overlay.opaque"


class UnsafeLayer(InvalidArgument):
    """A layer entry that could escape the root or is not allowed; nothing was unpacked."""

    def __init__(self, digest: str, entry: str, problem: str) -> None:
        self.digest = digest
        self.entry = entry
        super().__init__(f"layer {digest}: entry {entry!r}: {problem}; the layer was refused and nothing was kept")


class LayerBudgetExceeded(UnsafeLayer):
    """The layer is bigger (uncompressed) or has more entries than the unpack budget allows."""


@dataclass(frozen=True)
class UnpackBudget:
    """Limits for one layer: uncompressed tar bytes and entries (plugin config ``image_unpack_*``)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES


@dataclass
class UnpackStats:
    """What one unpack did."""

    entries: int = 0
    stream_bytes: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    diff_id: str = ""
    seconds: float = 0.0


def unpack_layer(
    blob: IO[bytes],
    dest: Path,
    *,
    digest: str,
    media_type: str = "",
    diff_id: str | None = None,
    budget: UnpackBudget = UnpackBudget(),  # frozen, so sharing the default is safe
    allow_devices: bool = False,
    strip_prefix: str = "",
) -> UnpackStats:
    """Unpack the (compressed) layer tar ``blob`` into the new directory ``dest``.

    ``strip_prefix`` (e.g. ``rootfs/`` for an ACI) keeps only entries under it, re-rooted.

    Raises:
        UnsafeLayer, LayerBudgetExceeded: a refused entry (``dest`` is removed).
        CorruptLayer: not a tar / compressed stream, or the diff_id does not match (``dest`` is removed).
        FileExistsError: ``dest`` already exists.
    """
    started = time.monotonic()
    os.mkdir(dest, 0o755)
    try:
        hasher = digest_hasher(diff_id) if diff_id is not None else hashlib.sha256()
        with decompressed(blob, digest=digest, media_type=media_type) as stream:
            meter = _Meter(stream, hasher, budget.max_bytes, digest)
            unpacker = _Unpacker(dest, digest, budget, allow_devices, strip_prefix)
            unpacker.run(meter)
            meter.drain()
        stats = unpacker.stats
        stats.stream_bytes = meter.count
        stats.diff_id = f"{hasher.name}:{hasher.hexdigest()}"
        if diff_id is not None and stats.diff_id != diff_id:
            raise CorruptLayer(f"layer {digest}: uncompressed content is {stats.diff_id}, not diff_id {diff_id}")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    stats.seconds = time.monotonic() - started
    return stats


class _Meter:
    """A read-only stream wrapper that hashes and counts what passes, and enforces the byte budget."""

    def __init__(self, inner: Readable, hasher: object, limit: int, digest: str) -> None:
        self._inner = inner
        self._update: Callable[[bytes], None] = hasher.update  # type: ignore[attr-defined]
        self._limit = limit
        self._digest = digest
        self.count = 0
        self.entry = ""

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise LayerBudgetExceeded(
                self._digest, self.entry, f"uncompressed layer is larger than the budget of {self._limit} bytes"
            )
        self._update(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever follows the tar's end marker, so the diff_id covers it all."""
        while self.read(_COPY_CHUNK):
            pass


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses oversized PAX / GNU long-name headers before tarfile reads them into memory."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        header_types = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
        if self.type in header_types and self.size > MAX_HEADER_BYTES:
            raise tarfile.HeaderError(f"a {self.size}-byte extended header (limit {MAX_HEADER_BYTES})")
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]


_DIR, _FILE, _SYMLINK, _WHITEOUT_DEV = "dir", "file", "symlink", "whiteout"


class _Unpacker:
    """One pass over one tar stream; ``model`` maps each created relative path to its kind."""

    def __init__(self, dest: Path, digest: str, budget: UnpackBudget, allow_devices: bool, prefix: str) -> None:
        self.root = str(dest)
        self.digest = digest
        self.budget = budget
        self.allow_devices = allow_devices
        self.prefix = [p for p in prefix.split("/") if p]
        self.model: dict[str, str] = {"": _DIR}
        self.links: dict[str, str] = {}
        self.dir_times: list[tuple[str, int]] = []
        self.stats = UnpackStats()
        self.entry = ""

    def run(self, meter: _Meter) -> None:
        try:
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=meter, mode="r|", tarinfo=_SafeTarInfo, bufsize=_TAR_READ_BYTES
            ) as tar:
                for member in tar:
                    self.entry = meter.entry = member.name
                    self._count(member)
                    self._one(tar, member)
        except (tarfile.TarError, EOFError) as exc:
            raise CorruptLayer(f"layer {self.digest}: not a valid tar stream near {self.entry!r}: {exc}") from exc
        for path, mtime_ns in reversed(self.dir_times):
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _count(self, member: tarfile.TarInfo) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.budget.max_entries:
            raise LayerBudgetExceeded(self.digest, member.name, f"more than {self.budget.max_entries} entries")
        if member.size > self.budget.max_bytes:
            raise LayerBudgetExceeded(
                self.digest, member.name, f"a {member.size}-byte file exceeds the budget of {self.budget.max_bytes}"
            )

    def _refuse(self, problem: str) -> UnsafeLayer:
        return UnsafeLayer(self.digest, self.entry, problem)

    # -- names and paths -----------------------------------------------------------------------

    def _parts(self, name: str, what: str = "name") -> list[str] | None:
        """Relative components of a tar name, or None when outside ``strip_prefix``."""
        if name.startswith("/"):
            raise self._refuse(f"absolute {what} {name!r}")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._refuse(f"{what} {name!r} has a '..' component")
        if self.prefix:
            if parts[: len(self.prefix)] != self.prefix:
                return None
            parts = parts[len(self.prefix) :]
        return parts

    def _resolve_dir(self, parts: list[str], *, create: bool) -> str:
        """The real relative path of directory ``parts``, following symlinks made by this layer.

        Missing directories are created (``create``) or refused. A symlink whose target leaves
        the root (absolute, or ``..`` past the top) is refused.
        """
        done: list[str] = []
        todo = deque(parts)
        hops = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise self._refuse("a symlink in its path leads out of the layer root")
                done.pop()
                continue
            path = "/".join([*done, part])
            kind = self.model.get(path)
            if kind == _SYMLINK:
                hops += 1
                target = self.links[path]
                if target.startswith("/") or hops > _MAX_SYMLINK_HOPS:
                    raise self._refuse(f"its path goes through symlink {path!r} -> {target!r}, out of the layer root")
                todo.extendleft(reversed(target.split("/")))
                continue
            if kind is None or kind == _WHITEOUT_DEV:
                if not create:
                    raise self._refuse(f"{path!r} does not exist in this layer")
                self._remove(path)
                os.mkdir(self._abs(path), 0o755)
                self.model[path] = _DIR
            elif kind != _DIR:
                raise self._refuse(f"{path!r} is not a directory")
            done.append(part)
        return "/".join(done)

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _remove(self, rel: str) -> None:
        kind = self.model.pop(rel, None)
        if kind is None:
            return
        self.links.pop(rel, None)
        if kind == _DIR:
            shutil.rmtree(self._abs(rel))
            doomed = [p for p in self.model if p.startswith(rel + "/")]
            for p in doomed:
                del self.model[p]
                self.links.pop(p, None)
        else:
            os.unlink(self._abs(rel))

    # -- entries -------------------------------------------------------------------------------

    def _one(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self._parts(member.name)
        if parts is None:
            return
        if not parts:
            if member.isdir():
                self._metadata(self.root, member, is_dir=True)
                return
            raise self._refuse("the layer root must be a directory")
        base = parts[-1]
        if any(p.startswith(_WHITEOUT + _WHITEOUT) for p in parts[:-1]):
            return  # inside aufs bookkeeping dirs (.wh..wh.plnk/...)
        if base.startswith(_WHITEOUT):
            self._whiteout(parts[:-1], base)
            return
        parent = self._resolve_dir(parts[:-1], create=True)
        rel = f"{parent}/{base}" if parent else base
        path = self._abs(rel)
        existing = self.model.get(rel)
        if member.isdir():
            if existing != _DIR:
                self._remove(rel)
                os.mkdir(path, 0o700)
                self.model[rel] = _DIR
            self._metadata(path, member, is_dir=True)
            return
        self._remove(rel)
        if member.isreg():
            self._regular(tar, member, path)
        elif member.issym():
            os.symlink(member.linkname, path)
            self.links[rel] = member.linkname
            self.model[rel] = _SYMLINK
            self._metadata(path, member)
            return
        elif member.islnk():
            source = self._hardlink_source(member.linkname)
            os.link(self._abs(source), path, follow_symlinks=False)
            self.model[rel] = self.model[source]
            if source in self.links:
                self.links[rel] = self.links[source]
            return  # a hardlink shares its target's inode and metadata
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        elif member.ischr() or member.isblk():
            if self._device(member, path):
                self.model[rel] = _WHITEOUT_DEV
                self.stats.whiteouts += 1
                return
        else:
            raise self._refuse(f"unsupported tar entry type {member.type!r}")
        self.model[rel] = _FILE
        self._metadata(path, member)

    def _regular(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb", buffering=0) as out:
            shutil.copyfileobj(source, out, _COPY_CHUNK)

    def _hardlink_source(self, linkname: str) -> str:
        """The relative path of an already extracted non-directory that a hardlink may point at."""
        parts = self._parts(linkname, "hardlink target")
        if not parts:
            raise self._refuse(f"hardlink target {linkname!r} is outside the layer root")
        parent = self._resolve_dir(parts[:-1], create=False)
        rel = f"{parent}/{parts[-1]}" if parent else parts[-1]
        kind = self.model.get(rel)
        if kind is None:
            raise self._refuse(f"hardlink target {linkname!r} is not (yet) extracted from this layer")
        if kind in (_DIR, _WHITEOUT_DEV):
            raise self._refuse(f"hardlink target {linkname!r} is a {kind}")
        return rel

    def _device(self, member: tarfile.TarInfo, path: str) -> bool:
        """Create a device node; True when it is the 0:0 whiteout (overlayfs's native form)."""
        whiteout = member.ischr() and member.devmajor == 0 and member.devminor == 0
        if not whiteout and not self.allow_devices:
            kind = "character" if member.ischr() else "block"
            raise self._refuse(
                f"{kind} device {member.devmajor}:{member.devminor} is not allowed (the plugin allows device nodes"
                " in images only with image_allow_devices)"
            )
        kind_bits = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(path, kind_bits | (0 if whiteout else 0o600), os.makedev(member.devmajor, member.devminor))
        return whiteout

    def _whiteout(self, parent_parts: list[str], base: str) -> None:
        parent = self._resolve_dir(parent_parts, create=True)
        if base == _OPAQUE:
            os.setxattr(self._abs(parent), _OVERLAY_OPAQUE, b"y")
            self.stats.opaque_dirs += 1
            return
        if base.startswith(_WHITEOUT + _WHITEOUT):
            return
        name = base[len(_WHITEOUT) :]
        if not name or name in (".", ".."):
            raise self._refuse("a whiteout with no name")
        rel = f"{parent}/{name}" if parent else name
        if rel in self.model:
            return  # this layer has the entry itself: the whiteout only hides lower layers' copies
        os.mknod(self._abs(rel), stat.S_IFCHR, os.makedev(0, 0))
        self.model[rel] = _WHITEOUT_DEV
        self.stats.whiteouts += 1

    # -- metadata ------------------------------------------------------------------------------

    def _metadata(self, path: str, member: tarfile.TarInfo, *, is_dir: bool = False) -> None:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears setuid/setgid
        for name, value in _xattrs(member):
            _set_xattr(path, name, value)
        mtime_ns = int(member.mtime * 1_000_000_000)
        if is_dir:
            self.dir_times.append((path, mtime_ns))
        else:
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    found = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found.append((key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            found.append((key[len("LIBARCHIVE.xattr.") :], base64.b64decode(value + "==")))
    return [
        (name, value)
        for name, value in found
        if not name.startswith("trusted.overlay.") or (name == _OVERLAY_OPAQUE and value == b"y")
    ]


def _set_xattr(path: str, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
        log.warning("xattr not kept: the filesystem refuses it", extra={"path": path, "xattr": name})
