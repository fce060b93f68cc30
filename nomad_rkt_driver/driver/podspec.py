"""From Nomad's task, the job's rkt config and the image to the runtime's PodSpec (pure, except
for reading the image's /etc/passwd and /etc/group to resolve user names).

Networking is two steps: :func:`network_request` says what the pod's network must be (Nomad's
group namespace, ``host``, ``none`` or CNI networks, and the resolved port forwards); the driver
sets it up (network package) and passes the resulting Attachment to :func:`build`, which joins its
namespace and bind-mounts its resolv.conf and hosts read-only.

An ACI's isolators and ``supplementaryGIDs`` (images/acimanifest.py) apply with rkt's precedence,
the job's settings winning over the image's (docs/security.md, "Image isolators"):
capabilities start from the default set, which the image's retain-set replaces or its remove-set
shrinks, then the task's ``cap_add``/``cap_drop`` apply; a retained capability outside the
plugin's ``allow_caps`` is refused unless the task drops it. ``no-new-privileges`` stays on (an
image may not switch it off); ``oom-score-adj`` 0..1000 is the default when neither the task nor
Nomad sets one; Nomad's resources replace ``resource/*``; other isolators are logged, not applied.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig, split_device, split_volume
from nomad_rkt_driver.driver.insecure import expand
from nomad_rkt_driver.errors import InvalidArgument, InvalidConfig
from nomad_rkt_driver.images.acimanifest import CAPS_REMOVE, CAPS_RETAIN, NO_NEW_PRIVILEGES, OOM_SCORE_ADJ
from nomad_rkt_driver.images.imageconfig import ImageDefaults
from nomad_rkt_driver.network import ports
from nomad_rkt_driver.network.attach import Attachment, NetworkRequest
from nomad_rkt_driver.network.dns import DnsConfig
from nomad_rkt_driver.runtime import security
from nomad_rkt_driver.runtime.records import pod_id_for
from nomad_rkt_driver.runtime.spec import Bind, Device, PodSpec, Resources, host_device
from nomad_rkt_driver.types import Mount, NetworkMode, TaskRequest

log = logging.getLogger(__name__)
MIB = 1 << 20
# Nomad's volume_mount propagation_mode values → OCI bind propagation ("" is Nomad's old default).
PROPAGATION = {"": "rprivate", "private": "rprivate", "host-to-task": "rslave", "bidirectional": "rshared"}


def build(
    task: TaskRequest,
    cfg: TaskConfig,
    image: ImageDefaults,
    lower_dirs: tuple[Path, ...],
    plugin: PluginConfig,
    where: str,
    network: Attachment,
) -> PodSpec:
    """The pod for one task; raises InvalidConfig naming the attribute when the job asks for too much."""
    uid, gid = _user(task.user or _image_user(image), lower_dirs, where)
    base_caps = _image_caps(cfg, image, plugin, where)
    _log_isolators(cfg, image, where)
    return PodSpec(
        pod_id=pod_id_for(task.id),
        args=_args(cfg, image, where),
        env=tuple({**image.env, **task.env}.items()),
        cwd=cfg.working_dir or image.working_dir or "/",
        uid=uid,
        gid=gid,
        additional_gids=image.supplementary_gids,
        hostname=pod_hostname(task, cfg),
        readonly_rootfs=cfg.readonly_rootfs,
        binds=_binds(task) + _nomad_mounts(task.mounts) + _volumes(task, cfg, plugin, where) + _network_binds(network),
        devices=_nomad_devices(task) + _devices(cfg, plugin, where),
        resources=_resources(task, cfg, plugin, where, image),
        nomad_cgroup=task.resources.cpuset_cgroup,
        netns=network.netns,
        privileged=_privileged(cfg, plugin, where),
        cap_add=_cap_add(cfg, plugin, where),
        cap_drop=tuple(_cap(c) for c in cfg.cap_drop),
        base_caps=base_caps,
        no_new_privileges=True,  # whatever the image says (see _log_isolators); privileged clears it
        insecure_options=tuple(sorted(expand(cfg.insecure_options))),
    )


def _args(cfg: TaskConfig, image: ImageDefaults, where: str) -> tuple[str, ...]:
    # rkt: command replaces the image's exec (Entrypoint ++ Cmd); args are appended.
    head = (*cfg.entrypoint, cfg.command) if cfg.command else (cfg.entrypoint or image.entrypoint) + image.cmd
    if not head:
        raise InvalidConfig(where, "command", "the image names no command (no Entrypoint or Cmd); set command")
    return (*head, *cfg.args)


def _image_user(image: ImageDefaults) -> str:
    return f"{image.user}:{image.group}" if image.group and image.group != image.user else image.user


def _lookup(lower_dirs: tuple[Path, ...], file: str, name: str) -> int | None:
    for layer in lower_dirs:  # top first: the first layer that has the file decides
        path = layer / "etc" / file
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                    return int(fields[2])
            return None
    return None


def _user(spec: str, lower_dirs: tuple[Path, ...], where: str) -> tuple[int, int]:
    user, _, group = (spec or "0").partition(":")
    if user.isdigit():
        uid = int(user)
    else:
        found = _lookup(lower_dirs, "passwd", user)
        if found is None:
            raise InvalidConfig(
                where,
                "user",
                f'user "{user}" does not exist in the image\'s /etc/passwd; '
                "use a numeric uid or a user the image defines",
            )
        uid = found
    if not group:
        return uid, _primary_gid(user, uid, lower_dirs)
    if group.isdigit():
        return uid, int(group)
    gid = _lookup(lower_dirs, "group", group)
    if gid is None:
        raise InvalidConfig(where, "user", f'group "{group}" does not exist in the image\'s /etc/group')
    return uid, gid


def _primary_gid(user: str, uid: int, lower_dirs: tuple[Path, ...]) -> int:
    for layer in lower_dirs:
        path = layer / "etc" / "passwd"
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) > 3 and (fields[0] == user or fields[2] == str(uid)) and fields[3].isdigit():
                    return int(fields[3])
            break
    return uid if not user.isdigit() else 0


def pod_hostname(task: TaskRequest, cfg: TaskConfig) -> str:
    """The task's ``hostname``, else the group network's (``network { hostname }``), else one from the task name."""
    return cfg.hostname or task.network.hostname or _hostname(task.name)


def _hostname(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:63]
    return cleaned or "pod"


def _binds(task: TaskRequest) -> tuple[Bind, ...]:
    binds: list[Bind] = []
    if task.alloc_dir:
        task_dir = os.path.join(task.alloc_dir, task.name)
        for source, target in (
            (os.path.join(task.alloc_dir, "alloc"), "/alloc"),
            (os.path.join(task_dir, "local"), "/local"),
            (os.path.join(task_dir, "secrets"), "/secrets"),
        ):
            if os.path.isdir(source):
                binds.append(Bind(source, target))
    return tuple(binds)


def _nomad_mounts(mounts: tuple[Mount, ...]) -> tuple[Bind, ...]:
    """Nomad's volume_mount / CSI / host_volume mounts, always allowed (Nomad decided them)."""
    binds = []
    for m in mounts:
        propagation = PROPAGATION.get(m.propagation_mode)
        if propagation is None:
            raise InvalidArgument(
                f"mount {m.host_path} -> {m.task_path}: propagation_mode {m.propagation_mode!r} is not one of "
                "private, host-to-task, bidirectional"
            )
        binds.append(Bind(m.host_path, m.task_path, m.readonly, propagation))
    return tuple(binds)


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def _volumes(task: TaskRequest, cfg: TaskConfig, plugin: PluginConfig, where: str) -> tuple[Bind, ...]:
    """The job's ``volumes``: any host path when the plugin enables volumes; otherwise only paths
    that stay inside the allocation dir (relative ones are relative to the task dir, as docker's)."""
    binds = []
    alloc_dir = os.path.realpath(task.alloc_dir) if task.alloc_dir else ""
    for i, entry in enumerate(cfg.volumes):
        attribute = f"volumes[{i}]"
        host, target, readonly = split_volume(entry)
        if not os.path.isabs(host) and not task.alloc_dir:
            raise InvalidConfig(where, attribute, f'"{entry}": a relative host path needs the task dir Nomad gives')
        source = os.path.normpath(os.path.join(task.alloc_dir, task.name, host))  # join keeps an absolute host
        enabled = plugin.volumes.enabled
        if not enabled and not (alloc_dir and _inside(os.path.realpath(source), alloc_dir)):
            raise InvalidConfig(
                where,
                attribute,
                f'"{entry}": host volumes are disabled on this client and {source} is outside the allocation '
                'dir; an operator must set volumes { enabled = true } in the agent\'s plugin "rkt" config, or use '
                "a path relative to the task dir or Nomad's host_volume with volume_mount",
            )
        if not os.path.exists(source):
            raise InvalidConfig(
                where, attribute, f'"{entry}": the host path {source} does not exist; create it or fix the path'
            )
        # Without the operator's consent, bind the resolved path, so a symlink cannot lead outside later.
        binds.append(Bind(source if enabled else os.path.realpath(source), target, readonly))
    return tuple(binds)


