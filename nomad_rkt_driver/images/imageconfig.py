"""An OCI / Docker image config → the defaults a pod takes from its image (rkt.md §2.2).

* ``Entrypoint`` and ``Cmd`` are kept apart (rkt runs ``Entrypoint ++ Cmd ++ args``).
* ``Env`` entries split at the first ``=``; entries without ``=`` are dropped (docker2aci);
  a later entry for the same name wins.
* ``WorkingDir`` defaults to ``/`` (the ACI default).
* ``User`` splits as docker2aci did: ``""`` → user ``0``, group ``0``; ``u`` → user ``u``,
  group ``u`` (the same string); ``u:g`` → ``u``, ``g``.
* ``ExposedPorts`` become rkt named ports: for key ``K`` the protocol is what follows ``/``
  (``tcp`` if none), the port what precedes it, and the name ``SanitizeACName(K)`` — so
  ``80/tcp`` → ``80-tcp``, ``53/udp`` → ``53-udp``, ``8080`` → ``8080`` (tcp).
* Labels ``io.nomad.rkt.port.<name>=<port>/<proto>`` (protocol optional, tcp by default) add
  ports with real names, e.g. ``io.nomad.rkt.port.http=8080/tcp`` gives a port ``http`` that a
  job's ``port_map`` can name, as an ACI's ``app.ports`` could. A label port whose name equals
  an ExposedPorts one must agree with it.
* Ports are sorted by name.

Anything malformed raises :class:`InvalidImageConfig` naming the config digest and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images.reference import sanitize_ac_name

PORT_LABEL_PREFIX = "io.nomad.rkt.port."
PROTOCOLS = ("tcp", "udp", "sctp")
_AC_NAME_RE = re.compile(r"^[a-z0-9]+(?:-+[a-z0-9]+)*$")
_MAX_PORT = 65535


class InvalidImageConfig(InvalidArgument):
    """The image config blob does not parse or has a malformed field."""

    def __init__(self, digest: str, problem: str) -> None:
        self.digest = digest
        super().__init__(f"image config {digest}: {problem}")


@dataclass(frozen=True)
class NamedPort:
    """A port the image declares, under the name ``port_map`` uses."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class ImageDefaults:
    """What a pod takes from its image unless the task overrides it."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, hash=False)
    working_dir: str = "/"
    user: str = "0"
    group: str = "0"
    stop_signal: str | None = None
    ports: tuple[NamedPort, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    # From an ACI's app.isolators and app.supplementaryGIDs (acimanifest.py); OCI images set none.
    caps_retain: tuple[str, ...] | None = None  # os/linux/capabilities-retain-set: the pod's base set
    caps_remove: tuple[str, ...] = ()  # os/linux/capabilities-remove-set: taken from the default set
    no_new_privileges: bool | None = None  # os/linux/no-new-privileges (None: not set)
    oom_score_adj: int | None = None  # os/linux/oom-score-adj
    supplementary_gids: tuple[int, ...] = ()
    resource_isolators: tuple[str, ...] = ()  # resource/cpu, resource/memory, os/linux/cpu-shares: Nomad's win
    ignored_isolators: tuple[str, ...] = ()  # accepted, not applied (seccomp sets, selinux, apparmor, ...)

    @property
    def exec(self) -> tuple[str, ...]:
        """``Entrypoint ++ Cmd``: the ACI ``app.exec`` rkt builds from a Docker image."""
        return self.entrypoint + self.cmd

    def port(self, name: str) -> NamedPort | None:
        """The port called ``name``, if the image declares one."""
        return next((p for p in self.ports if p.name == name), None)


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the driver uses."""

    defaults: ImageDefaults
    os: str
    architecture: str
    diff_ids: tuple[str, ...]


