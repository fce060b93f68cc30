"""The floor of bench/network: a pod network made by hand, with no code of the driver.

A namespace with ``ip netns add`` (``lo`` up; IPv6 DAD off in it when asked, as the driver does),
then each plugin of a conflist run as the CNI spec says: ``CNI_COMMAND``/``CNI_CONTAINERID``/
``CNI_NETNS``/``CNI_IFNAME``/``CNI_PATH`` in the environment, the plugin's config on stdin (with the
network's name and version, ``runtimeConfig`` for plugins that declare the capability and the
previous result), ADD in order, DEL in reverse with the ADD result; then ``ip netns delete``.
This is what any CNI runtime has to do at the least, so it is what the driver is measured against.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any


class CniError(Exception):
    """A plugin or ``ip`` failed."""


def _run(*cmd: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CniError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def rkt_default(name: str, subnet: str, ipam_dir: str, subnet6: str = "") -> dict[str, Any]:
    """rkt's default network (ptp + host-local + ipMasq, then portmap), written out by hand."""
    ipam: dict[str, Any] = {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}]}
    if subnet6:
        ipam = {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}], [{"subnet": subnet6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        }
    ipam["dataDir"] = ipam_dir
    return {
        "name": name,
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "ptp", "ipMasq": True, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


@dataclass
class BarePod:
    """One pod network made by hand: its namespace, conflist, runtime config and ADD result."""

    netns: str
    container_id: str
    conflist: dict[str, Any]
    runtime_config: dict[str, Any]
    cni_path: str = "/usr/lib/cni"
    ifname: str = "eth0"
    result: dict[str, Any] | None = None

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def _call(self, command: str, plugin: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        config = {**plugin, "name": self.conflist["name"], "cniVersion": self.conflist["cniVersion"]}
        caps = plugin.get("capabilities") or {}
        granted = {k: v for k, v in self.runtime_config.items() if caps.get(k)}
        if granted:
            config["runtimeConfig"] = granted
        if prev is not None:
            config["prevResult"] = prev
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns_path,
            "CNI_IFNAME": self.ifname,
            "CNI_PATH": self.cni_path,
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        done = subprocess.run(
            [os.path.join(self.cni_path, plugin["type"])],
            input=json.dumps(config).encode(),
            env=env,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise CniError(f"{plugin['type']} {command}: {done.stdout.decode()} {done.stderr.decode()}".strip())
        answer: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        return answer

    def up(self, no_dad: bool = False) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")
        if no_dad:
            _run(
                "nsenter",
                f"--net={self.netns_path}",
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0",
            )
        result: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            result = self._call("ADD", plugin, result)
        self.result = result

    def down(self) -> None:
        for plugin in reversed(self.conflist["plugins"]):
            self._call("DEL", plugin, self.result)
        _run("ip", "netns", "delete", self.netns)

    def address(self, version: int = 4) -> str:
        for entry in (self.result or {}).get("ips") or []:
            address = str(entry["address"]).split("/")[0]
            if (":" in address) == (version == 6):
                return address
        return ""
