"""The content-addressed image store in the plugin's data dir.

Layout under ``root`` (all on one filesystem, so renames are atomic)::

    blobs/sha256/<hex>        verified blobs: manifests, configs, layer tarballs (read-only, 0444)
    layers/sha256/<hex>/      a layer blob unpacked on its own, usable as an overlayfs lower dir
    records/<sha256 of name>.json  one ImageRecord per image name (the name is inside)
    locks/<sha256 of key>     flock(2) files behind :meth:`Store.lock`
    sizes/sha256/<hex>        disk usage of an unpacked layer, measured once (layers never change)
    tmp/<owner>/              temp files of one live Store instance; tmp/<owner>.lock is held
                              while it lives, so an instance that finds an unheld one removes it

Rules that make it safe:

* A blob appears only by ``rename`` of a temp file whose digest (and size, when known) was
  checked while it was written; a crash or error leaves at most a temp file, which is never
  read and is removed by the next :class:`Store` to open.
* Two writers of one digest (threads or processes) each write and verify their own temp; the
  one that finds the blob already there discards its copy, so both succeed and one blob remains.
* An unpacked layer likewise appears only by renaming a fully unpacked temp directory.
* :meth:`Store.lock` is an flock on a per-key file, so it excludes threads and processes alike.
  Pulls hold ``lock(GC_LOCK, shared=True)`` while they write and save a record;
  :meth:`Store.remove_image` holds it exclusively, so it never deletes a blob that a pull in
  flight has just decided not to download.
* A start holds :meth:`Store.pin_image` (a shared flock per image name) from the moment its image
  is in the store until its pod mounts it; removal of an unused image (:meth:`Store.remove_unused_image`)
  takes that flock exclusively without waiting, so it never removes an image a start is about to use.
  An image's last use is the mtime of its record file (:meth:`Store.touch_image`, one utime).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, NotFound
from nomad_rkt_driver.images.reference import validate_digest

if TYPE_CHECKING:
    from nomad_rkt_driver.images.unpack import UnpackBudget

log = logging.getLogger(__name__)

GC_LOCK = "gc"
EVICT_LOCK = "evict"  # one budget enforcement (or `image gc`) at a time, across processes
USE_LOCK = "use:"  # + image name: shared while a task starts from the image
STARTING = "a task is starting from it"
_CHUNK = 1 << 20
_LOCK_POLL_S = (0.005, 0.1)  # first and longest sleep between flock attempts when waiting with a timeout
_RECORD_VERSION = 1


class DigestMismatch(InvalidArgument):
    """Content did not hash to the digest (or size) it was announced with; nothing was stored."""

    def __init__(self, expected: str, actual: str, *, what: str = "blob") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} {expected}: content does not match its digest (got {actual}); nothing was stored")


class BlobNotFound(NotFound):
    """The store has no blob with this digest."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"blob {digest} is not in the image store")


class StoreFull(FailedPrecondition):
    """The store's filesystem ran out of space (or quota) while writing; the partial file was removed."""

    recoverable = True