def parse_image_config(data: bytes, digest: str) -> ImageConfig:
    """Parse an image config blob (OCI or Docker, they share the fields used here).

    Raises:
        InvalidImageConfig: not JSON, not an object, or a field of the wrong type or form.
    """
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidImageConfig(digest, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidImageConfig(digest, "not a JSON object")
    section = _get(raw, "config", dict, digest) or {}
    rootfs = _get(raw, "rootfs", dict, digest) or {}
    diff_ids = _strings(rootfs.get("diff_ids"), "rootfs.diff_ids", digest)
    return ImageConfig(
        defaults=image_defaults_from(section, digest),
        os=_get(raw, "os", str, digest) or "",
        architecture=_get(raw, "architecture", str, digest) or "",
        diff_ids=diff_ids,
    )


def image_defaults(data: bytes, digest: str) -> ImageDefaults:
    """The pod defaults in an image config blob (see :func:`parse_image_config`)."""
    return parse_image_config(data, digest).defaults


def image_defaults_from(section: dict[str, Any], digest: str) -> ImageDefaults:
    """The pod defaults in a parsed config's ``config`` section."""
    labels = _string_map(_get(section, "Labels", dict, digest, "config."), "config.Labels", digest)
    user, group = split_user(_get(section, "User", str, digest, "config.") or "")
    return ImageDefaults(
        entrypoint=_strings(section.get("Entrypoint"), "config.Entrypoint", digest),
        cmd=_strings(section.get("Cmd"), "config.Cmd", digest),
        env=_env(_strings(section.get("Env"), "config.Env", digest)),
        working_dir=_get(section, "WorkingDir", str, digest, "config.") or "/",
        user=user,
        group=group,
        stop_signal=_get(section, "StopSignal", str, digest, "config.") or None,
        ports=named_ports(_get(section, "ExposedPorts", dict, digest, "config.") or {}, labels, digest),
        labels=labels,
    )


def split_user(user: str) -> tuple[str, str]:
    """docker2aci's split of a Docker ``User``: ``""`` → (0, 0); ``u`` → (u, u); ``u:g`` → (u, g)."""
    if not user:
        return "0", "0"
    name, colon, group = user.partition(":")
    return (name, group) if colon else (name, name)


def named_ports(exposed: dict[str, Any], labels: dict[str, str], digest: str) -> tuple[NamedPort, ...]:
    """rkt's named ports for ``ExposedPorts`` keys plus the ``io.nomad.rkt.port.*`` labels, sorted by name.

    Raises:
        InvalidImageConfig: a bad port or protocol, a bad label name, or two ports with one name.
    """
    ports: dict[str, NamedPort] = {}
    for key in exposed:
        port, protocol = _port_spec(key, f"config.ExposedPorts key {key!r}", digest)
        name = sanitize_ac_name(key)
        ports[name] = NamedPort(name, port, protocol)
    for label, value in labels.items():
        if not label.startswith(PORT_LABEL_PREFIX):
            continue
        name = label[len(PORT_LABEL_PREFIX) :]
        where = f"label {label!r}"
        if not _AC_NAME_RE.match(name):
            raise InvalidImageConfig(digest, f"{where}: {name!r} is not a port name (lowercase a-z, 0-9 and '-')")
        port, protocol = _port_spec(value, where, digest)
        named = NamedPort(name, port, protocol)
        if ports.setdefault(name, named) != named:
            raise InvalidImageConfig(
                digest, f"{where}: port {name!r} is already {ports[name].port}/{ports[name].protocol}"
            )
    return tuple(sorted(ports.values(), key=lambda p: p.name))


def _port_spec(text: str, where: str, digest: str) -> tuple[int, str]:
    number, slash, protocol = text.partition("/")
    protocol = protocol.lower() if slash else "tcp"
    if not number.isdigit() or not 1 <= int(number) <= _MAX_PORT:
        raise InvalidImageConfig(digest, f"{where}: {number!r} is not a port number (1-{_MAX_PORT})")
    if protocol not in PROTOCOLS:
        raise InvalidImageConfig(digest, f"{where}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    return int(number), protocol


def _env(entries: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries:
        name, eq, value = entry.partition("=")
        if eq and name:
            env[name] = value
    return env


def _get(obj: dict[str, Any], key: str, kind: type, digest: str, prefix: str = "") -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise InvalidImageConfig(digest, f"{prefix}{key} must be a JSON {_JSON_NAMES[kind]}")
    return value


def _strings(value: object, where: str, digest: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidImageConfig(digest, f"{where} must be a list of strings")
    return tuple(value)


def _string_map(value: dict[str, Any] | None, where: str, digest: str) -> dict[str, str]:
    if not value:
        return {}
    if not all(isinstance(v, str) for v in value.values()):
        raise InvalidImageConfig(digest, f"{where} values must be strings")
    return dict(value)


_JSON_NAMES: dict[type, str] = {dict: "object", str: "string", list: "array"}
