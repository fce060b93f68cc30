"""ACI archives (rkt.md §2.3): read, check, and keep them in the image store like OCI images.

An ACI is a tar, optionally gzip/bzip2/xz/zstd compressed, holding exactly a file ``manifest``
and a directory ``rootfs/``. :func:`inspect_aci` reads it once as a stream: it refuses any other
top-level entry, duplicate entries, absolute names, ``..`` components and a bad manifest (each
error names the entry or the manifest field), and hashes the uncompressed tar: the image ID is
``sha512-`` and that hex digest.

In the store an ACI is one layer: the archive file exactly as fetched (a blob named by the
sha256 of its bytes, the bytes its signature covers), unpacked with ``rootfs/`` stripped and
its uncompressed sha512 checked against the image ID (``diff_id``) by the safe unpacker, which
refuses symlink escapes, hardlinks out, devices and bombs. The record (``kind="aci"``) has the
raw ACI manifest as its config blob and, as its manifest blob, a small JSON document of ours
(:data:`ACI_RECORD_TYPE`) with the image ID, the image name, where it came from and the detached
signature it was fetched with, so a stored image can be verified again at every use. If
anything fails, nothing of the image is left in the store.

rkt keys its store by ``sha512-`` and the first 64 hex digits; :func:`find_by_image_id` accepts
any unambiguous prefix of at least 2 digits (``sha512-aa``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidArgument, NotFound
from nomad_rkt_driver.images.acimanifest import MANIFEST_MAX_BYTES, ACIManifest, parse_manifest
from nomad_rkt_driver.images.decompress import CorruptLayer, decompressed
from nomad_rkt_driver.images.store import GC_LOCK, ImageRecord, LayerRef, Store
from nomad_rkt_driver.images.unpack import LayerBudgetExceeded, UnpackBudget, _SafeTarInfo

log = logging.getLogger(__name__)

ACI_MEDIA_TYPE: Final = "application/vnd.appc.aci"
ACI_RECORD_TYPE: Final = "application/vnd.nomad-rkt.aci-record.v1+json"
STORE_KEY_HEX: Final = 64
MIN_ID_PREFIX_HEX: Final = 2
_CHUNK: Final = 1 << 20
_LOCK_TIMEOUT_S: Final = 300.0


class InvalidACI(InvalidArgument):
    """The file is not a well-formed ACI; nothing was stored."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        super().__init__(f"ACI {where}: {problem}; the image was refused and nothing was stored")


class ImageIDNotFound(NotFound):
    """No stored ACI has this image ID (prefix)."""


@dataclass(frozen=True)
class ACIInfo:
    """What one pass over an ACI found: its image ID, manifest, and the archive's own digest."""

    image_id: str  # sha512-<128 hex>
    manifest_bytes: bytes
    manifest: ACIManifest
    archive_digest: str  # sha256:<hex> of the file's bytes (compressed as it is)
    archive_size: int

    @property
    def diff_id(self) -> str:
        return "sha512:" + self.image_id.removeprefix("sha512-")

    @property
    def store_key(self) -> str:
        """rkt's store key: ``sha512-`` and the first 64 hex digits."""
        return self.image_id[: len("sha512-") + STORE_KEY_HEX]


@dataclass(frozen=True)
class StoredACI:
    """An ACI record in the store, with its parsed manifest and the signature kept with it."""

    record: ImageRecord
    image_id: str
    manifest: ACIManifest
    signature: bytes | None
    source: str
    archive: Path

    @property
    def store_key(self) -> str:
        return self.image_id[: len("sha512-") + STORE_KEY_HEX]


