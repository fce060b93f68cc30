"""The job-side task configuration: ``task "x" { driver = "rkt" config { ... } }``.

Declared once here; the hclspec Nomad validates jobs with, the decoder and the docs derive
from it. Later issues grow this class; the mechanism stays.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from nomad_rkt_driver.config.durations import Duration
from nomad_rkt_driver.config.fields import block, setting

WHERE: Final = "rkt task config"

# rkt's --insecure-options values (rkt/flag/secflags.go), plus "none" which the old Nomad
# rkt driver accepted to force secure mode.
INSECURE_OPTIONS: Final = (
    "none",
    "image",
    "tls",
    "http",
    "pubkey",
    "capabilities",
    "paths",
    "seccomp",
    "all-fetch",
    "all-run",
    "all",
)
_NET_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LABEL: Final = re.compile(r"^[A-Za-z0-9_]+$")


def _image(value: str) -> None:
    if not value.strip():
        raise ValueError('must name an image, e.g. "docker://busybox:1.36" or "example.com/app:v1"')
    if value != value.strip():
        raise ValueError(f'"{value}" has leading or trailing spaces; remove them')


def _insecure_options(value: tuple[str, ...]) -> None:
    for option in value:
        if option not in INSECURE_OPTIONS:
            raise ValueError(
                f'"{option}" is not one of rkt\'s insecure options; valid values are: ' + ", ".join(INSECURE_OPTIONS)
            )
    if "none" in value and len(value) > 1:
        raise ValueError('"none" forces secure mode and cannot be combined with other values')


def _nets(value: tuple[str, ...]) -> None:
    for name in value:
        if not _NET_NAME.match(name):
            raise ValueError(
                f'"{name}" is not a network name; use "default", "host", "none" or a CNI network '
                "name made of letters, digits, '.', '_' and '-'"
            )
    if len(set(value)) != len(value):
        raise ValueError("lists a network more than once")
    for exclusive in ("host", "none"):
        if exclusive in value and len(value) > 1:
            raise ValueError(f'"{exclusive}" cannot be combined with other networks')


def _port_map(value: dict[str, str]) -> None:
    for label, port_name in value.items():
        if not _LABEL.match(label):
            raise ValueError(f'"{label}" is not a Nomad port label (letters, digits and _ only)')
        if not port_name.strip():
            raise ValueError(f'the image port name for "{label}" is empty; write e.g. {label} = "8080-tcp"')


def _port_labels(value: tuple[str, ...]) -> None:
    for label in value:
        if not _LABEL.match(label):
            raise ValueError(f'"{label}" is not a Nomad port label (letters, digits and _ only)')


def _dns_servers(value: tuple[str, ...]) -> None:
    if len(value) == 1 and value[0] in ("host", "none"):
        return
    for server in value:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ValueError(f'"{server}" is not an IP address; list IPs, or only "host" or only "none"') from None


def split_extra_host(entry: str) -> tuple[str, str]:
    """``"name:ip"`` → (name, ip); ValueError with the fix when malformed (IPv6 after the first ':')."""
    name, sep, ip_text = entry.partition(":")
    if not sep or not name or not ip_text:
        raise ValueError(f'"{entry}" is not "name:ip"; write e.g. "db.internal:10.0.0.5"')
    try:
        ipaddress.ip_address(ip_text)
    except ValueError:
        raise ValueError(f'"{entry}": "{ip_text}" is not an IP address') from None
    return name, ip_text


def _extra_hosts(value: tuple[str, ...]) -> None:
    for entry in value:
        split_extra_host(entry)


# The third part of a volume: docker's ro/rw and rkt's readOnly.
VOLUME_MODES: Final = {"rw": False, "ro": True, "readOnly": True}
VOLUME_FORM: Final = '"host_path:container_path[:ro]", e.g. "/srv/data:/data:ro"'


def split_volume(entry: str) -> tuple[str, str, bool]:
    """``"host:container[:ro|:rw|:readOnly]"`` → (host, container, readonly); ValueError with the fix.

    The host path may be relative (to the task dir); the container path must be absolute.
    """
    parts = entry.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f'"{entry}" is not {VOLUME_FORM}')
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in VOLUME_MODES:
        raise ValueError(f'"{entry}": "{mode}" is not a volume mode; use ro, rw or readOnly (rkt)')
    if not parts[1].startswith("/") or parts[1].strip("/") == "":
        raise ValueError(f'"{entry}": the container path "{parts[1]}" must be an absolute path other than "/"')
    return parts[0], parts[1], VOLUME_MODES[mode]


def _volumes(value: tuple[str, ...]) -> None:
    for entry in value:
        split_volume(entry)


DEVICE_KEYS: Final = ("host_path", "container_path", "cgroup_permissions")


def split_device(entry: dict[str, str]) -> tuple[str, str, str]:
    """A docker-style device map → (host_path, container_path, permissions); ValueError with the fix.

    ``container_path`` defaults to ``host_path``, ``cgroup_permissions`` to ``"rwm"``.
    """
    unknown = sorted(set(entry) - set(DEVICE_KEYS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a device key; use {', '.join(DEVICE_KEYS)}")
    host = entry.get("host_path", "")
    if not host.startswith("/"):
        raise ValueError(f'host_path "{host}" must be an absolute path on the host, e.g. "/dev/fuse"')
    container = entry.get("container_path") or host
    if not container.startswith("/"):
        raise ValueError(f'container_path "{container}" must be an absolute path in the pod')
    permissions = entry.get("cgroup_permissions") or "rwm"
    if set(permissions) - set("rwm"):
        raise ValueError(f'cgroup_permissions "{permissions}" must be letters of "rwm" (read, write, mknod)')
    return host, container, permissions


def _devices(value: tuple[dict[str, str], ...]) -> None:
    for i, entry in enumerate(value):
        try:
            split_device(entry)
        except ValueError as exc:
            raise ValueError(f"[{i}]: {exc}") from None


def _non_negative(value: int) -> None:
    if value < 0:
        raise ValueError(f"must be 0 (the default) or more, got {value}")


def _oom_score_adj(value: int) -> None:
    if not 0 <= value <= 1000:
        raise ValueError(
            f"must be between 0 and 1000 (a larger value makes the task the OOM killer's first pick), got {value}"
        )


def _caps(value: tuple[str, ...]) -> None:
    for cap in value:
        if not re.match(r"^(CAP_)?[A-Z_]+$|^ALL$", cap.upper()):
            raise ValueError(f'"{cap}" is not a capability name; write e.g. "NET_ADMIN" or "CAP_NET_ADMIN"')


def _absolute(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f'"{value}" is not an absolute path inside the image; write e.g. "/srv/app"')


def _hostname(value: str) -> None:
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$", value):
        raise ValueError(f'"{value}" is not a host name (letters, digits, "." and "-", at most 63)')


def _pull_timeout(value: Duration) -> None:
    if value < 1:
        raise ValueError(f'must be at least 1s (got "{value.go_string()}"); the default is "5m"')


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for the image's registry (basic auth)."""

    username: str | None = setting(None, "Registry user name.")
    password: str | None = setting(None, "Registry password or token.")
    vault_path: str | None = setting(
        None, "Vault path (KV v1 or v2) holding username/password, auth or identitytoken for this task's registry."
    )


