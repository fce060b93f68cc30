"""Docker/OCI trust through a real docker-registry: signed / unsigned / tampered / wrong-key, signed by cosign.

Images are busybox OCI layouts from tests/imagebuild.py pushed by skopeo; signatures are made by the
real cosign (``sha256-<hex>.sig`` pushed into the registry). Tampering is done the way an attacker
with write access to the registry would: moving tags, copying or forging signature manifests with
the registry API, editing blobs in the registry's storage. Every cell goes through the driver's
image policy (``Images.prepare``) and is then retried with ``insecure_options = ["image"]``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.imaging import Images, ReadyImage
from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.sigstore import (
    SIMPLE_SIGNING_MEDIA_TYPE,
    ImageUnsigned,
    NoTrustedKeys,
    SignatureMismatch,
    UntrustedSignature,
)
from nomad_rkt_driver.images.store import Store
from tests.imagebuild import BuiltImage, add_index, build_image, busybox_image, busybox_layer
from tests.registryserver import RegistryServer
from tests.unit.images.test_sigstore_producer import Cosign, CosignKey

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


class Registry:
    """The raw Registry API v2 of the test registry: what an attacker with push access can do."""

    def __init__(self, server: RegistryServer) -> None:
        self.server = server
        self.base = f"http://{server.host}/v2"
        self.session = requests.Session()
        self.session.trust_env = False

    def close(self) -> None:
        self.session.close()

    def manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest."""
        resp = self.session.get(f"{self.base}/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=30)
        resp.raise_for_status()
        return resp.content, resp.headers["Content-Type"], resp.headers["Docker-Content-Digest"]

    def digest(self, repo: str, ref: str) -> str:
        return self.manifest(repo, ref)[2]

    def blob(self, repo: str, digest: str) -> bytes:
        resp = self.session.get(f"{self.base}/{repo}/blobs/{digest}", timeout=30)
        resp.raise_for_status()
        return resp.content

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = self.session.post(f"{self.base}/{repo}/blobs/uploads/", timeout=30)
        start.raise_for_status()
        location = start.headers["Location"]
        url = location if location.startswith("http") else f"http://{self.server.host}{location}"
        done = self.session.put(url, params={"digest": digest}, data=data, timeout=30,
                                headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        done.raise_for_status()
        return digest

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> None:
        resp = self.session.put(f"{self.base}/{repo}/manifests/{ref}", data=data, timeout=30,
                                headers={"Content-Type": media_type})  # fmt: skip
        assert resp.status_code == 201, resp.text

    def copy_manifest(self, src_repo: str, src_ref: str, dst_repo: str, dst_ref: str) -> bytes:
        """Copy a manifest and its blobs (config, layers) from one place to another, byte for byte."""
        data, media_type, _ = self.manifest(src_repo, src_ref)
        doc = json.loads(data)
        for desc in [doc["config"], *doc["layers"]]:
            assert self.put_blob(dst_repo, self.blob(src_repo, desc["digest"])) == desc["digest"]
        self.put_manifest(dst_repo, dst_ref, data, media_type)
        return data


@dataclass
class World:
    server: RegistryServer
    registry: Registry
    cosign: Cosign
    trusted: CosignKey
    stranger: CosignKey
    trust_dir: Path
    trusted_file: Path
    stranger_file: Path
    a: BuiltImage
    b: BuiltImage

    @property
    def host(self) -> str:
        return self.server.host

    def push(self, image: BuiltImage, repo_tag: str) -> str:
        """Push an image with skopeo; returns its digest in the registry."""
        self.server.push(f"oci:{image.layout}:{image.tag}", repo_tag)
        repo, _, tag = repo_tag.partition(":")
        return self.registry.digest(repo, tag)

    def sign(self, key: CosignKey, repo: str, digest: str) -> None:
        self.cosign.sign_image(key, f"{self.host}/{repo}@{digest}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("sigstore")
    server = RegistryServer(base / "registry", "plain").start()
    registry = Registry(server)
    try:
        cosign = Cosign(base / "cosign")
        trusted, stranger = cosign.generate_key_pair("trusted"), cosign.generate_key_pair("stranger")
        trust_dir = base / "trustedkeys"
        trusted_file = trust_dir / "prefix.d" / server.host / "test" / "release.pub"
        stranger_file = trust_dir / "prefix.d" / server.host / "elsewhere" / "stranger.pub"
        for path, key in ((trusted_file, trusted), (stranger_file, stranger)):
            path.parent.mkdir(parents=True)
            path.write_bytes(key.pem)
        a = busybox_image(base / "a", tag="v1")
        b = build_image(base / "b", [busybox_layer().file("etc/motd", b"image b\n")], tag="v1")
        yield World(server, registry, cosign, trusted, stranger, trust_dir, trusted_file, stranger_file, a, b)
    finally:
        registry.close()
        server.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", durable=False) as opened:
        yield opened


def prepare(world: World, store: Store, image: str, *options: str) -> ReadyImage:
    task = decode(TaskConfig, {"image": image, "insecure_options": list(options or ["http"])}, "task config")
    plugin = decode(PluginConfig, {"data_dir": str(store.root), "trust_dir": str(world.trust_dir)}, "plugin config")
    return Images(store, Puller(store)).prepare(task, plugin, "task config")


def refused_then_opted_out(
    world: World, store: Store, image: str, error: type[Exception], *fragments: str, nothing_of: BuiltImage
) -> str:
    """Assert the refusal (kind and message fragments), that nothing was downloaded, and that the opt-out works."""
    with pytest.raises(error) as caught:
        prepare(world, store, image)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert 'insecure_options = ["image"]' in message
    assert not any(store.has_blob(d) for d in nothing_of.layer_digests), "a refused image was downloaded"
    ready = prepare(world, store, image, "image", "http")
    assert ready.signer is None and len(ready.lower_dirs) == len(ready.record.layers)
    return message


def test_signed_by_a_trusted_key_is_accepted(world: World, store: Store) -> None:
    digest = world.push(world.a, "test/signed:v1")
    world.sign(world.trusted, "test/signed", digest)
    ready = prepare(world, store, f"{world.host}/test/signed:v1")
    assert ready.signer == str(world.trusted_file)
    assert ready.record.manifest_digest == digest
    assert ready.record.name == f"docker://{world.host}/test/signed:v1@{digest}"  # pulled pinned to what was verified
    assert len(ready.lower_dirs) == 3
    assert prepare(world, store, f"{world.host}/test/signed@{digest}").signer == str(world.trusted_file)


def test_unsigned_is_refused(world: World, store: Store) -> None:
    digest = world.push(world.a, "test/unsigned:v1")
    refused_then_opted_out(
        world, store, f"{world.host}/test/unsigned:v1", ImageUnsigned,
        f"docker://{world.host}/test/unsigned:v1 ({digest}) is not signed",
        f"test/unsigned:{digest.replace(':', '-')}.sig", nothing_of=world.a,
    )  # fmt: skip


def test_tag_moved_to_another_image_after_signing_is_refused(world: World, store: Store) -> None:
    signed = world.push(world.a, "test/moved:v1")
    world.sign(world.trusted, "test/moved", signed)
    moved = world.push(world.b, "test/moved:v1")
    assert moved != signed
    refused_then_opted_out(
        world, store, f"{world.host}/test/moved:v1", ImageUnsigned, f"({moved}) is not signed", nothing_of=world.b
    )


def test_signature_copied_onto_another_image_is_refused(world: World, store: Store) -> None:
    signed = world.push(world.a, "test/replay:v1")
    world.sign(world.trusted, "test/replay", signed)
    moved = world.push(world.b, "test/replay:v1")
    world.registry.copy_manifest(
        "test/replay", signed.replace(":", "-") + ".sig", "test/replay", moved.replace(":", "-") + ".sig"
    )
    message = refused_then_opted_out(
        world, store, f"{world.host}/test/replay:v1", SignatureMismatch,
        f"the signature is for manifest {signed}, not {moved}", str(world.trusted_file), nothing_of=world.b,
    )  # fmt: skip
    assert "tag was moved" in message


def test_signed_image_copied_to_another_repository_is_refused(world: World, store: Store) -> None:
    digest = world.push(world.a, "test/source:v1")
    world.sign(world.trusted, "test/source", digest)
    assert world.push(world.a, "test/copy:v1") == digest
    sig_tag = digest.replace(":", "-") + ".sig"
    world.registry.copy_manifest("test/source", sig_tag, "test/copy", sig_tag)
    refused_then_opted_out(
        world, store, f"{world.host}/test/copy:v1", SignatureMismatch,
        f"the signature is for repository '{world.host}/test/source', not {world.host}/test/copy", nothing_of=world.a,
    )  # fmt: skip


def _signature_layer(world: World, repo: str, digest: str) -> tuple[dict[str, object], dict[str, object]]:
    data, _, _ = world.registry.manifest(repo, digest.replace(":", "-") + ".sig")
    doc = json.loads(data)
    (layer,) = doc["layers"]
    assert layer["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE
    return doc, layer


def test_payload_edited_in_registry_storage_is_refused(world: World, store: Store) -> None:
    digest = world.push(world.a, "test/edited:v1")
    world.sign(world.trusted, "test/edited", digest)
    _, layer = _signature_layer(world, "test/edited", digest)
    stored = world.server.blob_data(str(layer["digest"]))
    original = stored.read_bytes()
    forged = original.replace(digest.split(":")[1][:8].encode(), b"0badf00d")
    assert forged != original and len(forged) == len(original)
    stored.write_bytes(forged)
    refused_then_opted_out(
        world, store, f"{world.host}/test/edited:v1", SignatureMismatch,
        f"signature layer {layer['digest']}", "the payload in the registry was altered", nothing_of=world.a,
    )  # fmt: skip


def test_forged_payload_with_a_real_signature_is_refused(world: World, store: Store) -> None:
    """An attacker re-uploads an edited payload (consistent digest) under a stolen signature annotation."""
    signed = world.push(world.a, "test/forged:v1")
    world.sign(world.trusted, "test/forged", signed)
    doc, layer = _signature_layer(world, "test/forged", signed)
    moved = world.push(world.b, "test/forged:v1")
    payload = world.registry.blob("test/forged", str(layer["digest"])).replace(signed.encode(), moved.encode())
    layer["digest"], layer["size"] = world.registry.put_blob("test/forged", payload), len(payload)
    world.registry.put_manifest("test/forged", moved.replace(":", "-") + ".sig", json.dumps(doc).encode(), OCI_MANIFEST)
    refused_then_opted_out(
        world, store, f"{world.host}/test/forged:v1", UntrustedSignature,
        "none of its 1 signature(s) verifies", "or its payload was altered", nothing_of=world.b,
    )  # fmt: skip


def test_signed_by_a_key_trusted_only_for_another_prefix_is_refused(world: World, store: Store) -> None:
    digest = world.push(world.a, "test/wrongkey:v1")
    world.sign(world.stranger, "test/wrongkey", digest)
    message = refused_then_opted_out(
        world, store, f"{world.host}/test/wrongkey:v1", UntrustedSignature,
        f"({digest}): signature made by an untrusted key",
        f"{world.stranger_file}, which is trusted only for prefix \"{world.host}/elsewhere\"",
        str(world.trust_dir / "prefix.d" / world.host / "test" / "wrongkey"), nothing_of=world.a,
    )  # fmt: skip
    assert f'{world.trusted_file} for prefix "{world.host}/test"' in message


def test_no_key_trusted_for_the_name_is_refused_without_asking_the_registry(world: World, store: Store) -> None:
    digest = world.push(world.a, "lonely/app:v1")
    world.sign(world.trusted, "lonely/app", digest)
    world.server.stop()  # nothing is fetched when no key could verify the image
    try:
        with pytest.raises(NoTrustedKeys) as caught:
            prepare(world, store, f"{world.host}/lonely/app:v1")
    finally:
        world.server.start()
    message = str(caught.value)
    assert f"no sigstore public keys are trusted for {world.host}/lonely/app" in message
    assert str(world.trust_dir / "prefix.d" / world.host / "lonely" / "app") in message
    assert 'insecure_options = ["image"]' in message
    assert prepare(world, store, f"{world.host}/lonely/app:v1", "image", "http").signer is None


def test_one_trusted_signature_among_several_is_enough(world: World, store: Store) -> None:
    digest = world.push(world.a, "test/cosigned:v1")
    world.sign(world.stranger, "test/cosigned", digest)
    world.sign(world.trusted, "test/cosigned", digest)
    data, _, _ = world.registry.manifest("test/cosigned", digest.replace(":", "-") + ".sig")
    assert len(json.loads(data)["layers"]) == 2
    assert prepare(world, store, f"{world.host}/test/cosigned:v1").signer == str(world.trusted_file)


def test_multi_platform_image_signed_at_its_index(world: World, store: Store, tmp_path: Path) -> None:
    layout = tmp_path / "multi"
    amd64 = build_image(layout, [busybox_layer()], tag=None, index=False)
    arm64 = build_image(layout, [busybox_layer().file("etc/arch", b"arm64\n")], tag=None, index=False,
                        platform={"os": "linux", "architecture": "arm64"})  # fmt: skip
    add_index(layout, [amd64, arm64], tag="v1", platforms=[
        {"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"}])  # fmt: skip
    world.server.push(f"oci:{layout}:v1", "test/multi:v1", all_platforms=True)
    index = world.registry.digest("test/multi", "v1")
    world.sign(world.trusted, "test/multi", index)
    ready = prepare(world, store, f"{world.host}/test/multi:v1")
    assert ready.record.index_digest == index and ready.record.manifest_digest == amd64.manifest_digest
    assert ready.signer == str(world.trusted_file)


def test_group_options_that_include_image_opt_out(world: World, store: Store) -> None:
    world.push(world.b, "test/groups:v1")
    for options in (("all-fetch",), ("all",)):
        assert prepare(world, store, f"{world.host}/test/groups:v1", *options).signer is None


def test_images_from_disk_need_the_opt_out(world: World, store: Store) -> None:
    image = f"oci:{world.a.layout}:v1"
    with pytest.raises(InvalidConfig, match=re.escape("has no registry signature to verify")) as caught:
        prepare(world, store, image)
    assert 'insecure_options = ["image"]' in str(caught.value)
    assert prepare(world, store, image, "image").signer is None