def _nomad_devices(task: TaskRequest) -> tuple[Device, ...]:
    """Devices Nomad's device plugins assigned to the task (always allowed)."""
    devices = []
    for d in task.devices:
        try:
            node = host_device(d.host_path, d.cgroup_permissions or "rwm")
        except FileNotFoundError:
            raise InvalidArgument(
                f"device {d.host_path} (assigned by Nomad for {d.task_path or d.host_path}) does not exist on "
                "this host; check the device plugin"
            ) from None
        except ValueError as exc:
            raise InvalidArgument(f"device assigned by Nomad: {exc}") from None
        devices.append(replace(node, path=d.task_path or d.host_path))
    return tuple(devices)


def _devices(cfg: TaskConfig, plugin: PluginConfig, where: str) -> tuple[Device, ...]:
    """The job's own ``devices`` (docker's form), when the plugin allows them."""
    if cfg.devices and not plugin.allow_devices:
        raise InvalidConfig(
            where,
            "devices",
            "this client does not let jobs pass host devices; an operator must set allow_devices = true "
            "in the agent's plugin \"rkt\" config (devices from Nomad's device plugins need no setting)",
        )
    devices = []
    for i, entry in enumerate(cfg.devices):
        host, target, permissions = split_device(entry)
        try:
            node = host_device(host, permissions)
        except FileNotFoundError:
            raise InvalidConfig(where, f"devices[{i}].host_path", f'"{host}" does not exist on this host') from None
        except ValueError as exc:
            raise InvalidConfig(where, f"devices[{i}].host_path", str(exc)) from None
        devices.append(replace(node, path=target))
    return tuple(devices)


