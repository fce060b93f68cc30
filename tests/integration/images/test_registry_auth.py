"""The registry client against real docker-registry instances with TLS + htpasswd and with Bearer tokens."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from nomad_rkt_driver.images.auth import Credentials
from nomad_rkt_driver.images.manifest import ACCEPTED_MANIFEST_TYPES
from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.reference import parse_docker
from nomad_rkt_driver.images.registry import RegistryClient
from nomad_rkt_driver.images.registryerrors import RegistryAuthFailed, RegistryTLSError
from nomad_rkt_driver.images.store import Store
from tests.registryserver import PASSWORD, USERNAME, FaultProxy, RegistryServer, build_layout, busybox_files

REPO = "test/busybox"
GOOD = Credentials(USERNAME, PASSWORD)
WRONG_PASSWORD = "not-the-Pa55word"


def _serve(tmp_path: Path, flavour: str) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / flavour, flavour)
    try:
        server.start()
        server.push(build_layout(tmp_path / f"layout-{flavour}", [busybox_files(), {"etc/x": b"x"}]), f"{REPO}:v1")
        yield server
    finally:
        server.close()


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    yield from _serve(tmp_path, "tls-basic")


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    yield from _serve(tmp_path, "token")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", durable=False) as opened:
        yield opened


def test_tls_and_basic_auth_with_the_ca(tls_registry: RegistryServer, store: Store) -> None:
    record = Puller(store).pull(
        parse_docker(f"{tls_registry.host}/{REPO}:v1"), insecure_http=False, tls_verify=str(tls_registry.ca),
        credentials=GOOD,
    )  # fmt: skip
    assert len(record.layers) == 2 and all(store.has_blob(d) for d in record.blobs)


def test_wrong_password_is_a_clear_401_without_the_password(tls_registry: RegistryServer) -> None:
    wrong = Credentials(USERNAME, WRONG_PASSWORD)
    with (
        RegistryClient(tls_registry.host, tls_verify=str(tls_registry.ca), credentials=wrong) as client,
        pytest.raises(RegistryAuthFailed, match=r"rejected the credentials.*HTTP 401") as info,
    ):
        client.get_manifest(REPO, "v1", ACCEPTED_MANIFEST_TYPES)
    assert tls_registry.host in str(info.value) and WRONG_PASSWORD not in str(info.value)
    assert not info.value.recoverable


def test_missing_credentials_say_how_to_give_them(tls_registry: RegistryServer) -> None:
    with (
        RegistryClient(tls_registry.host, tls_verify=str(tls_registry.ca)) as client,
        pytest.raises(RegistryAuthFailed, match=r"requires credentials.*auth"),
    ):
        client.ping()


def test_tls_without_the_ca_is_a_certificate_error(tls_registry: RegistryServer) -> None:
    with (
        RegistryClient(tls_registry.host, credentials=GOOD) as client,
        pytest.raises(RegistryTLSError, match=r"(?i)certificate.*insecure_options = \[\"tls\"\]"),
    ):
        client.ping()


def test_tls_verify_false_accepts_the_unknown_ca(tls_registry: RegistryServer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        with RegistryClient(tls_registry.host, tls_verify=False, credentials=GOOD) as client:
            raw = client.get_manifest(REPO, "v1", ACCEPTED_MANIFEST_TYPES)
    assert raw.digest.startswith("sha256:")


def test_bearer_token_flow_and_token_cache(token_registry: RegistryServer, store: Store) -> None:
    assert token_registry.token_server is not None
    token_registry.token_server.requests.clear()
    record = Puller(store).pull(
        parse_docker(f"{token_registry.host}/{REPO}:v1"), insecure_http=True, tls_verify=True, credentials=GOOD
    )
    assert len(record.layers) == 2
    asked = token_registry.token_server.requests
    assert len(asked) == 1, f"one token per scope, cached for the whole pull: {asked}"
    assert asked[0]["scope"] == f"repository:{REPO}:pull" and asked[0]["service"] == "test-registry"
    assert asked[0]["authorization"] == "Basic"


def test_bearer_with_wrong_password(token_registry: RegistryServer) -> None:
    with (
        RegistryClient(token_registry.host, insecure_http=True, credentials=Credentials(USERNAME, WRONG_PASSWORD)) as c,
        pytest.raises(RegistryAuthFailed, match="token server HTTP 401") as info,
    ):
        c.get_manifest(REPO, "v1", ACCEPTED_MANIFEST_TYPES)
    assert WRONG_PASSWORD not in str(info.value)


def test_anonymous_bearer_token(token_registry: RegistryServer) -> None:
    with RegistryClient(token_registry.host, insecure_http=True) as client:
        client.ping()
        assert client.get_manifest(REPO, "v1", ACCEPTED_MANIFEST_TYPES).data


def test_authorization_not_sent_to_another_host_on_redirect(
    tmp_path: Path, token_registry: RegistryServer, store: Store
) -> None:
    """Blobs redirected (as to object storage) go to a plain registry holding the same blobs, without our token."""
    plain = RegistryServer(tmp_path / "mirror", "plain")
    front, back = FaultProxy(token_registry.port), None
    try:
        plain.start()
        plain.push(f"oci:{tmp_path / 'layout-token'}:latest", f"{REPO}:v1")
        back = FaultProxy(plain.port)
        front.redirect_blobs_to = f"http://{back.host}"
        record = Puller(store).pull(
            parse_docker(f"{front.host}/{REPO}:v1"), insecure_http=True, tls_verify=True, credentials=GOOD
        )
        assert all(store.has_blob(layer.digest) for layer in record.layers)
        assert any("Authorization" in headers for _, path, headers in front.requests if "/manifests/" in path)
        blob_requests = [headers for _, path, headers in back.requests if "/blobs/" in path]
        assert len(blob_requests) == 3
        assert not any(k.lower() == "authorization" for headers in blob_requests for k in headers)
    finally:
        front.close()
        if back is not None:
            back.close()
        plain.close()