class LockTimeout(FailedPrecondition):
    """A store lock stayed held by someone else for longer than the caller would wait."""

    recoverable = True


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image: its blob, how it is encoded, and (when known) its uncompressed digest."""

    digest: str
    media_type: str
    size: int
    diff_id: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """What the store knows about one image name once all its blobs are stored.

    ``name`` is the canonical reference string (``str(reference)``) and the record's key.
    ``manifest_digest`` names the image manifest chosen for this host (not the index), and
    ``index_digest`` the index or manifest list it came from, if any. ``kind`` is ``oci``
    (OCI and Docker schema2 alike) or ``aci``. Layers are listed bottom first.
    """

    name: str
    manifest_digest: str
    config_digest: str
    layers: tuple[LayerRef, ...]
    pulled_at: float = field(default_factory=time.time)
    manifest_media_type: str = ""
    index_digest: str | None = None
    kind: str = "oci"
    signature: str | None = None  # the cosign signature that verified it, kept to verify it again offline

    def to_json(self) -> bytes:
        data = asdict(self)
        data["version"] = _RECORD_VERSION
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ImageRecord:
        data = json.loads(raw)
        data.pop("version", None)
        data["layers"] = tuple(LayerRef(**layer) for layer in data["layers"])
        return cls(**data)

    @property
    def blobs(self) -> tuple[str, ...]:
        """Every digest this image needs: manifest, index, config and layers."""
        extra = (self.index_digest,) if self.index_digest else ()
        return (self.manifest_digest, self.config_digest, *extra, *(layer.digest for layer in self.layers))


def digest_hasher(digest: str) -> hashlib._Hash:
    """A fresh hasher for ``digest``'s algorithm (after validating the digest's form)."""
    validate_digest(digest)
    return hashlib.new(digest.partition(":")[0])


class BlobWriter:
    """A temp file that becomes the blob ``digest`` on :meth:`commit`, and only if it verifies.

    Use through :meth:`Store.writer`; it removes the temp on any exit without a commit.
    """

    def __init__(self, store: Store, digest: str, size: int | None) -> None:
        self.digest = digest
        self.size = size
        self.bytes_written = 0
        self._store = store
        self._hasher = digest_hasher(digest)
        self._path = store._temp_path("blob")
        self._file: IO[bytes] | None = open(self._path, "xb")  # noqa: SIM115 - closed in commit/abort

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "write after commit/abort"
        self.bytes_written += len(chunk)
        if self.size is not None and self.bytes_written > self.size:
            raise DigestMismatch(self.digest, f"more than the {self.size} bytes announced")
        self._hasher.update(chunk)
        with _enospc_as_store_full(self._store.root):
            self._file.write(chunk)

    def commit(self) -> Path:
        """Verify size and digest, then rename into place. Returns the blob's path."""
        assert self._file is not None, "commit twice"
        actual = f"{self.digest.partition(':')[0]}:{self._hasher.hexdigest()}"
        if self.size is not None and self.bytes_written != self.size:
            raise DigestMismatch(self.digest, f"{self.bytes_written} bytes instead of the {self.size} announced")
        if actual != self.digest:
            raise DigestMismatch(self.digest, actual)
        with _enospc_as_store_full(self._store.root):
            self._file.flush()
            if self._store.durable:
                os.fsync(self._file.fileno())
            self._file.close()
        self._file = None
        os.chmod(self._path, 0o444)
        final = self._store._blob_location(self.digest)
        if final.is_file():
            return final  # someone stored it meanwhile: keep theirs, abort() drops ours
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, final)
        return final

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