def _resources(task: TaskRequest, cfg: TaskConfig, plugin: PluginConfig, where: str, image: ImageDefaults) -> Resources:
    res = task.resources
    limit = res.memory_limit_bytes or res.memory_max_mb * MIB or res.memory_mb * MIB
    reservation = res.memory_mb * MIB if res.memory_max_mb > res.memory_mb else 0
    if plugin.pids_limit and cfg.pids_limit > plugin.pids_limit:
        raise InvalidConfig(
            where,
            "pids_limit",
            f"{cfg.pids_limit} is above this client's ceiling of {plugin.pids_limit} (the plugin's pids_limit)",
        )
    return Resources(
        memory_limit_bytes=limit,
        memory_reservation_bytes=reservation,
        cpu_shares=res.cpu_shares or res.cpu_mhz,
        cpu_quota_us=res.cpu_quota,
        cpu_period_us=res.cpu_period,
        cpuset_cpus=res.cpuset_cpus,
        pids_limit=cfg.pids_limit or plugin.pids_limit,
        # Always explicit: the task must not inherit the agent's own (often -1000) value.
        oom_score_adj=cfg.oom_score_adj or res.oom_score_adj or _image_oom(image),
    )


def _image_oom(image: ImageDefaults) -> int:
    """The image's oom-score-adj when it only raises the score (a negative one is the operator's call)."""
    value = image.oom_score_adj
    return value if value is not None and value > 0 else 0


def _network_binds(network: Attachment) -> tuple[Bind, ...]:
    return (Bind(network.resolv_conf, "/etc/resolv.conf", True), Bind(network.hosts, "/etc/hosts", True))


def image_ports(image: ImageDefaults) -> tuple[ports.ImagePort, ...]:
    return tuple(ports.ImagePort(p.name, p.port, p.protocol) for p in image.ports)


def network_request(task: TaskRequest, cfg: TaskConfig, image: ImageDefaults, where: str) -> tuple[NetworkRequest, str]:
    """What the pod's network must be, and a warning for a task event ("" if none).

    Nomad's group namespace (bridge mode) is joined as it is, and Nomad maps its ports; on ``host``
    networking a port mapping is ignored with a warning (hashicorp/nomad#3207); ``none`` has no
    network to forward to, so a port mapping is an error; otherwise every label resolves to an
    image port (network/ports.py) or the start fails naming it.
    """
    base = NetworkRequest(
        pod_id=pod_id_for(task.id),
        nets=cfg.net,
        hostname=pod_hostname(task, cfg),
        dns=DnsConfig(cfg.dns_servers, cfg.dns_search_domains, cfg.dns_options),
        nomad_dns=DnsConfig(task.dns.servers, task.dns.searches, task.dns.options) if task.dns else None,
        extra_hosts=cfg.extra_hosts,
    )
    if task.network.mode is NetworkMode.GROUP and task.network.path:
        why = "the task joins its group's network namespace, where Nomad maps the ports"
        return replace(base, join=task.network.path), ports.ignored_warning(cfg.port_map, cfg.ports, why)
    if cfg.net == ("host",):
        why = "the task uses host networking"
        return base, ports.ignored_warning(cfg.port_map, cfg.ports, why)
    if cfg.net == ("none",):
        if cfg.port_map or cfg.ports:
            raise InvalidConfig(
                where, "port_map", 'net = ["none"] has no network to forward ports to; use "default" or remove them'
            )
        return base, ""
    forwards = ports.resolve(cfg.port_map, cfg.ports, task.resources.ports, image_ports(image), where)
    return replace(base, forwards=forwards), ""