@dataclass(frozen=True)
class TaskConfig:
    """What a job says about one rkt task."""

    image: str = setting(
        None,
        "The image to run: docker://, oci:, oci-archive:, docker-archive:, an ACI URL "
        "or file, or an appc name. A bare reference means docker://; write appc:NAME[:VERSION] for appc discovery.",
        required=True,
        validate=_image,
    )
    command: str | None = setting(None, "Replaces the image's entrypoint/exec (rkt's --exec).")
    args: tuple[str, ...] = setting([], "Arguments appended to the command (rkt semantics).")
    port_map: dict[str, str] = setting(
        {},
        'Maps a Nomad port label to a port the image names, rkt style: port_map { http = "8080-tcp" }.',
        validate=_port_map,
        block_attrs=True,
    )
    ports: tuple[str, ...] = setting(
        [], "Nomad port labels to forward to the pod, docker style.", validate=_port_labels
    )
    net: tuple[str, ...] = setting(
        ["default"], 'Networks to join: "default", "host", "none" or named CNI networks.', validate=_nets
    )
    dns_servers: tuple[str, ...] = setting(
        [],
        'DNS servers for the pod\'s /etc/resolv.conf: IPs, or only "host" (the host\'s file) or only "none" '
        "(an empty file). Default: Nomad's dns block, else DNS a CNI network returns, else the host's file.",
        validate=_dns_servers,
    )
    dns_search_domains: tuple[str, ...] = setting([], "Search domains for the pod's /etc/resolv.conf.")
    dns_options: tuple[str, ...] = setting([], 'resolv.conf options, e.g. ["ndots:2"].')
    extra_hosts: tuple[str, ...] = setting(
        [], 'Extra /etc/hosts entries "name:ip" (the pod\'s host name is always there).', validate=_extra_hosts
    )
    insecure_options: tuple[str, ...] = setting(
        [],
        "rkt's --insecure-options: security checks to switch off "
        "(image, tls, http, pubkey, capabilities, paths, seccomp, "
        "all-fetch, all-run, all).",
        validate=_insecure_options,
    )
    entrypoint: tuple[str, ...] = setting(
        [], "Replaces the image's Entrypoint (docker style); command and args then follow it."
    )
    working_dir: str | None = setting(
        None, "Working directory inside the pod (default: the image's).", validate=_absolute
    )
    hostname: str | None = setting(None, "The pod's host name (default: the task name).", validate=_hostname)
    readonly_rootfs: bool = setting(False, "Mount the image's root filesystem read-only.")
    cap_add: tuple[str, ...] = setting([], "Capabilities to add (must be in the plugin's allow_caps).", validate=_caps)
    cap_drop: tuple[str, ...] = setting([], 'Capabilities to drop ("ALL" drops every one).', validate=_caps)
    privileged: bool = setting(False, "All capabilities, no seccomp and no masked paths (the plugin must allow it).")
    volumes: tuple[str, ...] = setting(
        [],
        'Host paths to bind-mount, "host_path:container_path[:ro]" (rkt\'s ":readOnly" and docker\'s ":rw" too). '
        "A relative host path is inside the task dir and always allowed; any other path needs the plugin's "
        "volumes { enabled = true }.",
        validate=_volumes,
    )
    devices: tuple[dict[str, str], ...] = setting(
        [],
        'Host devices, docker style: [{ host_path = "/dev/fuse", container_path = "/dev/fuse", '
        'cgroup_permissions = "rwm" }] (container_path defaults to host_path, permissions to "rwm"); '
        "needs the plugin's allow_devices.",
        validate=_devices,
    )
    pids_limit: int = setting(
        0, "Most processes the pod may have; 0 means the plugin's pids_limit (none by default).", validate=_non_negative
    )
    oom_score_adj: int = setting(
        0,
        "The task's oom_score_adj, 0-1000 (0: Nomad's value, else 0); tasks never inherit the agent's own value.",
        validate=_oom_score_adj,
    )
    no_overlay: bool = setting(False, "Copy the image layers into the pod instead of mounting overlayfs.")
    force_pull: bool = setting(
        False,
        "Ask the registry again even if the image is stored: fetch its manifests (and, unless insecure_options "
        "has image, its signature) again; stored blobs are reused.",
    )
    image_pull_timeout: Duration = setting(
        Duration(300.0), "How long pulling the image may take in all.", validate=_pull_timeout
    )
    auth: RegistryAuth = block(RegistryAuth, "Registry credentials for this task's image.")
    trust_prefix: str | None = setting(
        None,
        "Only images named under this prefix may run (an ACI's manifest name, a Docker image's registry/repository). "
        "It never trusts a key by itself, unlike the old driver's rkt trust: trust keys with "
        "`nomad-rkt-driver trust add --prefix` or Vault trust blocks.",
    )
