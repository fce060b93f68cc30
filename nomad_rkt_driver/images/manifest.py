"""Parse image manifests and indexes (Docker schema2, OCI) and pick the host's platform.

Pure functions over bytes: nothing here touches the network or the disk. Docker schema1
manifests are refused with a message that says how to get a schema2 image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidArgument, NotFound

from .platform import Platform

log = logging.getLogger(__name__)

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"

DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"

LAYER_MEDIA_TYPES: Final = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#: What get_manifest asks for: every form this module can parse (schema1 is not offered).
ACCEPTED_MANIFEST_TYPES: Final = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_MAX_BYTES: Final = 4 * 1024 * 1024

_DIGEST_RE: Final = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


class InvalidManifest(InvalidArgument):
    """A manifest or index does not parse or breaks the spec; the message names the document."""


class PlatformNotFound(NotFound):
    """A manifest list has no entry for the wanted platform; the message lists those it has."""


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what to fetch (digest), how big it is and how to read it (media type)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ImageManifest:
    """A single-platform image: one config blob and its layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ManifestList:
    """A Docker manifest list or OCI index: one descriptor per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def sha256_digest(data: bytes) -> str:
    """Return the ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str) -> str:
    """Return ``data``'s digest with ``algorithm`` (``sha256`` or ``sha512``); InvalidArgument for others."""
    if algorithm not in ("sha256", "sha512"):
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r}: use sha256 or sha512")
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


def check_digest(digest: str, what: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>``; else InvalidManifest naming ``what``."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidManifest(f"{what}: digest {digest!r} is malformed (want sha256:<64 hex> or sha512:<128 hex>)")
    return digest


def parse_manifest(data: bytes, media_type: str | None, *, source: str) -> ImageManifest | ManifestList:
    """Parse ``data`` as a manifest or index; ``media_type`` is the Content-Type if the registry sent one.

    ``source`` (e.g. ``registry/repo:tag``) is named in errors. Raises InvalidManifest when the
    document does not parse, is schema1, or has missing/malformed fields.
    """
    doc = _load_json(data, source)
    kind = _media_type_of(doc, media_type, source)
    if kind in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise InvalidManifest(
            f"{source}: Docker schema1 manifests are not supported (deprecated since 2017); "
            "push the image again with a current Docker, skopeo or buildah to get a schema2 or OCI manifest"
        )
    if kind in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        entries = _list_field(doc, "manifests", source)
        return ManifestList(kind, tuple(_descriptor(e, f"{source} manifests[{i}]") for i, e in enumerate(entries)))
    if kind in (OCI_MANIFEST, DOCKER_MANIFEST):
        config = _descriptor(doc.get("config"), f"{source} config")
        if config.media_type not in (DOCKER_CONFIG, OCI_CONFIG):
            raise InvalidManifest(
                f"{source}: config media type {config.media_type!r} is not an image config "
                f"({DOCKER_CONFIG} or {OCI_CONFIG}); this is not a runnable container image"
            )
        layers = tuple(_layer(e, f"{source} layers[{i}]") for i, e in enumerate(_list_field(doc, "layers", source)))
        return ImageManifest(kind, config, layers)
    raise InvalidManifest(
        f"{source}: unsupported manifest media type {kind!r}; supported: {', '.join(ACCEPTED_MANIFEST_TYPES)}"
    )


def select_platform(index: ManifestList, want: Platform, *, source: str) -> Descriptor:
    """Return the entry of ``index`` for ``want``; PlatformNotFound lists the platforms the index has.

    An arm64 entry without a variant matches ``v8``; entries without a platform are skipped.
    """
    for entry in index.manifests:
        if entry.platform is not None and _matches(entry.platform, want):
            if entry.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
                raise InvalidManifest(f"{source}: entry for {want} has media type {entry.media_type!r}, not a manifest")
            return entry
    available = sorted({str(e.platform) for e in index.manifests if e.platform is not None})
    raise PlatformNotFound(
        f"{source}: no image for platform {want} in the manifest list; it has: "
        f"{', '.join(available) or 'no platform entries'}; use an image built for {want}"
    )


def _matches(have: Platform, want: Platform) -> bool:
    if (have.os, have.architecture) != (want.os, want.architecture):
        return False
    if have.architecture == "arm64":
        return (have.variant or "v8") == (want.variant or "v8")
    return not want.variant or not have.variant or have.variant == want.variant


def _load_json(data: bytes, source: str) -> dict[str, Any]:
    if len(data) > MANIFEST_MAX_BYTES:
        raise InvalidManifest(f"{source}: manifest is {len(data)} bytes, more than the {MANIFEST_MAX_BYTES} allowed")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidManifest(f"{source}: manifest is not valid JSON ({exc}); the registry sent a broken one") from exc
    if not isinstance(doc, dict):
        raise InvalidManifest(f"{source}: manifest is a JSON {type(doc).__name__}, not an object")
    return doc


def _media_type_of(doc: dict[str, Any], header: str | None, source: str) -> str:
    declared = doc.get("mediaType")
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if doc.get("schemaVersion") != 2:
        raise InvalidManifest(f"{source}: schemaVersion {doc.get('schemaVersion')!r} is not 2")
    header_type = (header or "").split(";")[0].strip()
    if header_type in ("", "application/json", "text/plain"):
        header_type = ""
    if isinstance(declared, str) and declared:
        if header_type and header_type != declared:
            raise InvalidManifest(f"{source}: Content-Type {header_type!r} differs from mediaType {declared!r}")
        return declared
    if header_type:
        return header_type
    # OCI allows omitting mediaType; tell the two OCI forms apart by their fields.
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def _list_field(doc: dict[str, Any], name: str, source: str) -> list[Any]:
    value = doc.get(name)
    if not isinstance(value, list):
        raise InvalidManifest(f"{source}: field {name!r} is missing or not a list")
    return value


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise InvalidManifest(f"{what}: descriptor is missing or not an object")
    media_type, size = raw.get("mediaType"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidManifest(f"{what}: mediaType is missing")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidManifest(f"{what}: size {size!r} is not a non-negative integer")
    urls = raw.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise InvalidManifest(f"{what}: urls must be a list of strings")
    return Descriptor(media_type, check_digest(raw.get("digest", ""), what), size, _platform(raw, what), tuple(urls))


def _platform(raw: dict[str, Any], what: str) -> Platform | None:
    plat = raw.get("platform")
    if plat is None:
        return None
    if (
        not isinstance(plat, dict)
        or not isinstance(plat.get("os"), str)
        or not isinstance(plat.get("architecture"), str)
    ):
        raise InvalidManifest(f"{what}: platform must be an object with string os and architecture")
    variant = plat.get("variant", "")
    return Platform(plat["os"], plat["architecture"], variant if isinstance(variant, str) else "")


def _layer(raw: Any, what: str) -> Descriptor:
    desc = _descriptor(raw, what)
    if desc.media_type == FOREIGN_LAYER:
        raise InvalidManifest(
            f"{what}: foreign layer {desc.digest} must be downloaded from {list(desc.urls)}, which is not supported; "
            "use a Linux image without foreign (Windows base) layers"
        )
    if desc.media_type not in LAYER_MEDIA_TYPES:
        raise InvalidManifest(
            f"{what}: layer {desc.digest} has unsupported media type {desc.media_type!r}; "
            f"supported: {', '.join(sorted(LAYER_MEDIA_TYPES))}"
        )
    return desc
