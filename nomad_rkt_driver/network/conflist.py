"""CNI network configuration lists: the builtin ``default`` network and named ``*.conflist`` files.

* ``default`` is rkt's: ``ptp`` with ``ipMasq`` and ``host-local`` IPAM on a configurable subnet
  (rkt's ``172.16.28.0/24`` by default) with a default route, followed by ``portmap`` for port
  forwarding. With an IPv6 subnet too (plugin option ``default_network_subnet6``) host-local gets
  two ranges, one per family, and a ``::/0`` route: the pod is dual-stack. A file in the conf dir
  whose network is named ``default`` replaces it (rkt lets user confs override builtins of the
  same name).
* Named networks come from ``<conf dir>/*.conflist`` (and single-plugin ``*.conf``) files, keyed
  by their ``name`` field. An unknown name is an error listing the known ones; a file that does not
  parse is an error naming the file, when the job asks for it (or asks for a name no good file has).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidConfig

DEFAULT_NETWORK: Final = "default"
DEFAULT_SUBNET: Final = "172.16.28.0/24"
CNI_VERSION: Final = "1.0.0"


@dataclass(frozen=True)
class NetworkConf:
    """One CNI network: its name, CNI version and plugin configs (in ADD order)."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str  # the file it came from, or "builtin"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cniVersion": self.cni_version, "plugins": list(self.plugins), "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkConf:
        return cls(str(data["name"]), str(data["cniVersion"]), tuple(data["plugins"]), str(data.get("source", "")))

    @property
    def takes_ports(self) -> bool:
        """Whether a plugin of this network forwards ports (declares the portMappings capability)."""
        return any(
            isinstance(p.get("capabilities"), dict) and p["capabilities"].get("portMappings") for p in self.plugins
        )


def default_network(subnet: str, ipam_dir: str, subnet6: str = "") -> NetworkConf:
    """rkt's default network: ptp + host-local (leases under ``ipam_dir``) + ipMasq, then portmap;
    dual-stack when ``subnet6`` is given."""
    ipaddress.IPv4Network(subnet)  # validated by the plugin config already; fail loudly if not
    ipam: dict[str, Any] = {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}]}
    if subnet6:
        ipaddress.IPv6Network(subnet6)
        ipam = {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}], [{"subnet": subnet6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        }
    ipam["dataDir"] = ipam_dir
    ptp = {"type": "ptp", "ipMasq": True, "ipam": ipam}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    return NetworkConf(DEFAULT_NETWORK, CNI_VERSION, (ptp, portmap), "builtin")


def parse(text: str, source: str) -> NetworkConf:
    """A conflist (``{"name", "cniVersion", "plugins": [...]}``) or a single-plugin conf; ValueError if bad."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('has no "name"')
    version = data.get("cniVersion", "0.4.0")
    if not isinstance(version, str):
        raise ValueError('"cniVersion" is not a string')
    if "plugins" in data:
        plugins = data["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ValueError('"plugins" must be a non-empty list')
    elif "type" in data:
        plugins = [{k: v for k, v in data.items() if k not in ("name", "cniVersion")}]
    else:
        raise ValueError('has neither "plugins" nor "type"')
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
            raise ValueError(f'plugins[{index}] has no "type"')
    return NetworkConf(name, version, tuple(plugins), source)


@dataclass(frozen=True)
class ConfDir:
    """What a conf dir holds: good networks by name, and the files that did not parse."""

    networks: dict[str, NetworkConf]
    broken: dict[str, str]  # file path → problem


def scan(conf_dir: str) -> ConfDir:
    """Read every ``*.conflist`` / ``*.conf`` in ``conf_dir`` (lexical order; the first of a name wins)."""
    networks: dict[str, NetworkConf] = {}
    broken: dict[str, str] = {}
    directory = Path(conf_dir)
    if not directory.is_dir():
        return ConfDir(networks, broken)
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".conflist", ".conf") or not path.is_file():
            continue
        try:
            conf = parse(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            broken[str(path)] = str(exc)
            continue
        networks.setdefault(conf.name, conf)
    return ConfDir(networks, broken)


def _v6_text(value: object) -> bool:
    if not isinstance(value, str) or ":" not in value:
        return False
    try:
        return ipaddress.ip_interface(value).version == 6
    except ValueError:
        return False


def _mentions_v6(value: object) -> bool:
    if isinstance(value, dict):
        return any(_mentions_v6(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_v6(v) for v in value)
    return _v6_text(value)


def wants_ipv6(conf: NetworkConf) -> bool:
    """Whether a network gives pods IPv6: an IPv6 subnet, range, address or route in a plugin's IPAM."""
    return any(_mentions_v6(p.get("ipam")) for p in conf.plugins)


def select(
    names: tuple[str, ...], conf_dir: str, subnet: str, ipam_dir: str, where: str, subnet6: str = ""
) -> tuple[NetworkConf, ...]:
    """The networks a job names, in its order; InvalidConfig for unknown names or broken files."""
    found = scan(conf_dir)
    chosen: list[NetworkConf] = []
    for name in names:
        for path, problem in found.broken.items():
            if Path(path).stem == name:
                raise InvalidConfig(where, "net", f'network "{name}": {path} is not a usable CNI conflist: {problem}')
        conf = found.networks.get(name)
        if conf is None and name == DEFAULT_NETWORK:
            conf = default_network(subnet, ipam_dir, subnet6)
        if conf is None:
            known = sorted({DEFAULT_NETWORK, "host", "none", *found.networks})
            problem = f'network "{name}" is not known; known networks: {", ".join(known)} (CNI confs in {conf_dir})'
            if found.broken:
                problem += "; unreadable files there: " + "; ".join(f"{p}: {e}" for p, e in found.broken.items())
            raise InvalidConfig(where, "net", problem)
        chosen.append(conf)
    return tuple(chosen)
