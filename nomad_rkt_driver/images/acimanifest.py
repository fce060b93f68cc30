"""The appc image manifest of an ACI (rkt.md §2.3, §2.4): validated, and turned into pod defaults.

Checked, each error naming the manifest field: ``acKind`` (``ImageManifest``), ``acVersion``
(semver), ``name`` (an AC Identifier), ``labels`` (unique AC Identifiers, not ``name``, and a
valid ``os``/``arch`` pair), and in ``app``: ``exec``, ``user``/``group`` (required; names or
numbers), ``workingDirectory`` (absolute), ``environment``, ``ports`` (AC Names, tcp/udp,
1-65535, ``count`` >= 1 within range), ``mountPoints``, ``supplementaryGIDs``, ``isolators`` and
``eventHandlers``. ``dependencies`` and ``eventHandlers`` are refused as not supported, and so is
a user or group given as an absolute path (rkt's "owner of this file" form).

Defaults a pod takes from the manifest: ``exec`` (kept whole as the entrypoint), environment,
working directory, user and group, and the ports **under their own names**, so a job's
``port_map { http = "http" }`` maps onto an ACI port named ``http``. Labels become the image
labels. Supplementary GIDs, and these isolators (their values checked), go to the pod too, where
the job's own settings win (driver/podspec.py decides):

* ``os/linux/capabilities-retain-set`` / ``-remove-set`` (``{"set": ["CAP_..."]}``, not both);
* ``os/linux/no-new-privileges`` (``true``/``false``);
* ``os/linux/oom-score-adj`` (an integer, -1000..1000).

``resource/cpu``, ``resource/memory`` and ``os/linux/cpu-shares`` are accepted and left to Nomad's
resources (:attr:`ImageDefaults.resource_isolators`); any other name (seccomp sets, SELinux,
AppArmor, ``resource/block-*``, ``resource/network-bandwidth``, unknown ones) is accepted and not
applied (:attr:`ImageDefaults.ignored_isolators`). Mount points are validated and not applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images.imageconfig import ImageDefaults, NamedPort

MANIFEST_MAX_BYTES: Final = 1 << 20
AC_IDENTIFIER: Final = re.compile(r"^[a-z0-9]+(?:[-._~/][a-z0-9]+)*$")
AC_NAME: Final = re.compile(r"^[a-z0-9]+(?:-+[a-z0-9]+)*$")
_SEMVER: Final = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_ENV_NAME: Final = re.compile(r"^[^=\x00]+$")
#: appc's valid os/arch pairs (schema/types/labels.go).
VALID_OS_ARCH: Final = {
    "linux": ("amd64", "i386", "aarch64", "aarch64_be", "armv6l", "armv7l", "armv7b", "ppc64", "ppc64le", "s390x"),
    "freebsd": ("amd64", "i386", "arm"),
    "darwin": ("x86_64", "i386"),
}
PORT_PROTOCOLS: Final = ("tcp", "udp")
_MAX_PORT: Final = 65535
_CAP_NAME: Final = re.compile(r"^CAP_[A-Z0-9_]+$")
CAPS_RETAIN: Final = "os/linux/capabilities-retain-set"
CAPS_REMOVE: Final = "os/linux/capabilities-remove-set"
NO_NEW_PRIVILEGES: Final = "os/linux/no-new-privileges"
OOM_SCORE_ADJ: Final = "os/linux/oom-score-adj"
#: Isolators Nomad's own resources replace (Nomad schedules by them).
RESOURCE_ISOLATORS: Final = ("resource/cpu", "resource/memory", "os/linux/cpu-shares")
_OOM_RANGE: Final = 1000


class InvalidACIManifest(InvalidArgument):
    """The manifest of an ACI is malformed; the message names the image, the field and the rule."""

    def __init__(self, where: str, field_name: str, problem: str) -> None:
        self.field = field_name
        super().__init__(f"ACI {where}: manifest field {field_name}: {problem}")


@dataclass(frozen=True)
class ACIPort:
    name: str
    protocol: str
    port: int
    count: int = 1


@dataclass(frozen=True)
class ACIIsolators:
    """``app.isolators``, sorted into what the pod takes and what it leaves."""

    caps_retain: tuple[str, ...] | None = None
    caps_remove: tuple[str, ...] = ()
    no_new_privileges: bool | None = None
    oom_score_adj: int | None = None
    resources: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class ACIManifest:
    """The parts of an image manifest the driver uses."""

    name: str
    ac_version: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    exec: tuple[str, ...] = ()
    user: str = "0"
    group: str = "0"
    working_directory: str = "/"
    environment: dict[str, str] = field(default_factory=dict, hash=False)
    ports: tuple[ACIPort, ...] = ()
    has_app: bool = False
    supplementary_gids: tuple[int, ...] = ()
    isolators: ACIIsolators = field(default_factory=ACIIsolators)

    def defaults(self) -> ImageDefaults:
        """What a pod takes from this image unless the task overrides it."""
        return ImageDefaults(
            entrypoint=self.exec,
            cmd=(),
            env=dict(self.environment),
            working_dir=self.working_directory,
            user=self.user,
            group=self.group,
            ports=tuple(sorted((NamedPort(p.name, p.port, p.protocol) for p in self.ports), key=lambda p: p.name)),
            labels=dict(self.labels),
            caps_retain=self.isolators.caps_retain,
            caps_remove=self.isolators.caps_remove,
            no_new_privileges=self.isolators.no_new_privileges,
            oom_score_adj=self.isolators.oom_score_adj,
            supplementary_gids=self.supplementary_gids,
            resource_isolators=self.isolators.resources,
            ignored_isolators=self.isolators.ignored,
        )


def parse_manifest(data: bytes, where: str) -> ACIManifest:
    """Parse and validate an ACI's ``manifest`` file; ``where`` names the image in errors.

    Raises:
        InvalidACIManifest: not JSON, or a field breaks the rules in the module docstring.
    """
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidACIManifest(where, "(whole file)", f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidACIManifest(where, "(whole file)", "must be a JSON object")
    m = _Check(where)
    if raw.get("acKind") != "ImageManifest":
        raise m.bad("acKind", f'must be "ImageManifest" (got {raw.get("acKind")!r})')
    version = m.string(raw, "acVersion", required=True)
    if not _SEMVER.match(version):
        raise m.bad("acVersion", f"{version!r} is not a semantic version such as 0.8.11")
    name = m.string(raw, "name", required=True)
    m.identifier(name, "name")
    labels = m.labels(raw.get("labels"))
    for key in ("dependencies",):
        if raw.get(key):
            raise m.bad(
                key,
                "ACI dependencies are not supported by this driver; build a self-contained ACI "
                "(all files in its own rootfs)",
            )
    app = raw.get("app")
    if app is None:
        return ACIManifest(name=name, ac_version=version, labels=labels)
    if not isinstance(app, dict):
        raise m.bad("app", "must be a JSON object")
    return m.app(app, name, version, labels)


class _Check:
    def __init__(self, where: str) -> None:
        self.where = where

    def bad(self, field_name: str, problem: str) -> InvalidACIManifest:
        return InvalidACIManifest(self.where, field_name, problem)

    def string(self, obj: dict[str, Any], key: str, *, required: bool = False, prefix: str = "") -> str:
        value = obj.get(key)
        if value is None:
            if required:
                raise self.bad(prefix + key, "is required")
            return ""
        if not isinstance(value, str):
            raise self.bad(prefix + key, "must be a string")
        if required and not value:
            raise self.bad(prefix + key, "must not be empty")
        return value

    def identifier(self, value: str, field_name: str) -> None:
        if not AC_IDENTIFIER.match(value):
            raise self.bad(
                field_name,
                f"{value!r} is not an AC Identifier: lowercase a-z and 0-9 separated by one of -._~/, "
                "starting and ending with a letter or digit (e.g. example.com/app)",
            )

    def ac_name(self, value: object, field_name: str) -> str:
        if not isinstance(value, str) or not AC_NAME.match(value):
            raise self.bad(
                field_name, f"{value!r} is not an AC Name: lowercase a-z, 0-9 and '-' inside (e.g. http, web-admin)"
            )
        return value

    def objects(self, value: object, field_name: str) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.bad(field_name, "must be a list of JSON objects")
        return value

    def labels(self, value: object) -> dict[str, str]:
        labels: dict[str, str] = {}
        for i, item in enumerate(self.objects(value, "labels")):
            where = f"labels[{i}]"
            key = self.string(item, "name", required=True, prefix=f"{where}.")
            self.identifier(key, f"{where}.name")
            if key == "name":
                raise self.bad(f"{where}.name", 'a label may not be called "name"')
            if key in labels:
                raise self.bad(f"{where}.name", f"label {key!r} appears twice")
            labels[key] = self.string(item, "value", prefix=f"{where}.")
        os_name, arch = labels.get("os"), labels.get("arch")
        if arch is not None and os_name is None:
            raise self.bad("labels", f"arch={arch!r} needs an os label too")
        if os_name is not None:
            valid = VALID_OS_ARCH.get(os_name)
            if valid is None:
                raise self.bad("labels", f"os={os_name!r} is not one of {', '.join(VALID_OS_ARCH)}")
            if arch is not None and arch not in valid:
                raise self.bad("labels", f"arch={arch!r} is not valid with os={os_name!r} (valid: {', '.join(valid)})")
        return labels

    def app(self, app: dict[str, Any], name: str, version: str, labels: dict[str, str]) -> ACIManifest:
        exec_ = app.get("exec")
        if exec_ is not None and (
            not isinstance(exec_, list) or not exec_ or not all(isinstance(a, str) for a in exec_)
        ):
            raise self.bad("app.exec", "must be a non-empty list of strings (the program and its arguments)")
        user = self.string(app, "user", required=True, prefix="app.")
        group = self.string(app, "group", required=True, prefix="app.")
        for key, value in (("user", user), ("group", group)):
            if value.startswith("/"):
                raise self.bad(
                    f"app.{key}",
                    f"{value!r}: a {key} given as a file path (use that file's owner) is not supported by this "
                    "driver; give a name or a number",
                )
        workdir = self.string(app, "workingDirectory", prefix="app.") or "/"
        if not workdir.startswith("/"):
            raise self.bad("app.workingDirectory", f"{workdir!r} must be an absolute path")
        if app.get("eventHandlers"):
            raise self.bad("app.eventHandlers", "pre-start/post-stop event handlers are not supported by this driver")
        env: dict[str, str] = {}
        for i, item in enumerate(self.objects(app.get("environment"), "app.environment")):
            key = self.string(item, "name", required=True, prefix=f"app.environment[{i}].")
            if not _ENV_NAME.match(key):
                raise self.bad(f"app.environment[{i}].name", f"{key!r} is not a variable name")
            env[key] = self.string(item, "value", prefix=f"app.environment[{i}].")
        for i, item in enumerate(self.objects(app.get("mountPoints"), "app.mountPoints")):
            self.ac_name(item.get("name"), f"app.mountPoints[{i}].name")
            path = self.string(item, "path", required=True, prefix=f"app.mountPoints[{i}].")
            if not path.startswith("/"):
                raise self.bad(f"app.mountPoints[{i}].path", f"{path!r} must be an absolute path")
        isolators = self.isolators(app.get("isolators"))
        gids = app.get("supplementaryGIDs")
        if gids is not None and (not isinstance(gids, list) or not all(_is_int(g) and g >= 0 for g in gids)):
            raise self.bad("app.supplementaryGIDs", "must be a list of non-negative integers")
        return ACIManifest(
            name=name,
            ac_version=version,
            labels=labels,
            exec=tuple(exec_ or ()),
            user=user,
            group=group,
            working_directory=workdir,
            environment=env,
            ports=self.ports(app.get("ports")),
            has_app=True,
            supplementary_gids=tuple(gids or ()),
            isolators=isolators,
        )

    def isolators(self, value: object) -> ACIIsolators:
        applied: dict[str, Any] = {}
        resources: list[str] = []
        ignored: list[str] = []
        for i, item in enumerate(self.objects(value, "app.isolators")):
            where = f"app.isolators[{i}]"
            name = self.string(item, "name", required=True, prefix=f"{where}.")
            raw = item.get("value")
            if name in (CAPS_RETAIN, CAPS_REMOVE, NO_NEW_PRIVILEGES, OOM_SCORE_ADJ):
                if name in applied:
                    raise self.bad(f"{where}.name", f"isolator {name!r} appears twice")
                applied[name] = self.isolator_value(name, raw, f"{where}.value")
            elif name in RESOURCE_ISOLATORS:
                resources.append(name)
            else:
                ignored.append(name)
        if CAPS_RETAIN in applied and CAPS_REMOVE in applied:
            raise self.bad(
                "app.isolators", f"{CAPS_RETAIN} and {CAPS_REMOVE} cannot both be given (as rkt); keep one of them"
            )
        return ACIIsolators(
            caps_retain=applied.get(CAPS_RETAIN),
            caps_remove=applied.get(CAPS_REMOVE, ()),
            no_new_privileges=applied.get(NO_NEW_PRIVILEGES),
            oom_score_adj=applied.get(OOM_SCORE_ADJ),
            resources=tuple(resources),
            ignored=tuple(ignored),
        )

    def isolator_value(self, name: str, raw: object, where: str) -> Any:
        if name == NO_NEW_PRIVILEGES:
            if not isinstance(raw, bool):
                raise self.bad(where, f"{name} must be true or false (got {raw!r})")
            return raw
        if name == OOM_SCORE_ADJ:
            if not isinstance(raw, int) or isinstance(raw, bool) or not -_OOM_RANGE <= raw <= _OOM_RANGE:
                raise self.bad(where, f"{name} must be an integer from -1000 to 1000 (got {raw!r})")
            return raw
        caps = raw.get("set") if isinstance(raw, dict) else None
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise self.bad(where, f'{name} must be {{"set": ["CAP_...", ...]}}, a non-empty list of capability names')
        for cap in caps:
            if not _CAP_NAME.match(cap):
                raise self.bad(where, f"{cap!r} is not a capability name such as CAP_NET_BIND_SERVICE")
        return tuple(dict.fromkeys(caps))

    def ports(self, value: object) -> tuple[ACIPort, ...]:
        ports: list[ACIPort] = []
        for i, item in enumerate(self.objects(value, "app.ports")):
            where = f"app.ports[{i}]"
            name = self.ac_name(item.get("name"), f"{where}.name")
            if any(p.name == name for p in ports):
                raise self.bad(f"{where}.name", f"port {name!r} is declared twice")
            protocol = item.get("protocol")
            if protocol not in PORT_PROTOCOLS:
                raise self.bad(f"{where}.protocol", f"{protocol!r} is not one of {', '.join(PORT_PROTOCOLS)}")
            port = item.get("port")
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= _MAX_PORT:
                raise self.bad(f"{where}.port", f"{port!r} is not a port number (1-{_MAX_PORT})")
            count = item.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise self.bad(f"{where}.count", f"{count!r} must be an integer of at least 1")
            if port + count - 1 > _MAX_PORT:
                raise self.bad(f"{where}.count", f"ports {port}..{port + count - 1} go past {_MAX_PORT}")
            if not isinstance(item.get("socketActivated", False), bool):
                raise self.bad(f"{where}.socketActivated", "must be true or false")
            ports.append(ACIPort(name, protocol, port, count))
        return tuple(ports)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
