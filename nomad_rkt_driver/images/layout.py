"""Import local images into the store: OCI layout dirs (``oci:``), their tars (``oci-archive:``)
and ``docker save`` tars (``docker-archive:``). Every blob is checked against its digest (and
its descriptor's size) as it is copied in; nothing is trusted because it is local.

Choosing the image in an OCI layout: with a tag, the ``index.json`` entries whose
``org.opencontainers.image.ref.name`` annotation is that tag; without one, every entry. Entries
that name another platform are dropped; if none is left the error lists the platforms there
are. An entry that is itself an index is resolved to the host's platform the same way. More
than one candidate left without a tag is an error that lists the tags.

``docker save`` archives hold ``manifest.json`` (``Config``, ``RepoTags``, ``Layers``), the
config and uncompressed layer tars. The config must hash to the name it is stored under, and
each layer to its ``rootfs.diff_ids`` entry. An OCI manifest is written for the image, so the
record looks like any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from nomad_rkt_driver.errors import InvalidArgument, NotFound
from nomad_rkt_driver.images.decompress import sniff
from nomad_rkt_driver.images.imageconfig import parse_image_config
from nomad_rkt_driver.images.manifest import (
    MANIFEST_MAX_BYTES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageManifest,
    ManifestList,
    PlatformNotFound,
    parse_manifest,
    select_platform,
)
from nomad_rkt_driver.images.platform import Platform, host_platform
from nomad_rkt_driver.images.reference import (
    DockerArchiveReference,
    OCIArchiveReference,
    OCILayoutReference,
    parse_docker,
)
from nomad_rkt_driver.images.store import GC_LOCK, DigestMismatch, ImageRecord, LayerRef, Store

log = logging.getLogger(__name__)

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_COPY_CHUNK = 1 << 20
_CONFIG_MAX_BYTES = 8 << 20
_LOCK_TIMEOUT_S = 300.0

LocalReference = OCILayoutReference | OCIArchiveReference | DockerArchiveReference


class ImageLayoutError(InvalidArgument):
    """A local image (layout dir or archive) is malformed or does not hold the image asked for."""


class _Source(Protocol):
    """Read-only access to the files of a layout dir or archive, by relative path."""

    where: str

    def open(self, relpath: str) -> IO[bytes]: ...

    def size(self, relpath: str) -> int: ...


def import_image(store: Store, ref: LocalReference, *, platform: Platform | None = None) -> ImageRecord:
    """Copy the image ``ref`` names into ``store`` (verifying every digest) and save its record.

    The record's name is ``str(ref)``. Blobs already stored are not copied again.

    Raises:
        NotFound: the path does not exist.
        ImageLayoutError: not a layout / archive, or no such tag / index; lists what there is.
        PlatformNotFound: no entry for ``platform`` (default: the host's).
        DigestMismatch: a blob does not match its digest or size.
    """
    want = platform or host_platform()
    path = Path(ref.path)
    if not path.exists():
        raise NotFound(f"image {ref}: {path} does not exist")
    name = str(ref)
    with store.lock(f"pull {name}", timeout=_LOCK_TIMEOUT_S), store.lock(GC_LOCK, shared=True, timeout=_LOCK_TIMEOUT_S):
        with _open_source(ref, path) as source:
            if isinstance(ref, DockerArchiveReference):
                record = _import_docker_archive(store, source, ref, name)
            else:
                record = _import_oci(store, source, ref.tag, want, name)
        store.save_image(name, record)
    log.info("image %s: imported (%d layers, manifest %s)", name, len(record.layers), record.manifest_digest)
    return record


@contextlib.contextmanager
def _open_source(ref: LocalReference, path: Path) -> Iterator[_Source]:
    if isinstance(ref, OCILayoutReference):
        if not path.is_dir():
            raise ImageLayoutError(f"image {ref}: {path} is not a directory (an OCI image layout is one)")
        yield _DirSource(path)
        return
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, IsADirectoryError) as exc:
        raise ImageLayoutError(f"image {ref}: {path} is not a tar archive ({exc})") from None
    with archive:
        yield _TarSource(archive, str(path))


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def open(self, relpath: str) -> IO[bytes]:
        try:
            return open(self.root / relpath, "rb")
        except FileNotFoundError:
            raise ImageLayoutError(f"{self.where}: {relpath} is missing") from None

    def size(self, relpath: str) -> int:
        try:
            return (self.root / relpath).stat().st_size
        except FileNotFoundError:
            raise ImageLayoutError(f"{self.where}: {relpath} is missing") from None


class _TarSource:
    def __init__(self, archive: tarfile.TarFile, where: str) -> None:
        self.archive = archive
        self.where = where
        self.members = {os.path.normpath(m.name).lstrip("/"): m for m in archive.getmembers()}

    def _member(self, relpath: str) -> tarfile.TarInfo:
        member = self.members.get(os.path.normpath(relpath))
        if member is None or not (member.isfile() or member.issym() or member.islnk()):
            raise ImageLayoutError(f"{self.where}: {relpath} is missing from the archive")
        return member

    def open(self, relpath: str) -> IO[bytes]:
        try:
            stream = self.archive.extractfile(self._member(relpath))
        except KeyError:  # a link to a member that is not there
            stream = None
        if stream is None:
            raise ImageLayoutError(f"{self.where}: {relpath} is not a readable file in the archive")
        return stream

    def size(self, relpath: str) -> int:
        with self.open(relpath) as f:
            return f.seek(0, os.SEEK_END)


def _read_small(source: _Source, relpath: str, limit: int) -> bytes:
    with source.open(relpath) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageLayoutError(f"{source.where}: {relpath} is larger than {limit} bytes")
    return data


def _blob_relpath(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _store_descriptor(store: Store, source: _Source, desc: Descriptor) -> None:
    """Copy the blob ``desc`` names from ``source`` unless stored; verify digest and size."""
    if store.has_blob(desc.digest):
        return
    with source.open(_blob_relpath(desc.digest)) as f, store.ingest(desc.digest, desc.size) as writer:
        while chunk := f.read(_COPY_CHUNK):
            writer.write(chunk)


def _fetch_document(store: Store, source: _Source, desc: Descriptor, limit: int) -> bytes:
    if not store.has_blob(desc.digest):
        data = _read_small(source, _blob_relpath(desc.digest), limit)
        if len(data) != desc.size:
            raise DigestMismatch(desc.digest, f"{len(data)} bytes instead of the {desc.size} announced")
        store.put_bytes(data, desc.digest)
    return store.read_bytes(desc.digest)


# -- OCI layouts -------------------------------------------------------------------------------


def _import_oci(store: Store, source: _Source, tag: str | None, want: Platform, name: str) -> ImageRecord:
    _check_layout_marker(source)
    index_bytes = _read_small(source, "index.json", MANIFEST_MAX_BYTES)
    index = parse_manifest(index_bytes, OCI_INDEX, source=f"{source.where}/index.json")
    if not isinstance(index, ManifestList):
        raise ImageLayoutError(f"{source.where}: index.json is not an image index")
    chosen = _choose_entry(index, _ref_names(index_bytes), tag, want, source.where)
    index_digest = None
    document = _fetch_document(store, source, chosen, MANIFEST_MAX_BYTES)
    parsed = parse_manifest(document, chosen.media_type, source=f"{name} ({chosen.digest})")
    if isinstance(parsed, ManifestList):
        index_digest = chosen.digest
        chosen = select_platform(parsed, want, source=name)
        document = _fetch_document(store, source, chosen, MANIFEST_MAX_BYTES)
        parsed = parse_manifest(document, chosen.media_type, source=f"{name} ({want})")
        if isinstance(parsed, ManifestList):
            raise ImageLayoutError(f"{name}: the index entry for {want} is itself an index; refusing")
    return _store_image(store, source, parsed, chosen.digest, index_digest, name)


def _check_layout_marker(source: _Source) -> None:
    try:
        marker = json.loads(_read_small(source, "oci-layout", 4096))
    except ImageLayoutError:
        raise ImageLayoutError(f"{source.where} is not an OCI image layout: it has no oci-layout file") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        marker = None
    if not isinstance(marker, dict) or not isinstance(marker.get("imageLayoutVersion"), str):
        raise ImageLayoutError(f"{source.where}: oci-layout is not {{'imageLayoutVersion': '1.0.0'}}")


def _ref_names(index_bytes: bytes) -> list[str | None]:
    """The ref-name annotation of each index.json entry, in order (parse_manifest drops annotations)."""
    entries = json.loads(index_bytes).get("manifests", [])
    names: list[str | None] = []
    for entry in entries:
        annotations = entry.get("annotations") if isinstance(entry, dict) else None
        value = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, dict) else None
        names.append(value if isinstance(value, str) else None)
    return names


def _choose_entry(
    index: ManifestList, names: list[str | None], tag: str | None, want: Platform, where: str
) -> Descriptor:
    tags = sorted({n for n in names if n})
    candidates = [d for d, n in zip(index.manifests, names, strict=True) if tag is None or n == tag]
    if not candidates:
        raise ImageLayoutError(
            f"{where}: no image tagged {tag!r}; tags there: {', '.join(tags) or 'none'}"
            if index.manifests
            else f"{where}: the layout holds no images"
        )
    runnable = [d for d in candidates if d.platform is None or _platform_ok(d, want)]
    if not runnable:
        have = ", ".join(sorted({str(d.platform) for d in candidates}))
        raise PlatformNotFound(f"{where}: no image for platform {want} (it has: {have}); use an image built for {want}")
    if len(runnable) > 1:
        raise ImageLayoutError(
            f"{where}: {len(runnable)} images match; name one with a tag (oci:PATH:TAG); "
            f"tags: {', '.join(tags) or 'none'}"
        )
    return runnable[0]


def _platform_ok(desc: Descriptor, want: Platform) -> bool:
    have = desc.platform
    assert have is not None
    return want.matches({"os": have.os, "architecture": have.architecture, "variant": have.variant})


def _store_image(
    store: Store, source: _Source, manifest: ImageManifest, manifest_digest: str, index_digest: str | None, name: str
) -> ImageRecord:
    config = _fetch_document(store, source, manifest.config, _CONFIG_MAX_BYTES)
    diff_ids = parse_image_config(config, manifest.config.digest).diff_ids
    if diff_ids and len(diff_ids) != len(manifest.layers):
        raise ImageLayoutError(f"{name}: {len(manifest.layers)} layers but {len(diff_ids)} diff_ids in the config")
    for layer in manifest.layers:
        _store_descriptor(store, source, layer)
    return ImageRecord(
        name=name,
        manifest_digest=manifest_digest,
        config_digest=manifest.config.digest,
        layers=tuple(
            LayerRef(layer.digest, layer.media_type, layer.size, diff_ids[i] if diff_ids else None)
            for i, layer in enumerate(manifest.layers)
        ),
        manifest_media_type=manifest.media_type,
        index_digest=index_digest,
    )


# -- docker save archives ----------------------------------------------------------------------


@dataclass(frozen=True)
class _SavedImage:
    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def _import_docker_archive(store: Store, source: _Source, ref: DockerArchiveReference, name: str) -> ImageRecord:
    entry = _choose_saved(_saved_images(source), ref, source.where)
    config = _read_small(source, entry.config, _CONFIG_MAX_BYTES)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    named = os.path.basename(entry.config).removesuffix(".json")
    if len(named) == 64 and named != config_digest.split(":")[1]:
        raise DigestMismatch(f"sha256:{named}", config_digest, what=f"{source.where}: config {entry.config}")
    store.put_bytes(config, config_digest)
    diff_ids = parse_image_config(config, config_digest).diff_ids
    if len(diff_ids) != len(entry.layers):
        raise ImageLayoutError(f"{name}: {len(entry.layers)} layers but {len(diff_ids)} diff_ids in the config")
    layers = tuple(
        _store_saved_layer(store, source, path, diff_id) for path, diff_id in zip(entry.layers, diff_ids, strict=True)
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    manifest_digest = store.put_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    return ImageRecord(
        name=name,
        manifest_digest=manifest_digest,
        config_digest=config_digest,
        layers=layers,
        manifest_media_type=OCI_MANIFEST,
    )


def _saved_images(source: _Source) -> list[_SavedImage]:
    try:
        raw = json.loads(_read_small(source, "manifest.json", MANIFEST_MAX_BYTES))
    except ImageLayoutError:
        raise ImageLayoutError(f"{source.where} is not a docker save archive: no manifest.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageLayoutError(f"{source.where}: manifest.json is not JSON ({exc})") from None
    images = []
    for i, item in enumerate(raw if isinstance(raw, list) else [None]):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("Config"), str)
            and _str_list(item.get("Layers"))
            and _str_list(item.get("RepoTags") or [])
        )
        if not ok:
            raise ImageLayoutError(f"{source.where}: manifest.json entry {i} needs Config, Layers and RepoTags")
        assert isinstance(item, dict)
        images.append(_SavedImage(item["Config"], tuple(item.get("RepoTags") or ()), tuple(item["Layers"])))
    return images


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _choose_saved(images: list[_SavedImage], ref: DockerArchiveReference, where: str) -> _SavedImage:
    tags = [t for image in images for t in image.repo_tags]
    if ref.index is not None:
        if ref.index >= len(images):
            raise ImageLayoutError(f"{where}: no image @{ref.index}; the archive has {len(images)}")
        return images[ref.index]
    wanted = ref.docker_name
    if wanted is None:
        if len(images) != 1:
            raise ImageLayoutError(f"{where}: {len(images)} images; name one (tags: {', '.join(tags) or 'none'})")
        return images[0]
    for image in images:
        if any(_same_name(t, str(wanted)) for t in image.repo_tags):
            return image
    raise ImageLayoutError(f"{where}: no image tagged {ref.reference}; tags there: {', '.join(tags) or 'none'}")


def _same_name(repo_tag: str, wanted: str) -> bool:
    try:
        return str(parse_docker(repo_tag)) == wanted
    except InvalidArgument:
        return False


def _store_saved_layer(store: Store, source: _Source, path: str, diff_id: str) -> LayerRef:
    """Store one ``docker save`` layer: an uncompressed tar must hash to its diff_id."""
    with source.open(path) as f:
        kind = sniff(f.read(8))
    # Uncompressed (the normal case): the blob digest is the diff_id, checked while copying.
    # Compressed (some tools): hash it first; the diff_id is then checked when it is unpacked.
    digest = diff_id if kind == "tar" else _hash_member(source, path)
    size = source.size(path)
    if not store.has_blob(digest):
        try:
            with source.open(path) as f, store.ingest(digest, size) as writer:
                while chunk := f.read(_COPY_CHUNK):
                    writer.write(chunk)
        except DigestMismatch as exc:
            raise DigestMismatch(diff_id, exc.actual, what=f"{source.where}: layer {path} (diff_id)") from None
    media_type = {"tar": OCI_LAYER, "gzip": OCI_LAYER + "+gzip", "zstd": OCI_LAYER + "+zstd"}.get(kind)
    if media_type is None:
        raise ImageLayoutError(f"{source.where}: layer {path} is {kind}-compressed, which OCI images cannot carry")
    return LayerRef(digest, media_type, size, diff_id)


def _hash_member(source: _Source, path: str) -> str:
    hasher = hashlib.sha256()
    with source.open(path) as f:
        while chunk := f.read(_COPY_CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()