class Store:
    """Blobs by digest, image records by name, and unpacked layers, under one directory.

    ``durable`` fsyncs each blob before it is renamed into place (off only for benchmarks and
    throwaway stores).
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        for sub in ("blobs", "layers", "records", "locks", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "tmp", 0o700)
        self._clean_abandoned_temps()
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._tmp = self.root / "tmp" / owner
        self._owner_lock = os.open(self.root / "tmp" / f"{owner}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._owner_lock, fcntl.LOCK_EX)
        self._tmp.mkdir(mode=0o700)

    def close(self) -> None:
        """Remove this instance's temp dir and release its claim on it (also done at exit by the OS)."""
        if self._owner_lock < 0:
            return
        shutil.rmtree(self._tmp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._tmp}.lock")
        os.close(self._owner_lock)
        self._owner_lock = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """The path of the stored blob ``digest``.

        Raises:
            InvalidArgument: the digest is malformed.
            BlobNotFound: the blob is not stored.
        """
        path = self._blob_location(digest)
        if not path.is_file():
            raise BlobNotFound(digest)
        return path

    def has_blob(self, digest: str) -> bool:
        """Whether the blob ``digest`` is stored (and so was verified when it was written)."""
        return self._blob_location(digest).is_file()

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int | None = None) -> Iterator[BlobWriter]:
        """Stream a blob in: ``with store.ingest(d, size) as w: w.write(chunk)...``.

        The blob is committed when the block ends without an exception; on any exception (or a
        digest/size mismatch at commit) the temp is removed and nothing is stored. A blob that
        is already stored stays as it is and the new (verified) copy is dropped.

        Raises:
            DigestMismatch: the content is not ``digest`` or not ``size`` bytes.
            StoreFull: the disk filled up.
        """
        blob = BlobWriter(self, digest, size)
        try:
            yield blob
            blob.commit()
        finally:
            blob.abort()

    def ingest_file(self, digest: str, source: IO[bytes], size: int | None = None) -> Path:
        """Copy a blob in from a binary file object, verifying it; return its path.

        Raises:
            DigestMismatch: the content is not ``digest`` (or not ``size`` bytes); nothing stored.
            StoreFull: the disk filled up; nothing stored.
        """
        with self.ingest(digest, size) as blob:
            while chunk := source.read(_CHUNK):
                blob.write(chunk)
        return self._blob_location(digest)

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store a small blob held in memory; return its digest (sha256 unless ``digest`` says otherwise).

        Raises:
            DigestMismatch: ``digest`` was given and ``data`` does not match it; nothing stored.
        """
        if digest is None:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self.ingest(digest, len(data)) as blob:
            blob.write(data)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        """The whole content of a (small) blob.

        Raises:
            BlobNotFound: no such blob.
        """
        try:
            return self._blob_location(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open_blob(self, digest: str) -> IO[bytes]:
        """A binary file object on a blob, for streaming reads.

        Raises:
            BlobNotFound: no such blob.
        """
        try:
            return open(self._blob_location(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def delete_blob(self, digest: str) -> bool:
        """Remove a blob; True if it was there. Callers hold ``lock(GC_LOCK)``."""
        try:
            os.unlink(self._blob_location(digest))
            return True
        except FileNotFoundError:
            return False

    # -- locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold an flock named ``key`` (any string) for the block: exclusive, or shared if asked.

        ``timeout`` None waits forever.

        Raises:
            LockTimeout: the lock was not had within ``timeout`` seconds.
        """
        name = hashlib.sha256(key.encode()).hexdigest()
        fd = os.open(self.root / "locks" / name, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            _flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout, key)
            yield
        finally:
            os.close(fd)  # closing the only fd on the open file description releases the flock

    # -- image records -------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.root / "records" / f"{hashlib.sha256(name.encode()).hexdigest()}.json"

    def save_image(self, name: str, record: ImageRecord) -> None:
        """Write (or replace) the record for image ``name``, atomically.

        Raises:
            InvalidArgument: ``record.name`` is not ``name``.
            BlobNotFound: a blob the record names is not stored (a record never points at nothing).
        """
        if record.name != name:
            raise InvalidArgument(f"image record for {record.name!r} cannot be saved as {name!r}")
        for digest in record.blobs:
            if not self.has_blob(digest):
                raise BlobNotFound(digest)
        self._write_atomic(self._record_path(name), record.to_json())

    def lookup_image(self, name: str) -> ImageRecord | None:
        """The record saved under ``name``, or None."""
        try:
            return ImageRecord.from_json(self._record_path(name).read_bytes())
        except FileNotFoundError:
            return None

    def list_images(self) -> list[ImageRecord]:
        """Every image record, sorted by name."""
        records = []
        for path in (self.root / "records").glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                records.append(ImageRecord.from_json(path.read_bytes()))
        return sorted(records, key=lambda r: r.name)

    def remove_image(self, name: str, *, timeout: float | None = None) -> bool:
        """Forget the image ``name`` and delete the blobs and unpacked layers no other record uses.

        Returns whether the record existed. Takes ``lock(GC_LOCK)`` exclusively, so it waits for
        pulls in flight (up to ``timeout``, then LockTimeout). The caller makes sure nothing uses
        the image (:meth:`remove_unused_image` does both).
        """
        with self.lock(GC_LOCK, timeout=timeout):
            return self._remove_locked(name)

    def _remove_locked(self, name: str) -> bool:
        record = self.lookup_image(name)
        if record is None:
            return False
        os.unlink(self._record_path(name))
        still_used = {d for other in self.list_images() for d in other.blobs}
        for digest in record.blobs:
            if digest not in still_used:
                self.delete_blob(digest)
                self._remove_unpacked(digest)
        return True

    # -- use: what keeps an image, and when it was last used ----------------------------------

    def touch_image(self, name: str) -> None:
        """Record that a task started from image ``name`` now (one utime of its record)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._record_path(name))

    def last_used(self, name: str) -> float | None:
        """When a task last started from image ``name`` (or it was stored), or None without a record."""
        try:
            return self._record_path(name).stat().st_mtime
        except FileNotFoundError:
            return None

    def pin_image(self, name: str, *, timeout: float | None = None) -> ImagePin:
        """Keep image ``name`` from being removed as unused until the pin is released.

        Waits while a removal of that image is under way (then the record is gone: look it up again).

        Raises:
            LockTimeout: a removal held the image for longer than ``timeout``.
        """
        key = USE_LOCK + name
        fd = os.open(
            self.root / "locks" / hashlib.sha256(key.encode()).hexdigest(), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600
        )
        try:
            _flock(fd, fcntl.LOCK_SH, timeout, key)
        except BaseException:
            os.close(fd)
            raise
        return ImagePin(fd)

    def mounted_layers(self, record: ImageRecord, mounts: str | None = None) -> list[str]:
        """The layers of ``record`` when one mount (a pod's overlay, of any process) has all of them.

        That is a pod running from this image; [] otherwise. A mount with only some of them runs
        another image that shares them, and that image's record keeps the shared layers anyway.
        """
        if mounts is None:
            mounts = Path("/proc/mounts").read_text()
        dirs = [str(self.layer_dir(layer.digest)) for layer in record.layers]
        if dirs and any(all(d in line for d in dirs) for line in mounts.splitlines()):
            return [layer.digest for layer in record.layers]
        return []

    def image_in_use(
        self, record: ImageRecord, referenced: Collection[str] = (), mounts: str | None = None
    ) -> str | None:
        """Why ``record`` must stay, or None when nothing uses it.

        The one "in use" rule of every removal (image GC, the disk budget, ``image rm``/``image gc``):
        a task of the caller names it (``referenced``), a start pinned it (:meth:`pin_image`), or a pod
        has one of its layers mounted.
        """
        try:
            with self.lock(USE_LOCK + record.name, timeout=0):
                return self._used_by(record, referenced, mounts)
        except LockTimeout:
            return STARTING

    def remove_unused_image(
        self, name: str, referenced: Collection[str] = (), *, timeout: float | None = None
    ) -> str | None:
        """Remove image ``name`` (as :meth:`remove_image`) unless :meth:`image_in_use` says why not.

        Returns None when it was removed, else the reason it was kept ("not in the store" too).
        Under ``lock(GC_LOCK)`` (waiting up to ``timeout`` for pulls in flight, then LockTimeout),
        it takes the image's use flock without waiting, so no start can pin it halfway through
        and a start never waits for a pull of another image.
        """
        with self.lock(GC_LOCK, timeout=timeout), contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.lock(USE_LOCK + name, timeout=0))
            except LockTimeout:
                return STARTING
            record = self.lookup_image(name)
            if record is None:
                return "not in the store"
            reason = self._used_by(record, referenced, None)
            if reason is None:
                self._remove_locked(name)
            return reason

    def _used_by(self, record: ImageRecord, referenced: Collection[str], mounts: str | None) -> str | None:
        if record.name in referenced:
            return "a task uses it"
        busy = self.mounted_layers(record, mounts)
        if busy:
            return f"used by running pods (layers {', '.join(d[:19] for d in busy)})"
        return None

    def sweep_unreferenced(self, *, timeout: float | None = None) -> int:
        """Delete blobs, unpacked layers and size notes that no image record names; return the bytes freed.

        Such leftovers come from a crash between writes, or from a removal that raced an unpack.
        Holds ``lock(GC_LOCK)`` exclusively (waiting up to ``timeout``, then LockTimeout), so no
        pull or import is writing blobs meanwhile; a layer some mount still uses is left alone.
        """
        with self.lock(GC_LOCK, timeout=timeout):
            records = self.list_images()
            blobs = {d for r in records for d in r.blobs}
            layers = {layer.digest for r in records for layer in r.layers}
            mounts = Path("/proc/mounts").read_text()
            freed = 0
            for directory in (self.root / "blobs").iterdir():
                for blob in directory.iterdir():
                    if f"{directory.name}:{blob.name}" not in blobs:
                        freed += self.part_size(f"{directory.name}:{blob.name}")
                        self.delete_blob(f"{directory.name}:{blob.name}")
            for directory in (self.root / "layers").iterdir():
                for layer in directory.iterdir():
                    digest = f"{directory.name}:{layer.name}"
                    if digest not in layers and str(layer) not in mounts:
                        freed += self.part_size(f"layer:{digest}")
                        self._remove_unpacked(digest)
            sizes = self.root / "sizes"
            for note in sizes.glob("*/*") if sizes.is_dir() else ():
                if not (self.root / "layers" / note.parent.name / note.name).is_dir():
                    with contextlib.suppress(FileNotFoundError):
                        note.unlink()
            return freed

    # -- disk usage ----------------------------------------------------------------------------

    def generation(self) -> tuple[int, ...]:
        """Changes when an image record or an unpacked layer is added or removed (by any process).

        Directory mtimes and counts: a few stats, cheap enough for every StartTask. Using an
        image (:meth:`touch_image`) does not change it.
        """
        records = self.root / "records"
        stamp = [records.stat().st_mtime_ns, len(os.listdir(records))]
        for directory in sorted((self.root / "layers").iterdir()):
            st = directory.stat()
            stamp += [st.st_mtime_ns, st.st_nlink]
        return tuple(stamp)

    def parts(self, record: ImageRecord) -> tuple[str, ...]:
        """What ``record`` occupies: its blob digests and ``layer:<digest>`` for each unpacked layer."""
        return (*record.blobs, *(f"layer:{layer.digest}" for layer in record.layers))

    def part_size(self, part: str) -> int:
        """Bytes on disk (as du counts them) of a part from :meth:`parts`; 0 when it is not there."""
        if part.startswith("layer:"):
            digest = part.removeprefix("layer:")
            directory = self.layer_dir(digest)
            algorithm, _, hexpart = digest.partition(":")
            cache = self.root / "sizes" / algorithm / hexpart
            with contextlib.suppress(FileNotFoundError, ValueError):
                size = int(cache.read_text())
                return size if directory.is_dir() else 0
            if not directory.is_dir():
                return 0
            size = _tree_bytes(directory)
            cache.parent.mkdir(parents=True, exist_ok=True)
            self._write_atomic(cache, str(size).encode())
            return size
        try:
            return self._blob_location(part).stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    # -- unpacked layers -----------------------------------------------------------------------

    def _blob_location(self, digest: str) -> Path:
        algorithm, _, hexpart = validate_digest(digest).partition(":")
        return self.root / "blobs" / algorithm / hexpart

    def layer_dir(self, digest: str) -> Path:
        """Where the layer blob ``digest`` is (or will be) unpacked."""
        algorithm, _, hexpart = validate_digest(digest).partition(":")
        return self.root / "layers" / algorithm / hexpart

    def unpacked_layer(
        self,
        digest: str,
        media_type: str = "",
        *,
        diff_id: str | None = None,
        budget: UnpackBudget | None = None,
        allow_devices: bool = False,
        strip_prefix: str = "",
    ) -> Path:
        """The directory holding layer blob ``digest`` unpacked on its own (overlayfs whiteouts
        and opaque markers included), unpacking it first if needed; at most once across threads
        and processes.

        Raises:
            BlobNotFound: the layer blob is not stored.
            UnsafeLayer, LayerBudgetExceeded, CorruptLayer: see :mod:`nomad_rkt_driver.images.unpack`;
                nothing is left.
            StoreFull: the disk filled up while unpacking; nothing is left.
        """
        from nomad_rkt_driver.images import unpack  # unpack imports this module for its errors

        final = self.layer_dir(digest)
        if final.is_dir():
            return final
        with self.lock(f"layer:{digest}"):
            if final.is_dir():
                return final
            temp = self._temp_path("layer")
            with self.open_blob(digest) as blob, _enospc_as_store_full(self.root):
                unpack.unpack_layer(
                    blob,
                    temp,
                    digest=digest,
                    media_type=media_type,
                    diff_id=diff_id,
                    budget=budget or unpack.UnpackBudget(),
                    allow_devices=allow_devices,
                    strip_prefix=strip_prefix,
                )
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(temp, final)
            return final

    def _remove_unpacked(self, digest: str) -> None:
        algorithm, _, hexpart = digest.partition(":")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / "sizes" / algorithm / hexpart)
        final = self.layer_dir(digest)
        if not final.exists():
            return
        doomed = self._temp_path("doomed")
        os.rename(final, doomed)  # vanish at once; the slow delete happens out of sight
        shutil.rmtree(doomed, ignore_errors=True)

    # -- internals -----------------------------------------------------------------------------

    def _temp_path(self, kind: str) -> Path:
        return self._tmp / f"{kind}-{uuid.uuid4().hex}"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        temp = self._temp_path("record")
        try:
            with _enospc_as_store_full(self.root), open(temp, "xb") as f:
                f.write(data)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _clean_abandoned_temps(self) -> None:
        """Remove temp dirs whose owner's lock is free: their Store died without cleaning up."""
        tmp = self.root / "tmp"
        for entry in tmp.iterdir():
            if entry.suffix == ".lock":
                continue
            lock_path = tmp / f"{entry.name}.lock"
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = -1
            try:
                if fd >= 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live Store owns it
                log.info("removing temp files left by a store that died", extra={"path": str(entry)})
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()
            finally:
                if fd >= 0:
                    os.close(fd)
        # Lock files whose directory is already gone.
        for lock_path in tmp.glob("*.lock"):
            if not (tmp / lock_path.stem).exists():
                fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    lock_path.unlink()
                except (BlockingIOError, FileNotFoundError):
                    pass
                finally:
                    os.close(fd)


class ImagePin:
    """A shared flock that keeps one image from removal as unused (see :meth:`Store.pin_image`)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()


def _tree_bytes(root: Path) -> int:
    """Disk usage of a directory tree as du counts it: allocated blocks, hard links once."""
    total = root.lstat().st_blocks * 512
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def _flock(fd: int, mode: int, timeout: float | None, key: str) -> None:
    if timeout is None:
        fcntl.flock(fd, mode)
        return
    deadline = time.monotonic() + timeout
    delay = _LOCK_POLL_S[0]
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(f"image store lock {key!r} still held by another pull after {timeout:g}s") from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _LOCK_POLL_S[1])


@contextlib.contextmanager
def _enospc_as_store_full(root: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull(f"image store {root} is out of disk space: {exc.strerror}") from exc
        raise
