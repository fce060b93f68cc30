"""Reading secrets from Vault (or OpenBao) for the driver: registry credentials and trust keys.

The client logs in with a token, a token file, or AppRole; renews its token before it expires
and logs in again with AppRole when renewal is impossible; caches each secret for its lease (or
``cache_ttl_s`` when Vault gives none). Every failure is a *recoverable* error, so Nomad's
restart policy retries the task, and its message names the address, the path and the cause —
never a token or a secret value.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import hvac
import requests
from hvac import exceptions as hvac_errors

from nomad_rkt_driver.errors import FailedPrecondition, InvalidConfig

log = logging.getLogger(__name__)
RENEW_MARGIN_FRACTION: Final = 1 / 3  # renew when a third of the token's TTL is left
REQUEST_TIMEOUT_S: Final = 10.0


class VaultUnavailable(FailedPrecondition):
    """Vault could not give the secret now (sealed, down, denied, missing); Nomad may retry."""

    recoverable = True


@dataclass(frozen=True)
class VaultSettings:
    """How to reach and log in to Vault. Empty strings mean "not set"."""

    address: str = ""
    namespace: str = ""
    ca_cert: str = ""
    tls_skip_verify: bool = False
    token: str = ""
    token_file: str = ""
    role_id: str = ""
    secret_id_file: str = ""
    approle_mount: str = "approle"
    cache_ttl_s: float = 60.0

    def with_environment(self, env: dict[str, str] | os._Environ[str] = os.environ) -> VaultSettings:
        """Fill address and token from VAULT_ADDR / VAULT_TOKEN when the config leaves them unset."""
        from dataclasses import replace

        token = self.token
        if not (token or self.token_file or self.role_id):
            token = env.get("VAULT_TOKEN", "")
        return replace(self, address=self.address or env.get("VAULT_ADDR", ""), token=token)


@dataclass
class _Cached:
    value: dict[str, Any]
    expires_at: float


class Vault:
    """A logged-in Vault client with a secret cache; safe to share between threads."""

    def __init__(self, settings: VaultSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not settings.address:
            raise InvalidConfig(
                'plugin "rkt" config',
                "vault.address",
                'is not set and VAULT_ADDR is empty; set address = "https://vault.example.com:8200"',
            )
        if not (settings.token or settings.token_file or settings.role_id):
            raise InvalidConfig(
                'plugin "rkt" config',
                "vault.auth",
                "has no token, token_file or approle (and VAULT_TOKEN is empty); configure one way to log in",
            )
        if settings.role_id and not settings.secret_id_file:
            raise InvalidConfig(
                'plugin "rkt" config',
                "vault.auth.approle.secret_id_file",
                "is required with role_id; point it at a file holding the AppRole secret id",
            )
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._token_expires_at: float | None = None
        self._token_ttl_s = 0.0
        self._token_renewable = False
        verify: bool | str = settings.ca_cert or not settings.tls_skip_verify
        self._client = hvac.Client(
            url=settings.address, namespace=settings.namespace or None, verify=verify, timeout=REQUEST_TIMEOUT_S
        )

    # -- public -------------------------------------------------------------------------

    def read(self, path: str) -> dict[str, Any]:
        """The key/value data at ``path`` (KV v2 ``mount/data/...`` or KV v1), from cache when fresh."""
        path = path.strip("/")
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached.expires_at > self._clock():
                return cached.value
            self._ensure_token(path)
            response = self._call(path, lambda: self._client.read(path))
            if response is None:
                raise VaultUnavailable(
                    f"Vault at {self._settings.address} has no secret at {path!r}: write it there or fix the path"
                )
            value, lease_s = _unwrap(response)
            ttl_s = lease_s if lease_s > 0 else self._settings.cache_ttl_s
            self._cache[path] = _Cached(value, self._clock() + ttl_s)
            log.debug("vault secret read", extra={"path": path, "keys": len(value), "cache_s": ttl_s})
            return value

    def forget(self, path: str | None = None) -> None:
        """Drop cached secrets (one path, or all), e.g. after a registry refused credentials."""
        with self._lock:
            if path is None:
                self._cache.clear()
            else:
                self._cache.pop(path.strip("/"), None)

    # -- token lifecycle ----------------------------------------------------------------

    def _ensure_token(self, path: str) -> None:
        now = self._clock()
        if self._token_expires_at is None:
            self._login(path)
            return
        left = self._token_expires_at - now
        if self._token_ttl_s <= 0 or left > self._token_ttl_s * RENEW_MARGIN_FRACTION:
            return  # a root/periodic token without expiry, or plenty of time left
        if self._token_renewable:
            try:
                self._client.auth.token.renew_self()
                self._learn_token(path)
                if self._token_expires_at is not None and self._token_expires_at - self._clock() > left:
                    log.debug("vault token renewed")
                    return
            except (hvac_errors.VaultError, requests.RequestException):
                log.info("vault token renewal failed; logging in again")
        if self._settings.role_id:
            self._login(path)

    def _login(self, path: str) -> None:
        settings = self._settings
        if settings.role_id:
            secret_id = _read_file(settings.secret_id_file, "vault.auth.approle.secret_id_file")
            self._call(
                path,
                lambda: self._client.auth.approle.login(
                    role_id=settings.role_id, secret_id=secret_id, mount_point=settings.approle_mount
                ),
            )
            log.info("vault login with AppRole", extra={"mount": settings.approle_mount})
        else:
            token = settings.token or _read_file(settings.token_file, "vault.auth.token_file")
            self._client.token = token
        self._learn_token(path)

    def _learn_token(self, path: str) -> None:
        info = self._call(path, lambda: self._client.auth.token.lookup_self())
        data = info.get("data") or {}
        ttl_s = float(data.get("ttl") or 0)
        self._token_ttl_s = ttl_s
        self._token_renewable = bool(data.get("renewable"))
        self._token_expires_at = self._clock() + ttl_s if ttl_s > 0 else float("inf")

    # -- errors -------------------------------------------------------------------------

    def _call(self, path: str, request: Callable[[], Any]) -> Any:
        """Run one Vault request, turning every failure into a message about ``path``."""
        where = f"Vault at {self._settings.address}"
        try:
            return request()
        except hvac_errors.VaultDown as exc:
            raise VaultUnavailable(f"{where} is sealed or unavailable while reading {path!r}: unseal it") from exc
        except hvac_errors.Forbidden as exc:
            raise VaultUnavailable(
                f"{where} denied access to {path!r} (403): the token's policy must allow read on that path"
            ) from exc
        except hvac_errors.InvalidPath as exc:
            raise VaultUnavailable(f"{where} has no secret at {path!r}: write it there or fix the path") from exc
        except hvac_errors.Unauthorized as exc:
            raise VaultUnavailable(
                f"{where} refused the driver's credentials while reading {path!r} (401): "
                "check the token or AppRole settings"
            ) from exc
        except hvac_errors.VaultError as exc:
            raise VaultUnavailable(f"{where} failed reading {path!r}: {type(exc).__name__}") from exc
        except requests.exceptions.SSLError as exc:
            raise VaultUnavailable(
                f"{where}: TLS verification failed reading {path!r}; set vault ca_cert to "
                "the CA that signed its certificate"
            ) from exc
        except requests.RequestException as exc:
            raise VaultUnavailable(f"{where} is unreachable while reading {path!r} ({type(exc).__name__})") from exc


def _unwrap(response: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """KV v2 answers {data: {data, metadata}}; KV v1 answers {data} with a lease."""
    data = response.get("data") or {}
    lease_s = float(response.get("lease_duration") or 0)
    inner, metadata = data.get("data"), data.get("metadata")
    if isinstance(inner, dict) and isinstance(metadata, dict) and "version" in metadata:
        return inner, lease_s
    return dict(data), lease_s


def _read_file(path: str, attribute: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidConfig('plugin "rkt" config', attribute, f"cannot read {path} ({exc.strerror})") from exc
