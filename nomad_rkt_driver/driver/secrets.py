"""Secrets for image pulls: registry credentials and image-signing keys, from the job, from Vault,
or from the host, in one documented order.

Registry credentials, first match wins: the task's ``auth { username password }`` → the task's
``auth { vault_path }`` → the plugin's ``auth { vault_path }`` (``{registry}`` replaced by the
registry host) → the plugin's docker ``config`` / credential ``helper`` → anonymous. A Vault secret
may hold ``username``/``password``, ``auth`` (base64 ``user:password``) or ``identitytoken``.
Secret values never reach logs, task events, errors or driver_state.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from pathlib import Path
from typing import Any

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.errors import FailedPrecondition
from nomad_rkt_driver.images.auth import Credentials, resolve_credentials
from nomad_rkt_driver.images.sigstore import load_public_key
from nomad_rkt_driver.images.trust import SigstoreTrust, TrustedKey, name_prefixes
from nomad_rkt_driver.secrets.vault import Vault, VaultSettings

log = logging.getLogger(__name__)
_vaults: dict[VaultSettings, Vault] = {}
_vaults_lock = threading.Lock()


def vault_for(plugin: PluginConfig) -> Vault:
    """The shared Vault client for the plugin's vault {} block (VAULT_ADDR / VAULT_TOKEN as defaults)."""
    v = plugin.vault
    settings = VaultSettings(
        address=v.address or "",
        namespace=v.namespace or "",
        ca_cert=v.ca_cert or "",
        tls_skip_verify=v.tls_skip_verify,
        token=v.auth.token or "",
        token_file=v.auth.token_file or "",
        role_id=v.auth.approle.role_id or "",
        secret_id_file=v.auth.approle.secret_id_file or "",
        approle_mount=v.auth.approle.mount,
        cache_ttl_s=float(v.cache_ttl),
    ).with_environment()
    with _vaults_lock:
        if settings not in _vaults:
            _vaults[settings] = Vault(settings)
        return _vaults[settings]


def _credentials_from_secret(data: dict[str, Any], path: str) -> Credentials:
    if data.get("username"):
        return Credentials(username=str(data["username"]), password=str(data.get("password", "")))
    if data.get("auth"):
        try:
            user, _, password = base64.b64decode(str(data["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise FailedPrecondition(
                f"Vault secret {path!r}: its auth field is not base64 user:password", recoverable=True
            ) from exc
        return Credentials(username=user, password=password)
    if data.get("identitytoken"):
        return Credentials(identity_token=str(data["identitytoken"]))
    raise FailedPrecondition(
        f"Vault secret {path!r} has none of username/password, auth or identitytoken; "
        "write the registry credentials there",
        recoverable=True,
    )


def registry_credentials(registry: str, task: TaskConfig, plugin: PluginConfig) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]) in the order of the module docstring."""
    if task.auth.username:
        return Credentials(username=task.auth.username, password=task.auth.password or "")
    for path in (task.auth.vault_path, plugin.auth.vault_path):
        if path:
            resolved = path.replace("{registry}", registry)
            log.debug("registry credentials from vault", extra={"registry": registry, "path": resolved})
            return _credentials_from_secret(vault_for(plugin).read(resolved), resolved)
    return resolve_credentials(registry, config_path=plugin.auth.config, helper=plugin.auth.helper)


class VaultBackedTrust(SigstoreTrust):
    """The trust directory's keys plus the keys the plugin's trust {} blocks keep in Vault."""

    def __init__(self, plugin: PluginConfig) -> None:
        super().__init__(Path(plugin.trust_dir))
        self._plugin = plugin

    def keys_for(self, name: str) -> list[TrustedKey]:
        keys = super().keys_for(name)
        prefixes = set(name_prefixes(name))
        for trust in self._plugin.trust:
            if trust.prefix.strip("/") not in prefixes:
                continue
            secret = vault_for(self._plugin).read(trust.vault_path)
            pem = str(secret.get("key") or secret.get("public_key") or "").encode()
            if b"BEGIN PUBLIC KEY" not in pem:
                log.info(
                    "vault trust key is not a PEM public key; skipped for registry images",
                    extra={"path": trust.vault_path},
                )
                continue
            key = load_public_key(pem, source=f"Vault key {trust.vault_path}")
            keys.append(TrustedKey(key, Path(f"vault:{trust.vault_path}"), trust.prefix.strip("/")))
        return keys
