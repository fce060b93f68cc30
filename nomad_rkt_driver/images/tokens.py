"""Answering a registry's 401: Basic credentials, or a Bearer token fetched from the realm.

Tokens are cached per scope until shortly before they expire. Only the presence of
credentials is ever logged or put into messages.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import requests

from .auth import Credentials, parse_www_authenticate
from .registryerrors import RegistryAuthFailed, RegistryUnavailable

log = logging.getLogger(__name__)

TOKEN_DEFAULT_LIFETIME_S: Final = 60.0
TOKEN_EXPIRY_MARGIN_S: Final = 10.0
TOKEN_CLIENT_ID: Final = "nomad-rkt-driver"

HttpCall = Callable[..., requests.Response]


class TokenSource:
    """Authorization headers for one registry: answers challenges and caches the results."""

    def __init__(self, registry: str, credentials: Credentials | None, http: HttpCall) -> None:
        self.registry = registry
        self.credentials = credentials
        self._http = http
        self._lock = threading.Lock()
        self._basic: str | None = None
        self._bearer: dict[str, tuple[str, float]] = {}

    def cached_header(self, scope: str) -> str | None:
        """The Authorization value to send up front for ``scope``, if one is known and fresh."""
        with self._lock:
            if self._basic is not None:
                return self._basic
            cached = self._bearer.get(scope)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
        return None

    def answer(self, header: str, scope: str, what: str) -> str:
        """Turn the ``WWW-Authenticate`` value ``header`` into an Authorization value.

        Raises RegistryAuthFailed (no credentials for Basic, unknown scheme, token refused) and
        RegistryUnavailable (token server down or answering 5xx).
        """
        challenge = parse_www_authenticate(header)
        if challenge.scheme == "basic":
            creds = self.credentials
            if creds is None or not creds.username:
                raise RegistryAuthFailed(self._missing_message(what))
            pair = f"{creds.username}:{creds.password}".encode()
            value = "Basic " + base64.b64encode(pair).decode("ascii")
            with self._lock:
                self._basic = value
            return value
        if challenge.scheme == "bearer":
            realm = challenge.params.get("realm", "")
            if not realm.startswith(("https://", "http://")):
                raise RegistryAuthFailed(f"registry {self.registry} sent a Bearer challenge without a usable realm")
            token_scope = challenge.params.get("scope") or scope
            token, lifetime_s = self._fetch_token(realm, challenge.params.get("service", ""), token_scope, what)
            value = "Bearer " + token
            with self._lock:
                self._bearer[scope] = (value, time.monotonic() + max(0.0, lifetime_s - TOKEN_EXPIRY_MARGIN_S))
            return value
        raise RegistryAuthFailed(
            f"registry {self.registry} asked for {what} with an unsupported authentication scheme "
            f"{challenge.scheme or '(none)'!r}; only Basic and Bearer are supported"
        )

    def rejected_message(self, what: str) -> str:
        """The message for a 401 that came back even with our credentials or token."""
        if self.credentials is None:
            return self._missing_message(what)
        return (
            f"registry {self.registry} rejected the credentials for {what} (HTTP 401; {self.credentials!r}); "
            "check the username and password in the task's auth block or the plugin's auth config"
        )

    def _missing_message(self, what: str) -> str:
        return (
            f"registry {self.registry} requires credentials for {what} (HTTP 401) and none were found; "
            "set the task's auth { username password } or the plugin's auth config/helper"
        )

    def _fetch_token(self, realm: str, service: str, scope: str, what: str) -> tuple[str, float]:
        creds = self.credentials
        params = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        if creds is not None and creds.identity_token:
            form = {**params, "grant_type": "refresh_token", "refresh_token": creds.identity_token}
            resp = self._http(realm, method="POST", data={**form, "client_id": TOKEN_CLIENT_ID})
        else:
            auth = (creds.username, creds.password) if creds is not None and creds.username else None
            resp = self._http(realm, params=params, auth=auth)
        with resp:
            if resp.status_code in (401, 403):
                raise RegistryAuthFailed(
                    self.rejected_message(what).replace("HTTP 401", f"token server HTTP {resp.status_code}")
                )
            if resp.status_code != 200:
                raise RegistryUnavailable(
                    f"token server of registry {self.registry} answered HTTP {resp.status_code} for {what}",
                    recoverable=resp.status_code >= 500 or resp.status_code == 429,
                )
            return _parse_token(resp, self.registry)


def _parse_token(resp: requests.Response, registry: str) -> tuple[str, float]:
    try:
        body: Any = resp.json()
    except ValueError as exc:
        raise RegistryAuthFailed(f"token server of registry {registry} answered without JSON") from exc
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryAuthFailed(f"token server of registry {registry} answered without a token")
    lifetime = body.get("expires_in")
    lifetime_s = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else TOKEN_DEFAULT_LIFETIME_S
    log.debug("registry %s: got a bearer token valid for %.0f s", registry, lifetime_s)
    return token, lifetime_s
