"""StartTask through the real plugin process runs a cosign-signed registry image without insecure_options "image".

The plugin is configured with a ``trust_dir`` that trusts the test's cosign key for the registry's
``test`` prefix; the task only opts out of HTTPS (``http``: the test registry is plain HTTP).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.imagebuild import busybox_image
from tests.integration.driver.conftest import make_alloc, set_config, task_config
from tests.protocol.plugin import Plugin
from tests.registryserver import RegistryServer, need
from tests.unit.images.test_sigstore_producer import Cosign


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry", "plain")
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def plugin(plugin: Plugin, data_dir: Path, tmp_path: Path, registry: RegistryServer) -> tuple[Plugin, Path]:
    """The shared running plugin, configured with a trust dir the test fills."""
    trust_dir = tmp_path / "trustedkeys"
    set_config(plugin, data_dir, trust_dir=str(trust_dir))
    return plugin, trust_dir


def _digest(image: str) -> str:
    done = subprocess.run(
        [need("skopeo", "skopeo"), "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{image}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_signed_image_starts_without_the_image_opt_out(
    plugin: tuple[Plugin, Path], registry: RegistryServer, tmp_path: Path
) -> None:
    running, trust_dir = plugin
    built = busybox_image(tmp_path / "layout", tag="v1")
    registry.push(f"oci:{built.layout}:v1", "test/web:v1")
    registry.push(f"oci:{built.layout}:v1", "test/unsigned:v1")
    cosign = Cosign(tmp_path / "cosign")
    key = cosign.generate_key_pair("release")
    cosign.sign_image(key, f"{registry.host}/test/web@{_digest(f'{registry.host}/test/web:v1')}")
    key_file = trust_dir / "prefix.d" / registry.host / "test" / "release.pub"
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(key.pem)

    alloc = make_alloc(tmp_path)
    config = task_config(alloc, f"{registry.host}/test/web:v1", insecure_options=["http"])
    response = running.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    assert response.handle.state == driver_pb2.RUNNING
    result = running.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
    assert result.result.exit_code == 0
    assert "hello from the test image" in alloc.stdout.text()
    running.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)

    alloc = make_alloc(tmp_path, "unsigned")
    config = task_config(alloc, f"{registry.host}/test/unsigned:v1", insecure_options=["http"])
    with pytest.raises(grpc.RpcError) as info:
        running.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "is not signed" in details and 'insecure_options = ["image"]' in details, details


def test_a_stored_signed_image_restarts_without_the_registry_until_its_key_is_removed(
    plugin: tuple[Plugin, Path], registry: RegistryServer, tmp_path: Path
) -> None:
    running, trust_dir = plugin
    built = busybox_image(tmp_path / "layout", tag="v1")
    registry.push(f"oci:{built.layout}:v1", "test/kept:v1")
    cosign = Cosign(tmp_path / "cosign")
    key = cosign.generate_key_pair("release")
    cosign.sign_image(key, f"{registry.host}/test/kept@{_digest(f'{registry.host}/test/kept:v1')}")
    key_file = trust_dir / "prefix.d" / registry.host / "test" / "release.pub"
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(key.pem)

    def run(name: str) -> driver_pb2.ExitResult:
        config = task_config(make_alloc(tmp_path, name), f"{registry.host}/test/kept:v1", insecure_options=["http"])
        running.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
        result = running.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60).result
        running.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)
        return result

    assert run("online").exit_code == 0
    registry.close()  # Nomad restarts tasks while the registry is down: the stored, verified image serves
    assert run("offline").exit_code == 0
    key_file.unlink()  # a key no longer trusted refuses the stored image, registry or not
    with pytest.raises(grpc.RpcError) as info:
        run("untrusted")
    details = info.value.details() or ""
    assert "no sigstore public keys are trusted" in details, details
