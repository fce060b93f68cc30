"""Nomad's group network (``group { network { mode = ... } }``), made as a Nomad client makes it.

In Nomad the *client*, not the driver, makes one network namespace per allocation when the group
asks for ``bridge``, ``none`` or ``cni/<name>``, and hands its path to every task's StartTask
(NetworkIsolationSpec mode GROUP); the driver only joins it. The local runner plays the client, so
this module does the client's part (client/allocrunner/networking_bridge_linux.go and
cni/bridge.go in hashicorp/nomad are the facts it follows):

* ``bridge``: the conflist Nomad builds in, network ``nomad``, CNI version 0.4.0: ``loopback``;
  ``bridge`` on the device ``nomad`` (client option ``bridge_network_name``) with ipMasq, gateway,
  forceAddress, hairpin mode off by default, host-local IPAM on ``172.26.64.0/20``
  (``bridge_network_subnet``) with a default route; ``firewall`` (iptables backend, admin chain
  ``NOMAD-ADMIN``); ``portmap`` with ``portMappings`` and SNAT. Before the first ADD the client
  makes sure ``NOMAD-ADMIN`` accepts traffic to the subnet out of the bridge (``-o nomad -d
  172.26.64.0/20 -j ACCEPT``), so forwarded ports work on hosts whose FORWARD policy is DROP.
* ``cni/<name>``: the conflist of that name from the CNI conf dir, as it is.
* ``none``: a namespace with only ``lo``.

Every group port is forwarded, tcp and udp, from its host value to its ``to`` (``to`` unset or
below 1 means the same number), on the port's host IP. The namespace is named after the
allocation (``/run/netns/<alloc id>``), the CNI container id is the allocation id, the interface
``eth0``.

Teardown runs CNI DEL in reverse with the very config and result of ADD while the namespace still
exists, then deletes the namespace and the state file. The state file (``<root>/<name>.json``) is
written before anything is made, with the pid of the process that owns the network, so a network
whose owner died can be found (:meth:`GroupNetworks.stale`, and ``nomad-rkt-driver gc`` through
:meth:`GroupNetworks.states`) and torn down; the owner is named by pid and /proc start time. What stays, as with
Nomad: the bridge device, the ``NOMAD-ADMIN`` rule, and the shared chains of the firewall and
portmap plugins (``CNI-FORWARD``, ``CNI-HOSTPORT-*``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver import procs
from nomad_rkt_driver.errors import FailedPrecondition
from nomad_rkt_driver.network import cni, netns
from nomad_rkt_driver.network.conflist import NetworkConf

NETWORK_NAME: Final = "nomad"
BRIDGE_NAME: Final = "nomad"
BRIDGE_SUBNET: Final = "172.26.64.0/20"
ADMIN_CHAIN: Final = "NOMAD-ADMIN"
CNI_VERSION: Final = "0.4.0"
IFNAME: Final = "eth0"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgeSettings:
    """The Nomad client's ``bridge_network_name``, ``bridge_network_subnet`` and ``bridge_network_hairpin_mode``."""

    name: str = BRIDGE_NAME
    subnet: str = BRIDGE_SUBNET
    hairpin: bool = False

    def check(self, where: str) -> None:
        """ValueError naming the setting when the bridge name or subnet cannot be used."""
        if not self.name or len(self.name) > 15 or "/" in self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"{where}: bridge_network_name {self.name!r} is not a Linux interface name (1-15 chars)")
        try:
            ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise ValueError(f"{where}: bridge_network_subnet {self.subnet!r}: {exc}") from None


