"""The agent-side plugin configuration: ``plugin "rkt" { config { ... } }``.

Declared once here; the hclspec, the decoder, ``plugin.hcl`` and the docs derive from it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Final

from nomad_rkt_driver.config.durations import Duration
from nomad_rkt_driver.config.fields import block, blocks, setting
from nomad_rkt_driver.config.sizes import parse_size

WHERE: Final = 'plugin "rkt" config'
MIN_FINGERPRINT_PERIOD_S: Final = 1.0


def _binary(value: str) -> None:
    if not value.strip():
        raise ValueError("must name a program: a name looked up in PATH or an absolute path")
    if os.sep in value and not os.path.isabs(value):
        raise ValueError(f'"{value}" is a relative path; give an absolute path or a bare program name')


def _absolute_dirs(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError('must list at least one directory, e.g. ["/usr/lib/cni"]')
    for path in value:
        if not os.path.isabs(path):
            raise ValueError(f'"{path}" is not an absolute path; write e.g. "/usr/lib/cni"')


def _absolute_dir(value: str) -> None:
    if not os.path.isabs(value):
        raise ValueError(f'"{value}" is not an absolute path; write e.g. "/var/lib/nomad-rkt-driver"')


_CAP = re.compile(r"^(CAP_)?[A-Z_]+$|^ALL$")


def _caps(value: tuple[str, ...]) -> None:
    for cap in value:
        if not _CAP.match(cap.upper()):
            raise ValueError(f'"{cap}" is not a capability name; write e.g. "NET_ADMIN" or "CAP_NET_ADMIN"')


def _subnet(value: str) -> None:
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        raise ValueError(f'"{value}" is not an IPv4 subnet; write e.g. "172.16.28.0/24"') from None
    if network.num_addresses < 4:
        raise ValueError(f'"{value}" is too small for pods; use a /29 or larger, e.g. "172.16.28.0/24"')


def _subnet6(value: str) -> None:
    if not value:
        return
    try:
        network = ipaddress.IPv6Network(value)
    except ValueError:
        raise ValueError(f'"{value}" is not an IPv6 subnet; write e.g. "fd52:6b74::/64", or "" for no IPv6') from None
    if network.prefixlen > 120:
        raise ValueError(f'"{value}" is too small for pods; use a /120 or larger, e.g. "fd52:6b74::/64"')
    if network.is_link_local or network.is_multicast or network.is_loopback:
        raise ValueError(f'"{value}" is not usable for pods; use a unique local (fd00::/8) or global subnet')


def _cgroup_parent(value: str) -> None:
    if not value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f'"{value}" is not an absolute cgroup path; write e.g. "/nomad-rkt"')


IMAGE_TRANSPORTS: Final = ("docker", "appc")


def _transport(value: str) -> None:
    if value not in IMAGE_TRANSPORTS:
        raise ValueError(f'"{value}" is not an image transport; use "docker" or "appc"')


def _pull_activity(value: Duration) -> None:
    if value < 1:
        raise ValueError(f'must be at least 1s (got "{value.go_string()}"); the default is "2m"')


def _fingerprint_period(value: Duration) -> None:
    if value < MIN_FINGERPRINT_PERIOD_S:
        raise ValueError(f'must be at least 1s (got "{value.go_string()}"); the default is "30s"')


def _vault_path(value: str) -> None:
    if not value.strip("/") or " " in value:
        raise ValueError(f'"{value}" is not a Vault path; write e.g. "secret/data/registry/{{registry}}"')


@dataclass(frozen=True)
class VaultAppRole:
    """AppRole login: the role id, and a file holding the secret id."""

    role_id: str | None = setting(None, "AppRole role id.")
    secret_id_file: str | None = setting(None, "File holding the AppRole secret id.", validate=_absolute_dir)
    mount: str = setting("approle", "Where the AppRole auth method is mounted.")


@dataclass(frozen=True)
class VaultAuth:
    """How the driver logs in to Vault: a token, a token file, or AppRole (VAULT_TOKEN when none is set)."""

    token: str | None = setting(None, "A Vault token (prefer token_file).")
    token_file: str | None = setting(None, "File holding a Vault token.", validate=_absolute_dir)
    approle: VaultAppRole = block(VaultAppRole, "AppRole login.")


@dataclass(frozen=True)
class VaultConfig:
    """Where Vault is; unset address means VAULT_ADDR, and no Vault at all when that is empty too."""

    address: str | None = setting(None, "Vault address, e.g. https://vault.example.com:8200 (default: VAULT_ADDR).")
    namespace: str | None = setting(None, "Vault Enterprise / OpenBao namespace.")
    ca_cert: str | None = setting(None, "CA certificate file for Vault's TLS.", validate=_absolute_dir)
    tls_skip_verify: bool = setting(False, "Do not verify Vault's TLS certificate (testing only).")
    cache_ttl: Duration = setting(Duration(60.0), "How long secrets without a lease are cached.")
    auth: VaultAuth = block(VaultAuth, "How to log in.")


@dataclass(frozen=True)
class RegistryAuthConfig:
    """Registry credentials for every task, after the task's own."""

    config: str | None = setting(
        None, "A docker config.json with auths/credHelpers/credsStore.", validate=_absolute_dir
    )
    helper: str | None = setting(None, 'A docker credential helper name (runs "docker-credential-<helper> get").')
    vault_path: str | None = setting(
        None,
        'Vault path of registry credentials; "{registry}" becomes the '
        'registry host, e.g. "secret/data/registry/{registry}".',
        validate=_vault_path,
    )


