"""Setting a pod's networks up and tearing them down, with the state teardown needs on disk.

Layout under the network root (``<data_dir>/network``)::

    ipam/                    host-local leases of the builtin default network
    pods/<pod id>/state.json what teardown needs: netns, each network's full config, ifname,
                             ADD result, port mappings (written before anything is created)
    pods/<pod id>/resolv.conf, hosts   bind-mounted read-only into the pod

Modes: Nomad's group namespace (join it, no CNI of ours), ``host`` (the host's namespace),
``none`` (the runtime gives the pod a namespace with only ``lo``), otherwise a namespace of ours
(``rkt-<pod id>``) with each named CNI network on ``eth0``, ``eth1``, … in the job's order. Port
mappings go to the first network whose plugins take ``portMappings`` (the default network's
``portmap``); the pod's address is that network's first IPv4 address, or its first IPv6 address
when it has no IPv4 one (an IPv6-only network). A dual-stack pod's IPv6 address is kept beside it
(``Attachment.ip6``, the pod's /etc/hosts). IPv6 is asked for by the plugin's
``default_network_subnet6`` or by IPv6 ranges in a named conflist; the host is checked first.

Teardown runs CNI DEL for each network, in reverse, with the very config used for ADD and while the
namespace still exists (a DEL without it leaks the masquerade chains), then deletes the namespace
and the pod's directory. It works from the state file alone (a fresh process after a crash) and
is idempotent. A failed setup tears down what it made.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.errors import FailedPrecondition, InvalidConfig
from nomad_rkt_driver.network import cni, conflist, dns, netns
from nomad_rkt_driver.network.dns import DnsConfig
from nomad_rkt_driver.network.ports import PortForward

log = logging.getLogger(__name__)
HOST_RESOLV: Final = "/etc/resolv.conf"
STATE_FILE: Final = "state.json"


class PortTaken(FailedPrecondition):
    """A host port Nomad allocated is already bound by another process on this host."""

    recoverable = True


@dataclass(frozen=True)
class NetworkRequest:
    """What a pod asks of the network: the job's ``net`` list or Nomad's group namespace, ports, DNS."""

    pod_id: str
    nets: tuple[str, ...] = ("default",)
    join: str = ""  # Nomad's group netns path (bridge mode): join it, no CNI of ours
    forwards: tuple[PortForward, ...] = ()
    hostname: str = "pod"
    dns: DnsConfig = field(default_factory=DnsConfig)
    nomad_dns: DnsConfig | None = None
    extra_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Interface:
    network: str
    ifname: str
    ip: str
    ip6: str = ""


@dataclass(frozen=True)
class Attachment:
    """The result: what the pod's spec joins (``"host"``, ``""`` = its own, or a netns path) and its files."""

    netns: str
    ip: str
    resolv_conf: str
    hosts: str
    interfaces: tuple[Interface, ...] = ()
    forwards: tuple[PortForward, ...] = ()
    ip6: str = ""  # the pod's IPv6 address beside ``ip`` ("" when none, or when ``ip`` is IPv6 itself)


