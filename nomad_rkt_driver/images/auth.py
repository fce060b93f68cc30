"""Registry credentials: where they come from and how a 401 challenge is read.

Resolution order for one registry host: explicit task credentials, then a docker
``config.json`` (``auths`` entries, then its ``credHelpers``/``credsStore``), then a plugin-wide
credential helper ``docker-credential-<name>``, then anonymous. Secrets never reach a log or a
repr: only whether they are present.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.errors import FailedPrecondition, InvalidConfig

log = logging.getLogger(__name__)

HELPER_TIMEOUT_S: Final = 10.0
DOCKER_HUB_HOSTS: Final = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io"})
DOCKER_HUB_CONFIG_KEY: Final = "https://index.docker.io/v1/"
_HELPER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_CHALLENGE_PARAM_RE: Final = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    """A username/password pair, or an OAuth2 identity (refresh) token from ``docker login``."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return (
            f"Credentials(username={bool(self.username)}, password={bool(self.password)}, "
            f"identity_token={bool(self.identity_token)})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge: scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str]


class CredentialHelperFailed(FailedPrecondition):
    """A docker credential helper could not be run or answered garbage."""


def parse_www_authenticate(header: str) -> Challenge:
    """Parse ``Bearer realm="…",service="…",scope="…"`` or ``Basic realm="…"``.

    Unknown or empty headers give a Challenge with an empty scheme; never raises.
    """
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _CHALLENGE_PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            break
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pos = match.end()
    return Challenge(scheme.lower(), params)


def resolve_credentials(
    registry: str,
    *,
    explicit: Credentials | None = None,
    config_path: str | Path | None = None,
    helper: str | None = None,
) -> Credentials | None:
    """Find credentials for ``registry`` (``host[:port]``); None means anonymous.

    Raises InvalidConfig when ``config_path`` is unreadable or malformed, CredentialHelperFailed
    when a helper cannot run. A helper that has no entry for the host is not an error.
    """
    if explicit is not None and (explicit.username or explicit.identity_token):
        log.debug("registry %s: using task credentials", registry)
        return explicit
    if config_path:
        found = credentials_from_config(load_docker_config(config_path), registry, source=str(config_path))
        if found is not None:
            return found
    if helper:
        return run_credential_helper(helper, registry)
    return None


def load_docker_config(path: str | Path) -> dict[str, Any]:
    """Read a docker ``config.json``; InvalidConfig naming the file when it cannot be read or parsed."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidConfig("plugin config", "auth.config", f"cannot read {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidConfig("plugin config", "auth.config", f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidConfig("plugin config", "auth.config", f"{path} must hold a JSON object")
    return doc


def credentials_from_config(config: dict[str, Any], registry: str, *, source: str) -> Credentials | None:
    """Credentials for ``registry`` from a parsed docker config (``auths``, ``credHelpers``, ``credsStore``)."""
    keys = _config_keys(registry)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for helper_key, helper in helpers.items():
            if _normalise_host(helper_key) in keys and isinstance(helper, str) and helper:
                return run_credential_helper(helper, registry)
    auths = config.get("auths") or {}
    if isinstance(auths, dict):
        for entry_key, entry in auths.items():
            if _normalise_host(entry_key) in keys and isinstance(entry, dict):
                found = _from_auth_entry(entry, f"{source} auths[{entry_key!r}]")
                if found is not None:
                    log.debug("registry %s: credentials from %s", registry, source)
                    return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return run_credential_helper(store, registry)
    return None


def run_credential_helper(name: str, registry: str) -> Credentials | None:
    """Run ``docker-credential-<name> get`` with the registry host on stdin; None when it knows no entry."""
    if not _HELPER_NAME_RE.match(name):
        raise InvalidConfig("plugin config", "auth.helper", f"{name!r} is not a credential helper name (like 'pass')")
    program = f"docker-credential-{name}"
    server = DOCKER_HUB_CONFIG_KEY if registry in DOCKER_HUB_HOSTS else registry
    try:
        proc = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=HELPER_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise CredentialHelperFailed(
            f"credential helper {program} is not on PATH; install it or fix auth.helper"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CredentialHelperFailed(
            f"credential helper {program} did not answer within {HELPER_TIMEOUT_S:.0f} s", recoverable=True
        ) from exc
    if proc.returncode != 0:
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise CredentialHelperFailed(
            f"credential helper {program} failed for {registry} (exit {proc.returncode}): {proc.stderr.strip()[:200]}"
        )
    return _parse_helper_output(proc.stdout, program)


def _parse_helper_output(stdout: str, program: str) -> Credentials | None:
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise CredentialHelperFailed(f"credential helper {program} printed no JSON object: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("Secret"), str):
        raise CredentialHelperFailed(f"credential helper {program} answered without a string 'Secret' field")
    username = doc.get("Username")
    if username == "<token>":
        return Credentials(identity_token=doc["Secret"])
    return Credentials(username=username if isinstance(username, str) else "", password=doc["Secret"])


def _from_auth_entry(entry: dict[str, Any], where: str) -> Credentials | None:
    if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
        return Credentials(identity_token=entry["identitytoken"])
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidConfig("plugin config", "auth.config", f"{where}: 'auth' is not base64 user:password") from exc
        if not sep:
            raise InvalidConfig("plugin config", "auth.config", f"{where}: 'auth' decodes without a ':' separator")
        return Credentials(user, password)
    if isinstance(entry.get("username"), str) and entry["username"]:
        secret = entry.get("password")
        return Credentials(entry["username"], secret if isinstance(secret, str) else "")
    return None


def _normalise_host(key: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000``; Docker Hub aliases → ``registry-1.docker.io``."""
    host = re.sub(r"^[a-z]+://", "", key.strip().lower()).split("/")[0]
    return "registry-1.docker.io" if host in DOCKER_HUB_HOSTS else host


def _config_keys(registry: str) -> set[str]:
    return {_normalise_host(registry)}