@dataclass(frozen=True)
class VaultTrust:
    """Image-signing keys kept in Vault for an image name prefix."""

    prefix: str = setting(
        None, 'Image name prefix the key is trusted for, e.g. "registry.example.com/team".', required=True
    )
    vault_path: str = setting(
        None,
        'Vault path whose "key" field holds a PEM public key (cosign.pub) or an armored OpenPGP key.',
        required=True,
        validate=_vault_path,
    )


def _image_delay(value: Duration) -> None:
    if value < 0:
        raise ValueError(f'must not be negative (got "{value.go_string()}"); the default is "3m"')


def _image_store_max(value: str) -> None:
    if parse_size(value) <= 0:
        raise ValueError(f'"{value}" leaves no room for any image; give a size such as "10GiB", or leave it unset')


def _reconcile_period(value: Duration) -> None:
    if value < 1:
        raise ValueError(f'must be at least 1s (got "{value.go_string()}"); the default is "5m"')


def _creation_grace(value: Duration) -> None:
    if value < 1:
        raise ValueError(
            f'must be at least 1s (got "{value.go_string()}"); the default is "5m", and a grace shorter than a '
            "StartTask lets the reaper race it"
        )


@dataclass(frozen=True)
class DanglingPodsConfig:
    """The reconciler that removes pods no task claims (docker's dangling_containers)."""

    enabled: bool = setting(True, "Remove pods that no task of this plugin claims, and networks without a pod.")
    dry_run: bool = setting(False, "Only log what would be removed.")
    period: Duration = setting(
        Duration(300.0), "How often the reconciler runs (at least 1s).", validate=_reconcile_period
    )
    creation_grace: Duration = setting(
        Duration(300.0),
        "Nothing younger than this is removed, and nothing before the plugin has been up this long "
        "(Nomad recovers its tasks first).",
        validate=_creation_grace,
    )


@dataclass(frozen=True)
class GCConfig:
    """Garbage collection of images no task uses any more, and of dangling pods."""

    image: bool = setting(True, "Remove an image from the store once no task has used it for image_delay.")
    image_delay: Duration = setting(
        Duration(180.0), "How long an unused image is kept (a restart reuses it).", validate=_image_delay
    )
    dangling_pods: DanglingPodsConfig = block(DanglingPodsConfig, "Reconcile pods and networks no task claims.")
    image_store_max: str | None = setting(
        None,
        'Disk budget of the image store, e.g. "10GiB" or "500GB" (IEC or SI units): after a pull and after '
        "image GC, the least recently used images no task uses are removed until the store fits. "
        "Unset: no budget.",
        validate=_image_store_max,
    )

    @property
    def image_store_max_bytes(self) -> int | None:
        """The budget in bytes, or None without one."""
        return None if self.image_store_max is None else parse_size(self.image_store_max)


@dataclass(frozen=True)
class VolumesConfig:
    """Host paths that jobs name themselves (the task config's volumes)."""

    enabled: bool = setting(
        False,
        "Whether tasks may bind-mount any host path with volumes = [...]. Off, only relative paths "
        "(inside the allocation dir) are allowed; Nomad's own volume_mount / host_volume mounts always work.",
    )


def _pids_limit(value: int) -> None:
    if value < 0:
        raise ValueError(f"must be 0 (no limit) or a positive number of processes, got {value}")


