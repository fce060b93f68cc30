"""Vault in the driver, end to end: a real OpenBao dev server, real registries, the plugin process.

Registry credentials and image-signing keys come from Vault; a sealed or denying Vault gives a
recoverable error naming the path; no secret value appears in logs, errors or driver_state.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from nomad_rkt_driver.protocol.gen import driver_pb2, recoverable_error_pb2
from tests.baoserver import ROOT_TOKEN, BaoServer, start
from tests.imagebuild import busybox_image
from tests.integration.driver.conftest import make_alloc, set_config, task_config
from tests.protocol.plugin import Plugin, launch, nomad_env
from tests.registryserver import PASSWORD, USERNAME, RegistryServer
from tests.unit.images.test_sigstore_producer import Cosign


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = start(tmp_path_factory.mktemp("bao"))
    try:
        server.client().sys.create_or_update_policy("nothing", 'path "secret/data/other/*" { capabilities = ["read"] }')
        yield server
    finally:
        server.stop()


def start_plugin(data_dir: Path, **config: Any) -> Plugin:
    running = launch(nomad_env())
    set_config(running, data_dir, **config)
    return running


def stop_plugin(running: Plugin) -> None:
    if running.proc.poll() is None:
        running.shutdown()
    running.kill()


def vault_block(bao: BaoServer, token: str = ROOT_TOKEN) -> dict[str, Any]:
    return {"address": bao.address, "cache_ttl": "1s", "auth": {"token": token}}


def run_task(running: Plugin, alloc_base: Path, image: str, name: str, **cfg: Any) -> driver_pb2.StartTaskResponse:
    alloc = make_alloc(alloc_base, name)
    config = task_config(alloc, image, **cfg)
    response: driver_pb2.StartTaskResponse = running.driver.StartTask(
        driver_pb2.StartTaskRequest(task=config), timeout=120
    )
    result = running.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60).result
    assert result.exit_code == 0 and "hello from the test image" in alloc.stdout.text()
    running.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)
    return response


def refused(running: Plugin, alloc_base: Path, image: str, name: str, **cfg: Any) -> grpc.RpcError:
    config = task_config(make_alloc(alloc_base, name), image, **cfg)
    with pytest.raises(grpc.RpcError) as info:
        running.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    return info.value


def is_recoverable(err: grpc.RpcError) -> bool:
    blob = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not blob:
        return False
    detail = recoverable_error_pb2.RecoverableError()
    return bool(status_pb2.Status.FromString(blob).details[0].Unpack(detail) and detail.recoverable)


def test_registry_credentials_from_vault(bao: BaoServer, data_dir: Path, tmp_path: Path) -> None:
    registry = RegistryServer(tmp_path / "registry", "tls-basic").start()
    try:
        built = busybox_image(tmp_path / "layout", tag="v1")
        registry.push(f"oci:{built.layout}:v1", "team/web:v1")
        path = f"secret/data/registry/{registry.host}"
        bao.client().secrets.kv.v2.create_or_update_secret(
            path=f"registry/{registry.host}", secret={"username": USERNAME, "password": PASSWORD}
        )
        running = start_plugin(data_dir, vault=vault_block(bao), auth={"vault_path": "secret/data/registry/{registry}"})
        image = f"{registry.host}/team/web:v1"
        opts = {"insecure_options": ["tls", "image"]}
        try:
            response = run_task(running, tmp_path, image, "first", **opts)

            # Sealed: recoverable, names the path; unsealed: the next start pulls again.
            bao.seal()
            try:
                time.sleep(1.2)  # past the plugin's cache_ttl
                err = refused(running, tmp_path, image, "sealed", **opts)
                assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and is_recoverable(err)
                assert "sealed" in (err.details() or "") and path in (err.details() or "")
            finally:
                bao.unseal()
            run_task(running, tmp_path, image, "unsealed", **opts)

            # A token whose policy denies the path: a clear, recoverable error.
            denied = bao.client().auth.token.create(policies=["nothing"], ttl="300s")["auth"]["client_token"]
            stop_plugin(running)
            running = start_plugin(
                data_dir, vault=vault_block(bao, denied), auth={"vault_path": "secret/data/registry/{registry}"}
            )
            err = refused(running, tmp_path, image, "denied", **opts)
            assert is_recoverable(err) and "denied access" in (err.details() or "") and path in (err.details() or "")

            # The secret never leaks: not in errors, logs (debug level) or driver_state.
            stop_plugin(running)
            text = "\n".join([err.details() or "", *running.stderr_lines]) + repr(response.handle.driver_state)
            assert PASSWORD not in text and denied not in text
        finally:
            stop_plugin(running)
    finally:
        registry.close()


def test_trust_keys_from_vault(bao: BaoServer, data_dir: Path, tmp_path: Path) -> None:
    registry = RegistryServer(tmp_path / "registry", "plain").start()
    try:
        built = busybox_image(tmp_path / "layout", tag="v1")
        registry.push(f"oci:{built.layout}:v1", "signed/web:v1")
        registry.push(f"oci:{built.layout}:v1", "signed/unsigned:v1")
        digest = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                "--format",
                "{{.Digest}}",
                f"docker://{registry.host}/signed/web:v1",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        cosign = Cosign(tmp_path / "cosign")
        key = cosign.generate_key_pair("release")
        cosign.sign_image(key, f"{registry.host}/signed/web@{digest}")
        bao.client().secrets.kv.v2.create_or_update_secret(path="keys/release", secret={"key": key.pem.decode()})
        running = start_plugin(
            data_dir,
            vault=vault_block(bao),
            trust_dir=str(tmp_path / "empty-trust"),
            trust=[{"prefix": f"{registry.host}/signed", "vault_path": "secret/data/keys/release"}],
        )
        try:
            run_task(running, tmp_path, f"{registry.host}/signed/web:v1", "signed", insecure_options=["http"])
            err = refused(
                running, tmp_path, f"{registry.host}/signed/unsigned:v1", "unsigned", insecure_options=["http"]
            )
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "is not signed" in (err.details() or "")
            # Tampered: the signed tag now points at other content, which its signature does not cover.
            other = busybox_image(tmp_path / "other", tag="v1", compress=False)
            registry.push(f"oci:{other.layout}:v1", "signed/web:v1")
            err = refused(
                running, tmp_path, f"{registry.host}/signed/web:v1", "moved", insecure_options=["http"], force_pull=True
            )
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
        finally:
            stop_plugin(running)
    finally:
        registry.close()
