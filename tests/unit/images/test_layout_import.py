"""Importing oci:, oci-archive: and docker-archive: images into the store, every digest checked."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import NotFound
from nomad_rkt_driver.images.layout import ImageLayoutError, import_image
from nomad_rkt_driver.images.manifest import PlatformNotFound
from nomad_rkt_driver.images.platform import Platform
from nomad_rkt_driver.images.reference import parse_reference
from nomad_rkt_driver.images.store import DigestMismatch, Store
from tests.imagebuild import (
    BuiltImage,
    Layer,
    add_index,
    build_image,
    busybox_image,
    docker_archive,
    oci_archive,
)

AMD64 = Platform("linux", "amd64")
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return busybox_image(tmp_path_factory.mktemp("layout") / "oci", tag="v1")


def small(dest: Path, text: str, **kwargs: object) -> BuiltImage:
    return build_image(dest, [Layer().file("hello", text.encode())], **kwargs)  # type: ignore[arg-type]


def assert_record_matches(store: Store, name: str, image: BuiltImage) -> None:
    record = store.lookup_image(name)
    assert record is not None and record.name == name
    assert record.manifest_digest == image.manifest_digest and record.config_digest == image.config_digest
    assert [layer.digest for layer in record.layers] == image.layer_digests
    assert [layer.diff_id for layer in record.layers] == image.diff_ids
    assert all(store.has_blob(d) for d in record.blobs)


def test_oci_layout_by_tag(store: Store, built: BuiltImage) -> None:
    ref = parse_reference(f"oci:{built.layout}:v1")
    record = import_image(store, ref)  # type: ignore[arg-type]
    assert record.name == f"oci:{built.layout}:v1" and record.index_digest is None
    assert_record_matches(store, record.name, built)
    assert [layer.media_type for layer in record.layers] == built.layer_media_types
    again = import_image(store, ref)  # importing again is fine and finds the same image
    assert again.manifest_digest == record.manifest_digest and again.layers == record.layers


def test_oci_layout_without_tag_takes_the_only_image(store: Store, built: BuiltImage) -> None:
    record = import_image(store, parse_reference(f"oci:{built.layout}"))  # type: ignore[arg-type]
    assert record.manifest_digest == built.manifest_digest


def test_tags_select_and_errors_list_them(store: Store, tmp_path: Path) -> None:
    a = small(tmp_path / "l", "a", tag="a")
    b = small(tmp_path / "l", "b", tag="b")
    assert import_image(store, parse_reference(f"oci:{tmp_path}/l:b")).manifest_digest == b.manifest_digest  # type: ignore[arg-type]
    assert import_image(store, parse_reference(f"oci:{tmp_path}/l:a")).manifest_digest == a.manifest_digest  # type: ignore[arg-type]
    with pytest.raises(ImageLayoutError, match="no image tagged 'c'; tags there: a, b"):
        import_image(store, parse_reference(f"oci:{tmp_path}/l:c"))  # type: ignore[arg-type]
    with pytest.raises(ImageLayoutError, match=r"2 images match; name one with a tag .* tags: a, b"):
        import_image(store, parse_reference(f"oci:{tmp_path}/l"))  # type: ignore[arg-type]


def test_a_nested_index_resolves_to_the_host_platform(store: Store, tmp_path: Path) -> None:
    amd = small(tmp_path / "l", "amd64", index=False)
    arm = small(tmp_path / "l", "arm64", index=False, platform=ARM64)
    index_digest = add_index(
        tmp_path / "l", [arm, amd], tag="multi", platforms=[ARM64, {"os": "linux", "architecture": "amd64"}]
    )
    ref = parse_reference(f"oci:{tmp_path}/l:multi")
    record = import_image(store, ref, platform=AMD64)  # type: ignore[arg-type]
    assert record.manifest_digest == amd.manifest_digest and record.index_digest == index_digest
    arm_record = import_image(store, ref, platform=Platform("linux", "arm64", "v8"))  # type: ignore[arg-type]
    assert arm_record.manifest_digest == arm.manifest_digest
    with pytest.raises(PlatformNotFound, match=r"s390x.*it has: linux/amd64, linux/arm64/v8"):
        import_image(store, ref, platform=Platform("linux", "s390x"))  # type: ignore[arg-type]


def test_top_level_entries_for_other_platforms_are_refused(store: Store, tmp_path: Path) -> None:
    small(tmp_path / "l", "arm only", platform=ARM64, tag="x")
    with pytest.raises(PlatformNotFound, match=r"no image for platform linux/amd64 \(it has: linux/arm64/v8\)"):
        import_image(store, parse_reference(f"oci:{tmp_path}/l:x"), platform=AMD64)  # type: ignore[arg-type]
    amd = small(tmp_path / "l2", "amd", tag="x")
    small(tmp_path / "l2", "arm", platform=ARM64, tag="y")
    record = import_image(store, parse_reference(f"oci:{tmp_path}/l2"), platform=AMD64)  # type: ignore[arg-type]
    assert record.manifest_digest == amd.manifest_digest  # the only image for this host, no tag needed


def test_a_tampered_layer_is_refused_and_nothing_is_recorded(store: Store, tmp_path: Path) -> None:
    image = small(tmp_path / "l", "genuine")
    layer_path = image.layout / "blobs" / image.layer_digests[0].replace(":", "/")
    layer_path.write_bytes(layer_path.read_bytes()[:-1] + b"X")
    with pytest.raises(DigestMismatch, match=image.layer_digests[0]):
        import_image(store, parse_reference(f"oci:{image.layout}"))  # type: ignore[arg-type]
    assert store.list_images() == [] and not store.has_blob(image.layer_digests[0])


def test_missing_blobs_and_non_layouts(store: Store, tmp_path: Path) -> None:
    image = small(tmp_path / "l", "x")
    (image.layout / "blobs" / image.config_digest.replace(":", "/")).unlink()
    with pytest.raises(ImageLayoutError, match=f"blobs/sha256/{image.config_digest.split(':')[1]} is missing"):
        import_image(store, parse_reference(f"oci:{image.layout}"))  # type: ignore[arg-type]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLayoutError, match="not an OCI image layout: it has no oci-layout file"):
        import_image(store, parse_reference(f"oci:{tmp_path}/empty"))  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="does not exist"):
        import_image(store, parse_reference(f"oci:{tmp_path}/nowhere"))  # type: ignore[arg-type]
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageLayoutError, match="not a tar archive"):
        import_image(store, parse_reference(f"oci-archive:{tmp_path}/junk.tar"))  # type: ignore[arg-type]
    assert store.list_images() == []


def test_oci_archive(store: Store, built: BuiltImage, tmp_path: Path) -> None:
    archive = oci_archive(built.layout, tmp_path / "image.tar")
    record = import_image(store, parse_reference(f"oci-archive:{archive}:v1"))  # type: ignore[arg-type]
    assert_record_matches(store, f"oci-archive:{archive}:v1", built)
    assert record.manifest_digest == built.manifest_digest


@pytest.mark.parametrize("selector", ["", ":busybox", ":docker.io/library/busybox:latest", ":@0"])
def test_docker_archive(store: Store, built: BuiltImage, tmp_path: Path, selector: str) -> None:
    archive = docker_archive(built, tmp_path / "save.tar", ["busybox:latest"])
    record = import_image(store, parse_reference(f"docker-archive:{archive}{selector}"))  # type: ignore[arg-type]
    assert record.config_digest == built.config_digest
    assert [layer.digest for layer in record.layers] == built.diff_ids  # uncompressed: digest == diff_id
    assert [layer.diff_id for layer in record.layers] == built.diff_ids
    manifest = json.loads(store.read_bytes(record.manifest_digest))
    assert manifest["config"]["digest"] == built.config_digest and len(manifest["layers"]) == 3


def test_docker_archive_selection_errors(store: Store, built: BuiltImage, tmp_path: Path) -> None:
    archive = docker_archive(built, tmp_path / "save.tar", ["busybox:latest"])
    with pytest.raises(
        ImageLayoutError, match=r"no image tagged docker\.io/library/redis:latest; tags there: busybox:latest"
    ):
        import_image(store, parse_reference(f"docker-archive:{archive}:redis"))  # type: ignore[arg-type]
    with pytest.raises(ImageLayoutError, match="no image @3; the archive has 1"):
        import_image(store, parse_reference(f"docker-archive:{archive}:@3"))  # type: ignore[arg-type]
    with pytest.raises(ImageLayoutError, match="not a docker save archive"):
        import_image(store, parse_reference(f"docker-archive:{oci_archive(built.layout, tmp_path / 'o.tar')}"))  # type: ignore[arg-type]


def test_docker_archive_with_a_tampered_layer(store: Store, built: BuiltImage, tmp_path: Path) -> None:
    tampered = BuiltImage(
        **{**built.__dict__, "layer_tars": [*built.layer_tars[:2], built.layer_tars[2][:-512] + b"\1" * 512]}
    )
    archive = docker_archive(tampered, tmp_path / "save.tar", ["busybox:latest"])
    with pytest.raises(DigestMismatch, match=r"layer .*/layer.tar \(diff_id\)"):
        import_image(store, parse_reference(f"docker-archive:{archive}"))  # type: ignore[arg-type]
    assert store.list_images() == [] and not store.has_blob(built.diff_ids[2])


def test_docker_archive_config_must_match_its_name(store: Store, built: BuiltImage, tmp_path: Path) -> None:
    archive = docker_archive(built, tmp_path / "save.tar", [])
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    config_name = next(n for n in members if n.endswith(".json") and n != "manifest.json")
    members[config_name] = members[config_name].replace(b"hello", b"HELLO")
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DigestMismatch, match=f"config {config_name}"):
        import_image(store, parse_reference(f"docker-archive:{archive}"))  # type: ignore[arg-type]
