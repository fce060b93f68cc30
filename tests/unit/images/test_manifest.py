"""Manifest and index parsing, validation and platform selection (pure functions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nomad_rkt_driver.images.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageManifest,
    InvalidManifest,
    ManifestList,
    PlatformNotFound,
    parse_manifest,
    select_platform,
    sha256_digest,
)
from nomad_rkt_driver.images.platform import Platform

D1, D2, D3 = (f"sha256:{c * 64}" for c in "abc")
SRC = "reg/repo:tag"


def manifest(media_type: str | None = DOCKER_MANIFEST, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1, "size": 10},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": 20}],
    }
    if media_type:
        doc["mediaType"] = media_type
    return {**doc, **extra}


def entry(digest: str, arch: str, variant: str = "", os: str = "linux") -> dict[str, Any]:
    plat = {"os": os, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": 5, "platform": plat}


def index(*entries: dict[str, Any]) -> ManifestList:
    parsed = parse_manifest(
        json.dumps({"schemaVersion": 2, "manifests": list(entries)}).encode(), OCI_INDEX, source=SRC
    )
    assert isinstance(parsed, ManifestList)
    return parsed


def test_docker_schema2_manifest() -> None:
    parsed = parse_manifest(json.dumps(manifest()).encode(), DOCKER_MANIFEST, source=SRC)
    assert isinstance(parsed, ImageManifest)
    assert parsed.config.digest == D1 and [layer.digest for layer in parsed.layers] == [D2]


def test_oci_manifest_without_media_type_field_or_header() -> None:
    doc = manifest(None)
    doc["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    doc["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    parsed = parse_manifest(json.dumps(doc).encode(), "application/json", source=SRC)
    assert isinstance(parsed, ImageManifest) and parsed.media_type == OCI_MANIFEST


def test_docker_manifest_list() -> None:
    doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": [entry(D1, "amd64")]}
    parsed = parse_manifest(json.dumps(doc).encode(), DOCKER_MANIFEST_LIST, source=SRC)
    assert isinstance(parsed, ManifestList) and parsed.manifests[0].platform == Platform("linux", "amd64")


@pytest.mark.parametrize("schema1", [{"schemaVersion": 1, "name": "x", "fsLayers": []}])
def test_schema1_is_refused_with_a_fix(schema1: dict[str, Any]) -> None:
    with pytest.raises(InvalidManifest, match=r"reg/repo:tag: Docker schema1 .* push the image again"):
        parse_manifest(json.dumps(schema1).encode(), DOCKER_SCHEMA1_SIGNED, source=SRC)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON list, not an object"),
        (json.dumps({"schemaVersion": 3}).encode(), "schemaVersion 3"),
        (json.dumps(manifest(layers="x")).encode(), "'layers' is missing or not a list"),
        (json.dumps(manifest(config={"mediaType": "x", "digest": D1, "size": -1})).encode(), "size -1"),
        (json.dumps(manifest(config={"mediaType": "x", "digest": "sha256:12", "size": 1})).encode(), "malformed"),
        (json.dumps(manifest(mediaType="application/x-nope")).encode(), "unsupported manifest media type"),
    ],
)
def test_broken_documents_name_the_problem(data: bytes, match: str) -> None:
    with pytest.raises(InvalidManifest, match=match):
        parse_manifest(data, None, source=SRC)


def test_header_and_field_must_agree() -> None:
    with pytest.raises(InvalidManifest, match="differs from mediaType"):
        parse_manifest(json.dumps(manifest()).encode(), OCI_MANIFEST, source=SRC)


def test_layer_and_config_media_types_are_checked() -> None:
    doc = manifest()
    doc["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    with pytest.raises(InvalidManifest, match="foreign layer"):
        parse_manifest(json.dumps(doc).encode(), None, source=SRC)
    doc["layers"][0]["mediaType"] = "text/plain"
    with pytest.raises(InvalidManifest, match=r"layers\[0\].*unsupported media type 'text/plain'"):
        parse_manifest(json.dumps(doc).encode(), None, source=SRC)
    doc = manifest()
    doc["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(InvalidManifest, match="not a runnable container image"):
        parse_manifest(json.dumps(doc).encode(), None, source=SRC)


def test_too_big_manifest_is_refused() -> None:
    with pytest.raises(InvalidManifest, match="more than"):
        parse_manifest(b" " * (4 * 1024 * 1024 + 1), None, source=SRC)


def test_select_platform_amd64_and_arm64_variants() -> None:
    listing = index(entry(D1, "arm64", "v8"), entry(D2, "amd64"), entry(D3, "unknown", os="unknown"))
    assert select_platform(listing, Platform("linux", "amd64"), source=SRC).digest == D2
    assert select_platform(listing, Platform("linux", "arm64", "v8"), source=SRC).digest == D1
    no_variant = index(entry(D1, "arm64"))
    assert select_platform(no_variant, Platform("linux", "arm64", "v8"), source=SRC).digest == D1
    arm7 = index(entry(D1, "arm", "v6"), entry(D2, "arm", "v7"))
    assert select_platform(arm7, Platform("linux", "arm", "v7"), source=SRC).digest == D2


def test_no_matching_platform_lists_available_ones() -> None:
    listing = index(entry(D1, "arm64", "v8"), entry(D2, "s390x"))
    with pytest.raises(
        PlatformNotFound, match=r"no image for platform linux/amd64.*it has: linux/arm64/v8, linux/s390x"
    ):
        select_platform(listing, Platform("linux", "amd64"), source=SRC)


def test_sha256_digest() -> None:
    assert sha256_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
