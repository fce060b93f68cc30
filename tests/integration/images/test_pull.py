"""Pull images from a real docker-registry (plain HTTP) into a real store, with faults injected by a proxy."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.images.manifest import PlatformNotFound
from nomad_rkt_driver.images.pull import Puller, PullProgress, PullTimeout
from nomad_rkt_driver.images.reference import DockerReference, parse_docker
from nomad_rkt_driver.images.registryerrors import ImageNotFound, RegistryTLSError, RegistryUnavailable
from nomad_rkt_driver.images.store import DigestMismatch, ImageRecord, Store
from tests.registryserver import FaultProxy, RegistryServer, build_index_layout, build_layout, busybox_files

REPO = "test/busybox"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry", "plain")
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", durable=False) as opened:
        yield opened


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    fault = FaultProxy(registry.port)
    try:
        yield fault
    finally:
        fault.close()


@pytest.fixture
def image(tmp_path: Path, registry: RegistryServer) -> str:
    """A 3-layer busybox image pushed by skopeo; returns REPO:TAG."""
    layers = [busybox_files(), {"etc/motd": b"hello\n"}, {"srv/data": os.urandom(256 * 1024)}]
    registry.push(build_layout(tmp_path / "layout", layers), f"{REPO}:v1")
    return f"{REPO}:v1"


def ref(host: str, repo_tag: str) -> DockerReference:
    return parse_docker(f"{host}/{repo_tag}")


def pull(puller: Puller, host: str, repo_tag: str, **kwargs: object) -> ImageRecord:
    return puller.pull(ref(host, repo_tag), insecure_http=True, tls_verify=True, credentials=None, **kwargs)  # type: ignore[arg-type]


def leftovers(store: Store) -> list[Path]:
    return [p for p in (store.root / "tmp").rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_pull_three_layers_over_http_with_progress(registry: RegistryServer, store: Store, image: str) -> None:
    events: list[PullProgress] = []
    record = pull(Puller(store), registry.host, image, progress=events.append)
    assert len(record.layers) == 3
    assert all(store.has_blob(d) for d in record.blobs)
    assert store.lookup_image(str(ref(registry.host, image))) == record
    assert all(layer.diff_id for layer in record.layers)
    last = events[-1]
    assert last.done and last.layers_done == last.layers_total == 3 and last.percent == 100.0
    assert last.bytes_done == last.bytes_total == sum(layer.size for layer in record.layers)
    assert sum(1 for e in events if e.done) == 1


def test_plain_http_refused_without_insecure_option(registry: RegistryServer, store: Store, image: str) -> None:
    with pytest.raises(RegistryTLSError, match=r'insecure_options = \["http"\]') as info:
        Puller(store).pull(ref(registry.host, image), insecure_http=False, tls_verify=True, credentials=None)
    assert registry.host in str(info.value)
    assert store.lookup_image(str(ref(registry.host, image))) is None


def test_second_pull_uses_no_network_and_force_refetches_only_manifests(
    proxy: FaultProxy, store: Store, image: str
) -> None:
    puller = Puller(store)
    first = pull(puller, proxy.host, image)
    assert set(proxy.blob_gets().values()) == {1}
    before = len(proxy.requests)
    assert pull(puller, proxy.host, image) == first
    assert len(proxy.requests) == before, "a stored image must not touch the registry"
    forced = pull(puller, proxy.host, image, force=True)
    assert forced.manifest_digest == first.manifest_digest
    assert set(proxy.blob_gets().values()) == {1}, "force must not download stored blobs again"
    assert proxy.count("/manifests/") == 2


def test_digest_reference_already_stored_needs_no_registry(registry: RegistryServer, store: Store, image: str) -> None:
    puller = Puller(store)
    record = pull(puller, registry.host, image)
    pinned = f"{REPO}@{record.manifest_digest}"
    assert pull(puller, registry.host, pinned).manifest_digest == record.manifest_digest
    registry.kill()
    assert pull(puller, registry.host, pinned).manifest_digest == record.manifest_digest


def test_tampered_blob_is_refused_and_not_stored(registry: RegistryServer, store: Store, image: str) -> None:
    layer = _layer_digests(registry, image)[2]
    data = bytearray(registry.blob_data(layer).read_bytes())
    data[len(data) // 2] ^= 0xFF
    registry.blob_data(layer).write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match=layer):
        pull(Puller(store), registry.host, image)
    assert not store.has_blob(layer)
    assert store.lookup_image(str(ref(registry.host, image))) is None
    assert leftovers(store) == []


def test_manifest_pointing_at_missing_blob(registry: RegistryServer, store: Store, image: str) -> None:
    layer = _layer_digests(registry, image)[1]
    registry.blob_data(layer).unlink()
    with pytest.raises(ImageNotFound, match=f"blob {layer}.*push it again"):
        pull(Puller(store), registry.host, image)
    assert store.lookup_image(str(ref(registry.host, image))) is None


def test_registry_answering_500_then_recovering(proxy: FaultProxy, store: Store, image: str) -> None:
    proxy.fail_next = 2
    record = pull(Puller(store), proxy.host, image)
    assert len(record.layers) == 3
    assert proxy.count("/manifests/") == 3  # two injected failures, then the real answer


def test_registry_failing_for_good_is_a_recoverable_error(proxy: FaultProxy, store: Store, image: str) -> None:
    proxy.fail_next = 1000
    with pytest.raises(RegistryUnavailable, match=r"HTTP 500.*after 4 attempts") as info:
        pull(Puller(store), proxy.host, image)
    assert info.value.recoverable


def test_registry_killed_mid_pull_then_next_pull_works(
    tmp_path: Path, registry: RegistryServer, proxy: FaultProxy, store: Store
) -> None:
    big = os.urandom(12 * 1024 * 1024)
    registry.push(build_layout(tmp_path / "big", [busybox_files(), {"big": big}], gzip_level=None), f"{REPO}:big")
    big_layer = _layer_digests(registry, f"{REPO}:big")[1]
    proxy.throttle_bytes_per_s = 6 * 1024 * 1024
    killer = threading.Timer(0.8, registry.kill)
    killer.start()
    try:
        with pytest.raises(RegistryUnavailable) as info:
            pull(Puller(store), proxy.host, f"{REPO}:big")
    finally:
        killer.join()
    assert info.value.recoverable
    assert "connection lost after" in str(info.value) and big_layer in str(info.value)
    assert not store.has_blob(big_layer)
    assert leftovers(store) == []
    registry.start()
    proxy.throttle_bytes_per_s = None
    record = pull(Puller(store), proxy.host, f"{REPO}:big")
    assert record.layers[1].digest == big_layer and store.has_blob(big_layer)


def test_concurrent_pulls_coalesce(proxy: FaultProxy, store: Store, image: str) -> None:
    proxy.throttle_bytes_per_s = 8 * 1024 * 1024
    results: list[ImageRecord] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Store(store.root, durable=False) as own:  # another Store instance, as another process would have
                results.append(pull(Puller(own), proxy.host, image))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 3 and len({r.manifest_digest for r in results}) == 1
    gets = proxy.blob_gets()
    assert len(gets) == 4 and set(gets.values()) == {1}, f"each blob must be fetched once: {gets}"
    assert proxy.count("/manifests/") == 1


def test_manifest_list_picks_host_platform(tmp_path: Path, registry: RegistryServer, store: Store) -> None:
    amd64 = build_layout(tmp_path / "amd64", [busybox_files(), {"arch": b"amd64"}])
    build_layout(tmp_path / "arm64", [busybox_files(), {"arch": b"arm64"}], architecture="arm64", variant="v8")
    index = build_index_layout(tmp_path / "multi", [tmp_path / "amd64", tmp_path / "arm64"])
    registry.push(index, f"{REPO}:multi", all_platforms=True)
    record = pull(Puller(store), registry.host, f"{REPO}:multi")
    assert record.index_digest is not None and store.has_blob(record.index_digest)
    assert record.manifest_digest == _single_manifest_digest(tmp_path / "amd64")
    assert amd64.endswith(":latest")


def test_index_without_host_platform_lists_what_it_has(tmp_path: Path, registry: RegistryServer, store: Store) -> None:
    build_layout(tmp_path / "arm64", [busybox_files()], architecture="arm64", variant="v8")
    registry.push(build_index_layout(tmp_path / "only-arm", [tmp_path / "arm64"]), f"{REPO}:arm", all_platforms=True)
    with pytest.raises(PlatformNotFound, match=r"linux/amd64.*it has: linux/arm64/v8"):
        pull(Puller(store), registry.host, f"{REPO}:arm")
    assert store.lookup_image(str(ref(registry.host, f"{REPO}:arm"))) is None


def test_unknown_tag_names_repository_and_tag(registry: RegistryServer, store: Store, image: str) -> None:
    with pytest.raises(ImageNotFound, match=f"manifest {REPO}:nope.*MANIFEST_UNKNOWN"):
        pull(Puller(store), registry.host, f"{REPO}:nope")


def test_blob_redirect_to_another_host_is_followed(registry: RegistryServer, store: Store, image: str) -> None:
    front, back = FaultProxy(registry.port), FaultProxy(registry.port)
    try:
        front.redirect_blobs_to = f"http://{back.host}"
        record = pull(Puller(store), front.host, image)
        assert sum(back.blob_gets().values()) == 4 and store.has_blob(record.layers[0].digest)
    finally:
        front.close()
        back.close()


def test_activity_timeout_is_recoverable(proxy: FaultProxy, store: Store, image: str) -> None:
    proxy.throttle_bytes_per_s = 8 * 1024  # one 16 KiB chunk every 2 s: slower than the activity timeout
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"no data for 0\.5 s") as info:
        pull(Puller(store, activity_timeout_s=0.5), proxy.host, image)
    assert info.value.recoverable and time.monotonic() - started < 15
    assert leftovers(store) == []


def _manifest(registry: RegistryServer, repo_tag: str) -> dict[str, object]:
    import json

    import requests

    repo, _, tag = repo_tag.partition(":")
    accept = "application/vnd.oci.image.manifest.v1+json"
    with requests.get(f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={"Accept": accept}, timeout=10) as r:
        r.raise_for_status()
        doc: dict[str, object] = json.loads(r.content)
    return doc


def _layer_digests(registry: RegistryServer, repo_tag: str) -> list[str]:
    layers = _manifest(registry, repo_tag)["layers"]
    assert isinstance(layers, list)
    return [str(layer["digest"]) for layer in layers]


def _single_manifest_digest(layout: Path) -> str:
    import json

    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    return str(entry["digest"])


def test_overall_timeout_is_recoverable_and_leaves_no_partial_blob(proxy: FaultProxy, store: Store, image: str) -> None:
    proxy.throttle_bytes_per_s = 256 * 1024  # the 2 MB busybox layer needs ~8 s; the pull may take 1 s
    started = time.monotonic()
    with pytest.raises(PullTimeout, match="image_pull_timeout") as info:
        pull(Puller(store), proxy.host, image, timeout_s=1.0)
    assert info.value.recoverable and time.monotonic() - started < 10
    assert leftovers(store) == []
    assert store.lookup_image(str(ref(proxy.host, image))) is None