@dataclass(frozen=True)
class PluginConfig:
    """Settings an operator gives the driver in the Nomad agent's configuration."""

    runtime: str = setting(
        "runc",
        "OCI runtime that runs the pods: a program name looked up in PATH, or an absolute path.",
        validate=_binary,
    )
    conmon: str = setting(
        "conmon",
        "Per-task monitor (Debian's conmon) that keeps a pod and its exit code while the plugin restarts.",
        validate=_binary,
    )
    cni_path: tuple[str, ...] = setting(
        ["/usr/lib/cni", "/opt/cni/bin"],
        "Directories searched, in order, for the CNI plugin binaries (ptp, bridge, host-local, portmap).",
        validate=_absolute_dirs,
    )
    cni_config_dir: str = setting(
        "/etc/nomad-rkt-driver/net.d",
        'Named CNI networks for jobs\' net = [...]: *.conflist (and *.conf) files keyed by their "name"; '
        'a network named "default" here replaces the builtin one.',
        validate=_absolute_dir,
    )
    default_network_subnet: str = setting(
        "172.16.28.0/24",
        'IPv4 subnet of the builtin "default" network (CNI ptp + host-local + ipMasq + portmap), as rkt\'s.',
        validate=_subnet,
    )
    default_network_subnet6: str = setting(
        "",
        'IPv6 subnet of the builtin "default" network, e.g. "fd52:6b74::/64"; set, it makes pods on it '
        "dual-stack (an IPv6 address beside the IPv4 one, IPv6 masquerade and port forwarding); "
        '"" (the default) means IPv4 only. Needs IPv6 enabled on the host and ip6tables.',
        validate=_subnet6,
    )
    data_dir: str = setting(
        "/var/lib/nomad-rkt-driver",
        "Where the driver keeps its image store and pod state; must be on a local filesystem.",
        validate=_absolute_dir,
    )
    fingerprint_period: Duration = setting(
        Duration(30.0),
        "How often the driver re-checks its health for Nomad (at least 1s).",
        validate=_fingerprint_period,
    )
    allow_privileged: bool = setting(False, "Whether jobs may set privileged = true.")
    allow_caps: tuple[str, ...] = setting(
        [
            "AUDIT_WRITE",
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "FSETID",
            "KILL",
            "MKNOD",
            "NET_BIND_SERVICE",
            "NET_RAW",
            "SETFCAP",
            "SETGID",
            "SETPCAP",
            "SETUID",
            "SYS_CHROOT",
        ],
        'Capabilities jobs may add with cap_add (docker\'s default set); "ALL" allows any.',
        validate=_caps,
    )
    cgroup_parent: str = setting(
        "/nomad-rkt",
        "Cgroup under which pods are placed when Nomad does not name one.",
        validate=_cgroup_parent,
    )
    volumes: VolumesConfig = block(VolumesConfig, "Host volumes named by jobs (off by default).")
    allow_devices: bool = setting(
        False,
        "Whether jobs may pass host devices with the task config's devices = [...] "
        "(devices Nomad's device plugins assign are always passed).",
    )
    pids_limit: int = setting(
        0,
        "Most processes a pod may have (pids cgroup): the default for tasks and the ceiling of their "
        "pids_limit; 0 means no limit.",
        validate=_pids_limit,
    )
    vault: VaultConfig = block(VaultConfig, "Vault (or OpenBao) for registry credentials and trust keys.")
    auth: RegistryAuthConfig = block(RegistryAuthConfig, "Registry credentials for every task.")
    trust: tuple[VaultTrust, ...] = blocks("Image-signing keys read from Vault, trusted for a name prefix.")
    gc: GCConfig = block(GCConfig, "Garbage collection.")
    trust_dir: str = setting(
        "/etc/nomad-rkt-driver/trustedkeys",
        "Trusted image-signing keys, rkt's layout: root.d/ and prefix.d/<image name prefix>/ holding OpenPGP keys "
        "named by fingerprint (ACI) and sigstore public keys as <name>.pub PEM files (Docker/OCI).",
        validate=_absolute_dir,
    )
    default_image_transport: str = setting(
        "docker",
        'What an image string without a transport means: "docker" (busybox:1 is docker://busybox:1, as in '
        "Nomad's docker driver) or \"appc\" (an appc name found by discovery, rkt's own default). Paths, URLs, "
        "sha512- IDs and names with ,label=value are recognised either way.",
        validate=_transport,
    )
    tls_ca_file: str | None = setting(
        None,
        "A PEM file of CA certificates trusted, in addition to the system CAs, for HTTPS to registries, "
        'ACI URLs and appc discovery (e.g. a private CA). insecure_options = ["tls"] still skips verification.',
        validate=_absolute_dir,
    )
    pull_activity_timeout: Duration = setting(
        Duration(120.0),
        "A pull fails (and Nomad retries) when no bytes arrived for this long.",
        validate=_pull_activity,
    )
