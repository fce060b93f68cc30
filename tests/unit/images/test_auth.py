"""Credential resolution (task, docker config.json, credential helpers) and WWW-Authenticate parsing."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.images.auth import (
    CredentialHelperFailed,
    Credentials,
    parse_www_authenticate,
    resolve_credentials,
)

HELPER = """#!/bin/sh
read -r server
echo "$server" >> "{log}"
case "$server" in
  reg.example:5000) echo '{{"ServerURL":"reg.example:5000","Username":"helper-user","Secret":"helper-pass"}}' ;;
  tok.example) echo '{{"ServerURL":"tok.example","Username":"<token>","Secret":"refresh-123"}}' ;;
  broken.example) echo 'not json' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ``docker-credential-testhelper`` executable on PATH; yields the file it logs servers to."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-testhelper"
    script.write_text(HELPER.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    yield log


def config(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_explicit_credentials_win(tmp_path: Path) -> None:
    path = config(tmp_path, {"auths": {"r.io": {"username": "cfg", "password": "x"}}})
    explicit = Credentials("task", "pw")
    assert resolve_credentials("r.io", explicit=explicit, config_path=path) is explicit


def test_config_auth_base64_and_url_keys(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"alice:pa:ss").decode()
    path = config(tmp_path, {"auths": {"https://r.io:5000/v1/": {"auth": encoded}}})
    assert resolve_credentials("r.io:5000", config_path=path) == Credentials("alice", "pa:ss")
    assert resolve_credentials("other.io", config_path=path) is None


def test_config_docker_hub_alias(tmp_path: Path) -> None:
    path = config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"username": "bob", "password": "pw"}}})
    assert resolve_credentials("registry-1.docker.io", config_path=path) == Credentials("bob", "pw")


def test_config_identity_token(tmp_path: Path) -> None:
    path = config(tmp_path, {"auths": {"r.io": {"identitytoken": "tok"}}})
    assert resolve_credentials("r.io", config_path=path) == Credentials(identity_token="tok")


def test_bad_config_names_file_and_problem(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match=r"auth\.config.*not valid JSON"):
        resolve_credentials("r.io", config_path=_write(tmp_path, "{"))
    path = config(tmp_path, {"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}})  # "nocolon"
    with pytest.raises(InvalidConfig, match="without a ':'"):
        resolve_credentials("r.io", config_path=path)
    with pytest.raises(InvalidConfig, match="cannot read"):
        resolve_credentials("r.io", config_path=tmp_path / "absent.json")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.json"
    path.write_text(text)
    return path


def test_cred_helpers_from_config_and_plugin_helper(tmp_path: Path, helper: Path) -> None:
    path = config(tmp_path, {"credHelpers": {"reg.example:5000": "testhelper"}})
    assert resolve_credentials("reg.example:5000", config_path=path) == Credentials("helper-user", "helper-pass")
    assert resolve_credentials("tok.example", helper="testhelper") == Credentials(identity_token="refresh-123")
    assert resolve_credentials("unknown.example", helper="testhelper") is None
    store_cfg = config(tmp_path, {"credsStore": "testhelper"})
    assert resolve_credentials("reg.example:5000", config_path=store_cfg) == Credentials("helper-user", "helper-pass")
    assert helper.read_text().split() == ["reg.example:5000", "tok.example", "unknown.example", "reg.example:5000"]


def test_helper_failures_are_clear(helper: Path) -> None:
    with pytest.raises(CredentialHelperFailed, match="printed no JSON"):
        resolve_credentials("broken.example", helper="testhelper")
    with pytest.raises(CredentialHelperFailed, match="docker-credential-nosuch is not on PATH"):
        resolve_credentials("r.io", helper="nosuch")
    with pytest.raises(InvalidConfig, match="not a credential helper name"):
        resolve_credentials("r.io", helper="../evil")


def test_credentials_never_show_secrets() -> None:
    creds = Credentials("user", "hunter2", "tok-secret")
    for text in (repr(creds), str(creds), f"{creds}"):
        assert "hunter2" not in text and "tok-secret" not in text and "user" in text.lower()
    assert repr(creds) == "Credentials(username=True, password=True, identity_token=True)"


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"',
            "bearer",
            {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:a/b:pull"},
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ('Bearer realm="r", scope="repository:x:pull,push", error="insufficient_scope"', "bearer",
         {"realm": "r", "scope": "repository:x:pull,push", "error": "insufficient_scope"}),
        ("bearer realm=unquoted", "bearer", {"realm": "unquoted"}),
        ("", "", {}),
    ],
)  # fmt: skip
def test_parse_www_authenticate(header: str, scheme: str, params: dict[str, str]) -> None:
    challenge = parse_www_authenticate(header)
    assert (challenge.scheme, challenge.params) == (scheme, params)
