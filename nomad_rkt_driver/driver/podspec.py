"""From Nomad's task, the job's rkt config and the image to the runtime's PodSpec (pure, except
for reading the image's /etc/passwd and /etc/group to resolve user names).

Networking is two steps: :func:`network_request` says what the pod's network must be (Nomad's
group namespace, ``host``, ``none`` or CNI networks, and the resolved port forwards); the driver
sets it up (network package) and passes the resulting Attachment to :func:`build`, which joins its
namespace and bind-mounts its resolv.conf and hosts read-only.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.insecure import expand
from nomad_rkt_driver.errors import InvalidConfig, NotImplementedYet
from nomad_rkt_driver.images.imageconfig import ImageDefaults
from nomad_rkt_driver.network import ports
from nomad_rkt_driver.network.attach import Attachment, NetworkRequest
from nomad_rkt_driver.network.dns import DnsConfig
from nomad_rkt_driver.runtime.records import pod_id_for
from nomad_rkt_driver.runtime.spec import Bind, PodSpec, Resources
from nomad_rkt_driver.types import NetworkMode, TaskRequest

MIB = 1 << 20


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
    return PodSpec(
        pod_id=pod_id_for(task.id),
        args=_args(cfg, image, where),
        env=tuple({**image.env, **task.env}.items()),
        cwd=cfg.working_dir or image.working_dir or "/",
        uid=uid,
        gid=gid,
        hostname=cfg.hostname or _hostname(task.name),
        readonly_rootfs=cfg.readonly_rootfs,
        binds=_binds(task) + _network_binds(network),
        resources=_resources(task),
        netns=network.netns,
        privileged=_privileged(cfg, plugin, where),
        cap_add=_cap_add(cfg, plugin, where),
        cap_drop=tuple(_cap(c) for c in cfg.cap_drop),
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
    binds.extend(Bind(m.host_path, m.task_path, m.readonly) for m in task.mounts)
    if task.devices:
        raise NotImplementedYet("devices are not supported by the rkt driver yet")
    return tuple(binds)


def _resources(task: TaskRequest) -> Resources:
    res = task.resources
    limit = res.memory_limit_bytes or res.memory_max_mb * MIB or res.memory_mb * MIB
    reservation = res.memory_mb * MIB if res.memory_max_mb > res.memory_mb else 0
    return Resources(
        memory_limit_bytes=limit,
        memory_reservation_bytes=reservation,
        cpu_shares=res.cpu_shares or res.cpu_mhz,
        cpu_quota_us=res.cpu_quota,
        cpu_period_us=res.cpu_period,
        cpuset_cpus=res.cpuset_cpus,
        oom_score_adj=res.oom_score_adj or None,
    )


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
        hostname=cfg.hostname or _hostname(task.name),
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