def file_digest(path: Path) -> tuple[str, int]:
    """``sha256:<hex>`` and size of a file."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


class _Hashing:
    """Passes reads through, hashing them with sha512 and stopping at ``limit`` bytes (bombs)."""

    def __init__(self, inner: Any, limit: int, where: str) -> None:
        self._inner = inner
        self._limit = limit
        self._where = where
        self.count = 0
        self.hasher = hashlib.sha512()

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._inner.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise LayerBudgetExceeded(
                self._where, "", f"the uncompressed ACI is larger than the budget of {self._limit} bytes"
            )
        self.hasher.update(data)
        return data


def inspect_aci(path: Path, where: str, budget: UnpackBudget | None = None) -> ACIInfo:
    """Read the ACI at ``path`` once: check its layout and manifest, compute its image ID.

    Raises:
        InvalidACI: not a (compressed) tar, an entry outside ``manifest``/``rootfs/``, a duplicate,
            an absolute or ``..`` name, no manifest or no rootfs.
        InvalidACIManifest: the manifest breaks a rule (the field is named).
        UnsupportedCompression: zstd without the zstd program.
    """
    budget = budget or UnpackBudget()
    archive_digest, archive_size = file_digest(path)
    seen: set[str] = set()
    manifest_bytes: bytes | None = None
    has_rootfs = False
    entry = ""
    with open(path, "rb") as raw:
        try:
            with decompressed(raw, digest=where, media_type=ACI_MEDIA_TYPE) as stream:
                hashing = _Hashing(stream, budget.max_bytes, where)
                with tarfile.open(  # type: ignore[call-overload]
                    fileobj=hashing, mode="r|", tarinfo=_SafeTarInfo
                ) as tar:
                    for member in tar:
                        entry = member.name
                        if len(seen) >= budget.max_entries:
                            raise LayerBudgetExceeded(where, entry, f"more than {budget.max_entries} entries")
                        name = _entry_name(member.name, where)
                        if name in seen:
                            raise InvalidACI(where, f"entry {member.name!r} appears twice in the archive")
                        seen.add(name)
                        if name == "manifest":
                            if not member.isreg():
                                raise InvalidACI(where, "entry 'manifest' must be a regular file")
                            if member.size > MANIFEST_MAX_BYTES:
                                raise InvalidACI(where, f"the manifest is larger than {MANIFEST_MAX_BYTES} bytes")
                            source = tar.extractfile(member)
                            assert source is not None
                            manifest_bytes = source.read()
                        elif name == "rootfs":
                            if not member.isdir():
                                raise InvalidACI(where, "entry 'rootfs' must be a directory")
                            has_rootfs = True
                        elif name.startswith("rootfs/"):
                            has_rootfs = True
                        else:
                            raise InvalidACI(
                                where,
                                f"entry {member.name!r} is outside manifest and rootfs/ (an ACI holds exactly "
                                "those two top-level entries)",
                            )
                while hashing.read(_CHUNK):  # what follows the end marker is part of the image ID too
                    pass
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidACI(where, f"not a valid tar archive near entry {entry!r}: {exc}") from exc
        except CorruptLayer as exc:
            raise InvalidACI(where, exc.message) from exc
    if manifest_bytes is None:
        raise InvalidACI(where, "it has no 'manifest' file at the top level")
    if not has_rootfs:
        raise InvalidACI(where, "it has no 'rootfs/' directory at the top level")
    manifest = parse_manifest(manifest_bytes, where)
    return ACIInfo(
        image_id="sha512-" + hashing.hasher.hexdigest(),
        manifest_bytes=manifest_bytes,
        manifest=manifest,
        archive_digest=archive_digest,
        archive_size=archive_size,
    )


def _entry_name(name: str, where: str) -> str:
    if name.startswith("/"):
        raise InvalidACI(where, f"entry {name!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidACI(where, f"entry {name!r} has a '..' component")
    return "/".join(parts)


def ingest_aci(
    store: Store, path: Path, info: ACIInfo, name: str, *, source: str, signature: bytes | None
) -> StoredACI:
    """Store the inspected ACI at ``path`` under record ``name`` and unpack its rootfs.

    Raises:
        UnsafeLayer, LayerBudgetExceeded, CorruptLayer: the rootfs was refused; nothing is left.
        StoreFull: the disk filled up; nothing is left.
    """
    doc = {
        "mediaType": ACI_RECORD_TYPE,
        "imageID": info.image_id,
        "name": info.manifest.name,
        "source": source,
        "archive": {"digest": info.archive_digest, "size": info.archive_size},
        "signature": base64.b64encode(signature).decode() if signature is not None else None,
    }
    with (
        store.lock(f"pull {name}", timeout=_LOCK_TIMEOUT_S),
        store.lock(GC_LOCK, shared=True, timeout=_LOCK_TIMEOUT_S),
        store.lock(f"aci {info.archive_digest}", timeout=_LOCK_TIMEOUT_S),
    ):
        added: list[str] = []
        try:
            if not store.has_blob(info.archive_digest):
                with open(path, "rb") as f:
                    store.ingest_file(info.archive_digest, f, info.archive_size)
                added.append(info.archive_digest)
            store.unpacked_layer(info.archive_digest, ACI_MEDIA_TYPE, diff_id=info.diff_id, strip_prefix="rootfs/")
            for data in (info.manifest_bytes, json.dumps(doc, sort_keys=True).encode()):
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                if not store.has_blob(digest):
                    store.put_bytes(data, digest)
                    added.append(digest)
            record = ImageRecord(
                name=name,
                manifest_digest="sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest(),
                config_digest="sha256:" + hashlib.sha256(info.manifest_bytes).hexdigest(),
                layers=(LayerRef(info.archive_digest, ACI_MEDIA_TYPE, info.archive_size, info.diff_id),),
                manifest_media_type=ACI_RECORD_TYPE,
                kind="aci",
            )
            store.save_image(name, record)
        except BaseException:
            for digest in added:
                store.delete_blob(digest)
            raise
    log.info("image %s: stored ACI %s (%s)", name, info.store_key, info.manifest.name)
    return StoredACI(record, info.image_id, info.manifest, signature, source, store.blob_path(info.archive_digest))


def load_stored(store: Store, record: ImageRecord) -> StoredACI:
    """The ACI behind a record of kind ``aci`` (its manifest parsed again, its signature decoded)."""
    doc = json.loads(store.read_bytes(record.manifest_digest))
    signature = base64.b64decode(doc["signature"]) if doc.get("signature") else None
    manifest = parse_manifest(store.read_bytes(record.config_digest), record.name)
    return StoredACI(
        record,
        str(doc["imageID"]),
        manifest,
        signature,
        str(doc.get("source", "")),
        store.blob_path(record.layers[0].digest),
    )


def stored(store: Store, name: str) -> StoredACI | None:
    """The ACI stored under record ``name``, if it is complete (blobs and unpacked rootfs present)."""
    record = store.lookup_image(name)
    if record is None or record.kind != "aci":
        return None
    if not all(store.has_blob(d) for d in record.blobs):
        return None
    with contextlib.suppress(InvalidArgument, KeyError, ValueError):
        return load_stored(store, record)
    return None


def find_by_image_id(store: Store, text: str) -> list[StoredACI]:
    """Stored ACIs whose image ID starts with ``text`` (``sha512-<hex prefix>``), signed ones first.

    Raises:
        InvalidArgument: the prefix is shorter than ``sha512-`` + 2 hex digits.
        ImageIDNotFound: no stored ACI matches (rkt's ``could not resolve image``).
        InvalidArgument: the prefix matches more than one image ID (give more digits).
    """
    hexpart = text.removeprefix("sha512-")
    if len(hexpart) < MIN_ID_PREFIX_HEX:
        raise InvalidArgument(f'image ID "{text}" is too short: give at least sha512-{"x" * MIN_ID_PREFIX_HEX}')
    wanted = "sha512:" + hexpart
    matches = [
        record
        for record in store.list_images()
        if record.kind == "aci" and record.layers and (record.layers[0].diff_id or "").startswith(wanted)
    ]
    found = [s for s in (stored(store, r.name) for r in matches) if s is not None]
    if not found:
        raise ImageIDNotFound(
            f'could not resolve image "{text}": no ACI with that image ID is in the store; fetch it first '
            "(by file, URL or appc name)"
        )
    ids = sorted({s.store_key for s in found})
    if len(ids) > 1:
        raise InvalidArgument(f'image ID "{text}" is ambiguous: it matches {", ".join(ids)}; give more digits')
    return sorted(found, key=lambda s: s.signature is None)
