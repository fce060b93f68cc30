"""Registry client behaviour that needs no registry: digest checks, unreachable hosts, refused schemes."""

from __future__ import annotations

import socket
import time

import pytest

from nomad_rkt_driver.images.manifest import ACCEPTED_MANIFEST_TYPES, InvalidManifest, sha256_digest
from nomad_rkt_driver.images.registry import RegistryClient, _verify_manifest_digest
from nomad_rkt_driver.images.registryerrors import ManifestDigestMismatch, RegistryUnavailable

DATA = b'{"schemaVersion": 2}'


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here once the socket is closed


def test_digest_reference_is_checked() -> None:
    good = sha256_digest(DATA)
    assert _verify_manifest_digest(DATA, good, "", "r", "manifest x") == good
    bad = "sha256:" + "0" * 64
    with pytest.raises(ManifestDigestMismatch, match=f"hash to {good}, not {bad}"):
        _verify_manifest_digest(DATA, bad, "", "r", "manifest x")


def test_announced_digest_is_checked_for_tags() -> None:
    with pytest.raises(ManifestDigestMismatch):
        _verify_manifest_digest(DATA, "latest", "sha256:" + "1" * 64, "r", "manifest x")
    assert _verify_manifest_digest(DATA, "latest", "", "r", "manifest x") == sha256_digest(DATA)
    with pytest.raises(InvalidManifest, match="malformed"):
        _verify_manifest_digest(DATA, "latest", "md5:abc", "r", "manifest x")


def test_unreachable_registry_is_recoverable_after_bounded_retries() -> None:
    host = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with RegistryClient(host, insecure_http=True, max_attempts=3) as client, pytest.raises(RegistryUnavailable) as info:
        client.get_manifest("a/b", "v1", ACCEPTED_MANIFEST_TYPES)
    assert info.value.recoverable
    assert f"registry {host} unreachable for manifest a/b:v1 after 3 attempts" in str(info.value)
    assert 0.7 <= time.monotonic() - started < 5  # backoff 0.25 s + 0.5 s


def test_malformed_blob_digest_is_refused_before_any_request() -> None:
    with RegistryClient("127.0.0.1:1", insecure_http=True) as client, pytest.raises(InvalidManifest, match="malformed"):
        client.fetch_blob("a/b", "sha256:nothex", lambda chunk: None)