def _privileged(cfg: TaskConfig, plugin: PluginConfig, where: str) -> bool:
    if cfg.privileged and not plugin.allow_privileged:
        raise InvalidConfig(
            where,
            "privileged",
            "this client does not allow privileged tasks; an operator "
            'must set allow_privileged = true in the agent\'s plugin "rkt" config',
        )
    return cfg.privileged


def _cap(name: str) -> str:
    upper = name.upper()
    return upper if upper == "ALL" or upper.startswith("CAP_") else "CAP_" + upper


def _cap_add(cfg: TaskConfig, plugin: PluginConfig, where: str) -> tuple[str, ...]:
    allowed = {_cap(c) for c in plugin.allow_caps}
    added = tuple(_cap(c) for c in cfg.cap_add)
    if "ALL" not in allowed:
        refused = [c for c in added if c not in allowed]
        if refused:
            raise InvalidConfig(
                where,
                "cap_add",
                f"{', '.join(refused)} not allowed on this client; allowed: "
                f"{', '.join(sorted(allowed))} (the plugin config's allow_caps)",
            )
    return added


def _image_caps(cfg: TaskConfig, image: ImageDefaults, plugin: PluginConfig, where: str) -> tuple[str, ...] | None:
    """The set cap_add/cap_drop start from, from the image's capabilities isolator (None: the default set)."""
    if image.caps_retain is None and not image.caps_remove:
        return None
    isolator, named = (
        (CAPS_RETAIN, image.caps_retain) if image.caps_retain is not None else (CAPS_REMOVE, image.caps_remove)
    )
    unknown = [c for c in named if c not in security.CAP_BITS]
    if unknown:
        raise InvalidConfig(
            where,
            "image",
            f"{cfg.image}: the image manifest's isolator {isolator} names {', '.join(unknown)}, which Linux does "
            "not know; fix the image's manifest (names such as CAP_NET_BIND_SERVICE)",
        )
    if image.caps_retain is None:
        return tuple(c for c in security.DEFAULT_CAPS if c not in image.caps_remove)
    all_caps = cfg.privileged or security.insecure(expand(cfg.insecure_options), "capabilities")
    allowed = {_cap(c) for c in plugin.allow_caps}
    dropped = {_cap(c) for c in cfg.cap_drop}
    if not all_caps and not {"ALL"} & (allowed | dropped):
        refused = [c for c in image.caps_retain if c not in allowed and c not in dropped]
        if refused:
            short = ", ".join(f'"{c.removeprefix("CAP_")}"' for c in refused)
            raise InvalidConfig(
                where,
                "image",
                f"{cfg.image}: the image manifest's isolator {CAPS_RETAIN} asks for {', '.join(refused)}, which "
                f"this client does not allow (the plugin config's allow_caps: {', '.join(sorted(allowed))}); an "
                f'operator must add it to allow_caps in the agent\'s plugin "rkt" config, or the job can refuse it '
                f"with cap_drop = [{short}]",
            )
    return image.caps_retain


def _log_isolators(cfg: TaskConfig, image: ImageDefaults, where: str) -> None:
    """One warning line for the image's isolators the pod does not apply; a debug line for resource ones."""
    if image.resource_isolators:
        log.debug(
            "%s: image %s: isolators %s ignored: Nomad's resources set the pod's limits",
            where,
            cfg.image,
            ", ".join(image.resource_isolators),
        )
    skipped = list(image.ignored_isolators)
    if image.no_new_privileges is False:
        skipped.append(f"{NO_NEW_PRIVILEGES}=false (kept on; privileged = true clears it)")
    if image.oom_score_adj is not None and image.oom_score_adj < 0:
        skipped.append(f"{OOM_SCORE_ADJ}={image.oom_score_adj} (below 0; set oom_score_adj in the job)")
    if skipped:
        log.warning("%s: image %s: isolators not applied by this driver: %s", where, cfg.image, "; ".join(skipped))