def nomad_bridge(settings: BridgeSettings = BridgeSettings()) -> NetworkConf:
    """Nomad's builtin bridge conflist for ``mode = "bridge"``."""
    bridge = {
        "type": "bridge",
        "bridge": settings.name,
        "ipMasq": True,
        "isGateway": True,
        "forceAddress": True,
        "hairpinMode": settings.hairpin,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": settings.subnet}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    plugins = (
        {"type": "loopback"},
        bridge,
        {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": ADMIN_CHAIN},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    )
    return NetworkConf(NETWORK_NAME, CNI_VERSION, plugins, "builtin")


@dataclass(frozen=True)
class GroupPort:
    """One port of the group's ``network {}``: its label, host value, ``to`` and host IP."""

    label: str
    host_port: int
    to: int
    host_ip: str

    @property
    def inside(self) -> int:
        """The port in the allocation's namespace: ``to``, or the host value when ``to`` is unset or below 1."""
        return self.to if self.to > 0 else self.host_port


def port_mappings(ports: Sequence[GroupPort]) -> list[dict[str, object]]:
    """portmap's ``runtimeConfig.portMappings``: every port, tcp and udp, host value → ``to``."""
    mappings: list[dict[str, object]] = []
    for port in ports:
        for protocol in ("tcp", "udp"):
            entry: dict[str, object] = {"hostPort": port.host_port, "containerPort": port.inside, "protocol": protocol}
            if port.host_ip:
                entry["hostIP"] = port.host_ip
            mappings.append(entry)
    return mappings


def admin_rule(settings: BridgeSettings) -> list[str]:
    """The rule of ``NOMAD-ADMIN`` that lets traffic out of the bridge to the allocations' subnet."""
    return ["-o", settings.name, "-d", settings.subnet, "-j", "ACCEPT"]


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["iptables", *args], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise FailedPrecondition(
            "the iptables command is not installed; install it (apt-get install iptables)", recoverable=True
        ) from None


def ensure_admin_rule(settings: BridgeSettings) -> None:
    """Make ``NOMAD-ADMIN`` (filter table) and its rule for the bridge, once; as a Nomad client does."""
    if _iptables("-t", "filter", "-n", "-L", ADMIN_CHAIN).returncode != 0:
        made = _iptables("-t", "filter", "-N", ADMIN_CHAIN)
        if made.returncode != 0 and _iptables("-t", "filter", "-n", "-L", ADMIN_CHAIN).returncode != 0:
            raise FailedPrecondition(f"cannot create the iptables chain {ADMIN_CHAIN}: {made.stderr.strip()}")
    rule = admin_rule(settings)
    if _iptables("-t", "filter", "-C", ADMIN_CHAIN, *rule).returncode != 0:
        added = _iptables("-t", "filter", "-A", ADMIN_CHAIN, *rule)
        if added.returncode != 0:
            raise FailedPrecondition(f"cannot add the iptables rule {' '.join(rule)} to {ADMIN_CHAIN}: {added.stderr}")


@dataclass(frozen=True)
class GroupNetwork:
    """A made group network: the namespace's name and path, and the allocation's address ("" for none)."""

    name: str
    path: str
    ip: str = ""


@dataclass(frozen=True)
class GroupState:
    """One group network's state file as found on disk: its owner (pid 0: unreadable) and age."""

    name: str
    pid: int
    started: int
    age_s: float


class GroupNetworks:
    """Group networks with their state under ``root`` (the runner's: ``<data_dir>/network/groups``)."""

    def __init__(self, root: Path, cni_path: tuple[str, ...]) -> None:
        self.root = root
        self.cni_path = cni_path

    def _state_file(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _save(self, name: str, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f"{name}.json.tmp"
        temp.write_text(json.dumps(state))
        os.replace(temp, self._state_file(name))

    def create(
        self, name: str, conf: NetworkConf | None, ports: Sequence[GroupPort], owner: int | None = None
    ) -> GroupNetwork:
        """The namespace ``name`` with ``conf`` ADDed on eth0 and the ports mapped (``conf`` None: only ``lo``).
        On any failure, whatever was made is removed again before the error goes up."""
        if conf is not None:  # a missing plugin binary fails before anything is made
            kinds = tuple(dict.fromkeys(str(p["type"]) for p in conf.plugins))
            missing = [k for k in kinds if k not in cni.find_plugins(self.cni_path, kinds)]
            if missing:
                raise cni.PluginMissing(
                    f'network "{conf.name}" needs the CNI plugins {", ".join(missing)}, not found in '
                    f"{', '.join(self.cni_path)} (the plugin config's cni_path); {cni.INSTALL_HINT}"
                )
        runtime_config: dict[str, Any] = {}
        if conf is not None and ports and conf.takes_ports:
            runtime_config["portMappings"] = port_mappings(ports)
        pid = os.getpid() if owner is None else owner
        state: dict[str, Any] = {
            "netns": name,
            "pid": pid,
            "started": procs.start_time(pid) or 0,
            "conf": conf.to_json() if conf is not None else None,
            "ifname": IFNAME,
            "runtime_config": runtime_config,
            "added": False,
            "result": None,
        }
        self._save(name, state)  # before anything is made: a later teardown needs it
        try:
            path = netns.create(name)
            if conf is None:
                return GroupNetwork(name, path)
            call = cni.Invocation(name, path, IFNAME, self.cni_path)
            state["added"] = True
            self._save(name, state)
            state["result"] = cni.add_list(conf.name, conf.cni_version, conf.plugins, call, runtime_config)
            self._save(name, state)
            return GroupNetwork(name, path, cni.first_address(state["result"], 4))
        except BaseException:
            try:
                self.destroy(name)
            except Exception:
                log.exception("group network rollback failed", extra={"netns": name})
            raise

    def destroy(self, name: str) -> None:
        """CNI DEL (same config and result, namespace present), then the namespace and the state; idempotent.
        A failed DEL keeps the namespace and the state for a retry, and raises FailedPrecondition."""
        try:
            state: dict[str, Any] = json.loads(self._state_file(name).read_text())
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError):
            state = {}  # unreadable: the namespace at least can go
        path = netns.path_of(name) if netns.exists(name) else ""
        if state.get("added") and state.get("conf"):
            conf = NetworkConf.from_json(state["conf"])
            call = cni.Invocation(name, path, str(state.get("ifname") or IFNAME), self.cni_path)
            try:
                cni.del_list(
                    conf.name, conf.cni_version, conf.plugins, call, state.get("runtime_config") or {}, state["result"]
                )
            except cni.PluginFailed as exc:
                raise FailedPrecondition(
                    f"group network {name}: CNI DEL failed, namespace and state kept for a retry: {exc}",
                    recoverable=True,
                ) from None
        netns.delete(name)
        self._state_file(name).unlink(missing_ok=True)

    def states(self, now: float | None = None) -> list[GroupState]:
        """Every group network with a state file here: its owner's pid and start time, and its age."""
        now = time.time() if now is None else now
        found: list[GroupState] = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                pid, started = int(raw.get("pid") or 0), int(raw.get("started") or 0)
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue  # torn down meanwhile
            except (OSError, ValueError, AttributeError, TypeError):
                pid, started, age = 0, 0, 0.0
                with contextlib.suppress(OSError):
                    age = now - path.stat().st_mtime
            found.append(GroupState(path.name[: -len(".json")], pid, started, age))
        return found

    def stale(self) -> list[str]:
        """Group networks whose owning process is gone (a runner killed with SIGKILL); pid and start
        time are compared, so a reused pid does not keep a network."""
        return [s.name for s in self.states() if not procs.alive(s.pid, s.started)]