def _check_free(forwards: Sequence[PortForward]) -> None:
    for fwd in forwards:
        kind = socket.SOCK_DGRAM if fwd.protocol == "udp" else socket.SOCK_STREAM
        if fwd.protocol not in ("tcp", "udp"):
            continue
        family = socket.AF_INET6 if ":" in fwd.host_ip else socket.AF_INET
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((fwd.host_ip or "0.0.0.0", fwd.host_port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    continue
                raise PortTaken(
                    f'port "{fwd.label}": host port {fwd.host_ip or "0.0.0.0"}:{fwd.host_port}/{fwd.protocol} '
                    "is already in use by another process on this client; stop it or let Nomad pick another port"
                ) from None


class PodNetworks:
    """The pod networks of one plugin config (its data dir, CNI path, conf dir and default subnet)."""

    def __init__(self, root: Path, cni_path: tuple[str, ...], conf_dir: str, subnet: str, subnet6: str = "") -> None:
        self.root = root
        self.cni_path = cni_path
        self.conf_dir = conf_dir
        self.subnet = subnet
        self.subnet6 = subnet6

    def pod_dir(self, pod_id: str) -> Path:
        return self.root / "pods" / pod_id

    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    def pods(self) -> list[str]:
        """Pods with network state here (for a reaper: those without a pod are orphans)."""
        pods = self.root / "pods"
        return sorted(p.name for p in pods.iterdir()) if pods.is_dir() else []

    # -- setup ----------------------------------------------------------------------------------

    def select(self, nets: tuple[str, ...], where: str) -> tuple[conflist.NetworkConf, ...]:
        """The CNI networks for a ``net`` list (InvalidConfig for unknown names or broken files)."""
        if nets in (("host",), ("none",)):
            return ()
        return conflist.select(nets, self.conf_dir, self.subnet, str(self.ipam_dir()), where, self.subnet6)

    def setup(self, request: NetworkRequest, where: str) -> Attachment:
        """Make the pod's network; on any failure everything made so far is removed again."""
        confs = () if request.join else self.select(request.nets, where)
        if confs and request.forwards and not any(c.takes_ports for c in confs):
            raise InvalidConfig(
                where,
                "net",
                f"networks {', '.join(c.name for c in confs)} have no plugin that takes portMappings "
                '(e.g. {"type": "portmap", "capabilities": {"portMappings": true}}), so ports cannot be forwarded',
            )
        _check_ipv6(confs, request.forwards, where)
        directory = self.pod_dir(request.pod_id)
        if directory.exists():
            self.teardown(request.pod_id)  # a leftover of an earlier attempt with this pod id
        directory.mkdir(parents=True)
        try:
            return self._setup(request, confs, directory)
        except BaseException:
            try:
                self.teardown(request.pod_id)
            except Exception:
                log.exception("network rollback failed", extra={"pod_id": request.pod_id})
            raise

    def _setup(self, request: NetworkRequest, confs: tuple[conflist.NetworkConf, ...], directory: Path) -> Attachment:
        state: dict[str, Any] = {"pod_id": request.pod_id, "netns": "", "networks": []}
        if request.join:
            spec_netns = request.join
        elif request.nets == ("host",):
            spec_netns = "host"
        elif not confs:
            spec_netns = ""
        else:
            if request.forwards:
                _check_free(request.forwards)
            name = netns.name_for(request.pod_id)
            state["netns"] = name
            mapped = False
            for index, conf in enumerate(confs):
                runtime_config: dict[str, Any] = {}
                if not mapped and conf.takes_ports:
                    runtime_config["portMappings"] = [f.as_cni() for f in request.forwards]
                    mapped = True
                state["networks"].append(
                    {"conf": conf.to_json(), "ifname": f"eth{index}", "runtime_config": runtime_config, "result": None}
                )
            self._save(directory, state)  # before creating anything: teardown after a crash needs it
            spec_netns = netns.create(name, ipv6=any(conflist.wants_ipv6(c) for c in confs))
            for entry in state["networks"]:
                conf = conflist.NetworkConf.from_json(entry["conf"])
                call = cni.Invocation(request.pod_id, spec_netns, entry["ifname"], self.cni_path)
                entry["added"] = True
                self._save(directory, state)
                entry["result"] = cni.add_list(conf.name, conf.cni_version, conf.plugins, call, entry["runtime_config"])
                self._save(directory, state)
        interfaces = tuple(
            Interface(
                e["conf"]["name"],
                e["ifname"],
                cni.first_address(e["result"] or {}, 4),
                cni.first_address(e["result"] or {}, 6),
            )
            for e in state["networks"]
        )
        # The address Nomad gets: the port-mapped network's (else the first network with one), IPv4 first.
        ported = [i for i, e in zip(interfaces, state["networks"], strict=True) if e["runtime_config"]]
        chosen = next((i for i in [*ported, *interfaces] if i.ip or i.ip6), None)
        address = (chosen.ip or chosen.ip6) if chosen else ""
        address6 = chosen.ip6 if chosen and chosen.ip else ""
        resolv, hosts = self._write_files(request, directory, state["networks"], address, address6)
        self._save(directory, state)
        return Attachment(spec_netns, address, str(resolv), str(hosts), interfaces, request.forwards, address6)

    def _write_files(
        self, request: NetworkRequest, directory: Path, networks: list[dict[str, Any]], address: str, address6: str
    ) -> tuple[Path, Path]:
        cni_servers: list[str] = []
        for entry in networks:
            cni_servers += (entry["result"] or {}).get("dns", {}).get("nameservers") or []
        try:
            host_text = Path(HOST_RESOLV).read_text()
        except OSError:
            host_text = ""
        resolv = directory / "resolv.conf"
        resolv.write_text(dns.resolv_conf(request.dns, request.nomad_dns, cni_servers, host_text))
        hosts = directory / "hosts"
        hosts.write_text(dns.hosts(request.hostname, address, request.extra_hosts, address6))
        for path in (resolv, hosts):
            path.chmod(0o644)
        return resolv, hosts

    @staticmethod
    def _save(directory: Path, state: dict[str, Any]) -> None:
        temp = directory / (STATE_FILE + ".tmp")
        temp.write_text(json.dumps(state))
        os.replace(temp, directory / STATE_FILE)

    # -- teardown -------------------------------------------------------------------------------

    def teardown(self, pod_id: str) -> None:
        """CNI DEL (reverse order, same config, netns present), then the netns and the pod's dir; idempotent."""
        directory = self.pod_dir(pod_id)
        state: dict[str, Any] = {}
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning(
                "unreadable network state; removing the namespace only", extra={"pod_id": pod_id, "err": str(exc)}
            )
        name = str(state.get("netns") or "")
        path = netns.path_of(name) if name and netns.exists(name) else ""
        first: Exception | None = None
        for entry in reversed(state.get("networks") or []):
            if not entry.get("added"):
                continue
            conf = conflist.NetworkConf.from_json(entry["conf"])
            call = cni.Invocation(pod_id, path, entry["ifname"], self.cni_path)
            try:
                cni.del_list(conf.name, conf.cni_version, conf.plugins, call, entry["runtime_config"], entry["result"])
            except cni.PluginMissing:
                raise  # keep the namespace and state: DEL must run once the plugin is back
            except cni.PluginFailed as exc:
                first = first or exc
        if first is not None:
            raise FailedPrecondition(
                f"pod {pod_id}: network teardown failed, namespace and state kept for a retry: {first}",
                recoverable=True,
            )
        netns.delete(name or netns.name_for(pod_id))
        shutil.rmtree(directory, ignore_errors=True)


def _check_ipv6(confs: tuple[conflist.NetworkConf, ...], forwards: Sequence[PortForward], where: str) -> None:
    """IPv6 host ports need an IPv6 pod network; IPv6 networks need a host with IPv6 (checked before anything)."""
    ported = next((c for c in confs if c.takes_ports), None)
    for fwd in forwards:
        if ported is not None and ":" in fwd.host_ip and not conflist.wants_ipv6(ported):
            fix = (
                'set default_network_subnet6 (e.g. "fd52:6b74::/64") in the plugin config'
                if ported.source == "builtin"
                else f"give it an IPv6 range in {ported.source}"
            )
            raise InvalidConfig(
                where,
                "net",
                f'port "{fwd.label}" is on the IPv6 host address {fwd.host_ip}, but network "{ported.name}" gives '
                f"pods no IPv6 address to forward it to; {fix}, or give the port an IPv4 host_network",
            )
    wanting = [c for c in confs if conflist.wants_ipv6(c)]
    if not wanting:
        return
    problem = netns.ipv6_problem()
    if not problem:
        return
    conf = wanting[0]
    if conf.source == "builtin":
        asked = "the plugin config's default_network_subnet6 gives the default network IPv6"
        fix = 'enable IPv6 on the host, or set default_network_subnet6 = "" for IPv4-only pods'
    else:
        asked = f'network "{conf.name}" ({conf.source}) has IPv6 ranges'
        fix = "enable IPv6 on the host, or remove the IPv6 ranges from that file"
    raise FailedPrecondition(f"{asked}, but {problem}; {fix}")
