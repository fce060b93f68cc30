"""The Vault client against a real OpenBao dev server started by the tests."""

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.secrets.vault import Vault, VaultSettings, VaultUnavailable
from tests.baoserver import ROOT_TOKEN, BaoServer, start

SECRET_PASSWORD = "s3cr3t-Pa55-do-not-leak"


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = start(tmp_path_factory.mktemp("bao"))
    try:
        root = server.client()
        root.secrets.kv.v2.create_or_update_secret(
            path="registry/127.0.0.1:5000", secret={"username": "puller", "password": SECRET_PASSWORD}
        )
        root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        root.write("kv1/registry", username="v1user", password=SECRET_PASSWORD)
        root.sys.create_or_update_policy("registry-read", 'path "secret/data/registry/*" { capabilities = ["read"] }')
        root.sys.create_or_update_policy("nothing", 'path "secret/data/other/*" { capabilities = ["read"] }')
        root.sys.enable_auth_method("approle")
        yield server
    finally:
        server.stop()


def settings(bao: BaoServer, **kw: object) -> VaultSettings:
    values: dict[str, object] = {"address": bao.address, "token": ROOT_TOKEN}
    values.update(kw)
    return VaultSettings(**values)  # type: ignore[arg-type]


def test_reads_kv_v2_and_kv_v1(bao: BaoServer) -> None:
    vault = Vault(settings(bao))
    assert vault.read("secret/data/registry/127.0.0.1:5000") == {"username": "puller", "password": SECRET_PASSWORD}
    assert vault.read("kv1/registry") == {"username": "v1user", "password": SECRET_PASSWORD}


def test_token_file(bao: BaoServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(ROOT_TOKEN + "\n")
    assert Vault(settings(bao, token="", token_file=str(token_file))).read("kv1/registry")["username"] == "v1user"


def approle(bao: BaoServer, tmp_path: Path, name: str, cache_ttl_s: float = 60.0, **role: object) -> VaultSettings:
    root = bao.client()
    root.auth.approle.create_or_update_approle(name, token_policies=["registry-read"], **role)
    role_id = root.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    secret_file = tmp_path / f"{name}.secret-id"
    secret_file.write_text(secret_id)
    return settings(bao, token="", role_id=role_id, secret_id_file=str(secret_file), cache_ttl_s=cache_ttl_s)


def test_approle_login_reads_with_its_policy(bao: BaoServer, tmp_path: Path) -> None:
    vault = Vault(approle(bao, tmp_path, "puller"))
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"
    with pytest.raises(VaultUnavailable, match="denied access to 'kv1/registry'") as info:
        vault.read("kv1/registry")
    assert info.value.recoverable


def test_short_ttl_token_is_renewed(bao: BaoServer) -> None:
    token = bao.client().auth.token.create(
        policies=["registry-read"], ttl="4s", explicit_max_ttl="60s", renewable=True
    )["auth"]["client_token"]
    vault = Vault(settings(bao, token=token, cache_ttl_s=0.01))
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"
    time.sleep(3.0)  # less than a third of the TTL left: the next read renews first
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"
    time.sleep(2.5)  # past the original 4 s: only a renewed token still works
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"


def test_approle_logs_in_again_when_renewal_is_impossible(bao: BaoServer, tmp_path: Path) -> None:
    vault = Vault(approle(bao, tmp_path, "short", cache_ttl_s=0.01, token_ttl="3s", token_max_ttl="3s"))
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"
    time.sleep(3.5)  # the token has hit its max TTL: renewal cannot help, a new login must
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"


def test_secrets_are_cached_for_cache_ttl(bao: BaoServer) -> None:
    vault = Vault(settings(bao, cache_ttl_s=1.0))
    bao.client().secrets.kv.v2.create_or_update_secret(path="registry/cached", secret={"v": "1"})
    assert vault.read("secret/data/registry/cached") == {"v": "1"}
    bao.client().secrets.kv.v2.create_or_update_secret(path="registry/cached", secret={"v": "2"})
    assert vault.read("secret/data/registry/cached") == {"v": "1"}
    time.sleep(1.1)
    assert vault.read("secret/data/registry/cached") == {"v": "2"}


def test_sealed_vault_is_recoverable_and_unseal_lets_the_next_read_pass(bao: BaoServer) -> None:
    vault = Vault(settings(bao, cache_ttl_s=0.01))
    bao.seal()
    try:
        time.sleep(0.05)
        with pytest.raises(VaultUnavailable, match="sealed") as info:
            vault.read("secret/data/registry/127.0.0.1:5000")
        assert info.value.recoverable and "secret/data/registry/127.0.0.1:5000" in str(info.value)
    finally:
        bao.unseal()
    assert vault.read("secret/data/registry/127.0.0.1:5000")["username"] == "puller"


def test_missing_path_and_denied_policy_are_named(bao: BaoServer) -> None:
    with pytest.raises(VaultUnavailable, match="no secret at 'secret/data/registry/nope'"):
        Vault(settings(bao)).read("secret/data/registry/nope")
    token = bao.client().auth.token.create(policies=["nothing"], ttl="60s")["auth"]["client_token"]
    with pytest.raises(VaultUnavailable, match="denied access") as info:
        Vault(settings(bao, token=token)).read("secret/data/registry/127.0.0.1:5000")
    assert "policy must allow read" in str(info.value)


def test_unreachable_vault_is_recoverable(tmp_path: Path) -> None:
    with pytest.raises(VaultUnavailable, match="unreachable") as info:
        Vault(VaultSettings(address="http://127.0.0.1:9", token="t")).read("secret/data/x")
    assert info.value.recoverable


def test_bad_settings_name_the_attribute(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match=r"vault\.address"):
        Vault(VaultSettings(token="t"))
    with pytest.raises(InvalidConfig, match=r"vault\.auth"):
        Vault(VaultSettings(address="http://127.0.0.1:9"))
    with pytest.raises(InvalidConfig, match="secret_id_file"):
        Vault(VaultSettings(address="http://127.0.0.1:9", role_id="r"))


def test_environment_defaults() -> None:
    filled = VaultSettings().with_environment({"VAULT_ADDR": "http://v:8200", "VAULT_TOKEN": "tok"})
    assert filled.address == "http://v:8200" and filled.token == "tok"
    assert VaultSettings(address="http://mine", role_id="r").with_environment({"VAULT_TOKEN": "tok"}).token == ""


def test_no_secret_in_errors_or_logs(bao: BaoServer, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    token = bao.client().auth.token.create(policies=["nothing"], ttl="60s")["auth"]["client_token"]
    messages = []
    for vault_settings, path in [
        (settings(bao), "secret/data/registry/127.0.0.1:5000"),
        (settings(bao, token=token), "secret/data/registry/127.0.0.1:5000"),
        (approle(bao, tmp_path, "leakcheck"), "kv1/registry"),
    ]:
        try:
            Vault(vault_settings).read(path)
        except VaultUnavailable as exc:
            messages.append(str(exc) + repr(exc.__cause__))
    text = "\n".join(messages) + caplog.text
    assert messages, "the denied reads should have failed"
    for secret in (SECRET_PASSWORD, token):
        assert secret not in text
