"""Running the reference CNI plugins (the CNI spec's exec protocol), and locating them.

A plugin is an executable named by its ``type``, found in the ``cni_path`` directories; it gets
``CNI_COMMAND``/``CNI_CONTAINERID``/``CNI_NETNS``/``CNI_IFNAME``/``CNI_PATH`` in its environment and
its network config on stdin, and answers a JSON result (ADD) or nothing (DEL) on stdout, or a
JSON error and a non-zero exit. A conflist's plugins are ADDed in order, each getting the previous
one's result as ``prevResult``, and DELeted in reverse order with the final ADD result, as libcni
does. ``runtimeConfig`` (e.g. ``portMappings``) goes only to plugins that declare the capability.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nomad_rkt_driver.errors import FailedPrecondition

# default network: ptp + host-local IPAM; port forwarding: portmap; rkt's other default: bridge.
REQUIRED_PLUGINS: Final = ("ptp", "bridge", "host-local", "portmap")
PLUGIN_TIMEOUT_S: Final = 60.0
INSTALL_HINT: Final = "install the reference CNI plugins (apt-get install containernetworking-plugins)"
_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_plugins(search_dirs: tuple[str, ...], names: tuple[str, ...] = REQUIRED_PLUGINS) -> dict[str, str]:
    """Map each plugin name to the first executable found in ``search_dirs`` (missing ones are absent)."""
    found: dict[str, str] = {}
    for name in names:
        for directory in search_dirs:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                found[name] = path
                break
    return found


class PluginMissing(FailedPrecondition):
    """A network needs a CNI plugin that is not in any ``cni_path`` directory (installing it fixes it)."""

    recoverable = True


class PluginFailed(FailedPrecondition):
    """A CNI plugin answered an error; the message carries its code, text and details."""


@dataclass(frozen=True)
class Invocation:
    """Who a plugin call is for: the pod (container id), its netns, the interface, where plugins are."""

    container_id: str
    netns: str
    ifname: str
    cni_path: tuple[str, ...]


def plugin_config(
    name: str,
    cni_version: str,
    plugin: Mapping[str, Any],
    runtime_config: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The stdin of one plugin of a conflist."""
    config = dict(plugin)
    config["name"] = name
    config["cniVersion"] = cni_version
    capabilities = plugin.get("capabilities") or {}
    granted = {k: v for k, v in runtime_config.items() if isinstance(capabilities, dict) and capabilities.get(k)}
    if granted:
        config["runtimeConfig"] = granted
    if prev_result is not None:
        config["prevResult"] = prev_result
    return config


def _locate(kind: str, cni_path: tuple[str, ...], network: str) -> str:
    found = find_plugins(cni_path, (kind,))
    if kind not in found:
        raise PluginMissing(
            f'network "{network}" needs the CNI plugin "{kind}", which is in none of '
            f"{', '.join(cni_path)} (the plugin config's cni_path); {INSTALL_HINT}"
        )
    return found[kind]


def invoke(command: str, config: Mapping[str, Any], call: Invocation, network: str) -> dict[str, Any]:
    """Run one plugin; its parsed result (``{}`` for an empty answer); PluginFailed on a CNI error."""
    kind = str(config["type"])
    path = _locate(kind, call.cni_path, network)
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": call.container_id,
        "CNI_NETNS": call.netns,
        "CNI_IFNAME": call.ifname,
        "CNI_PATH": os.pathsep.join(call.cni_path),
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
    }
    try:
        done = subprocess.run(
            [path],
            input=json.dumps(config).encode(),
            env=env,
            capture_output=True,
            timeout=PLUGIN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PluginFailed(
            f'CNI plugin "{kind}" ({command}, network "{network}") did not answer within {PLUGIN_TIMEOUT_S:.0f}s',
            recoverable=True,
        ) from None
    answer = _parse(done.stdout)
    if done.returncode != 0:
        detail = answer.get("msg") or done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        extra = answer.get("details")
        text = f"{detail}: {extra}" if extra else str(detail)
        raise PluginFailed(f'CNI plugin "{kind}" {command} on network "{network}" ({call.ifname}) failed: {text}')
    return answer


def _parse(stdout: bytes) -> dict[str, Any]:
    if not stdout.strip():
        return {}
    try:
        data = json.loads(stdout)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"msg": stdout.decode(errors="replace").strip()}
    return data if isinstance(data, dict) else {}


def add_list(
    name: str,
    cni_version: str,
    plugins: tuple[Mapping[str, Any], ...],
    call: Invocation,
    runtime_config: Mapping[str, Any],
) -> dict[str, Any]:
    """ADD every plugin in order, chaining results; the final result."""
    for plugin in plugins:  # fail before touching anything when a plugin binary is missing
        _locate(str(plugin["type"]), call.cni_path, name)
    result: dict[str, Any] | None = None
    for plugin in plugins:
        config = plugin_config(name, cni_version, plugin, runtime_config, result)
        result = invoke("ADD", config, call, name)
    return result or {}


def first_address(result: dict[str, Any], version: int) -> str:
    """The first IPv``version`` address (without prefix length) of a CNI result; "" when none."""
    for entry in result.get("ips") or []:
        address = str(entry.get("address", "")).split("/")[0]
        if address and (":" in address) == (version == 6):
            return address
    return ""


def _has_prev_result(cni_version: str) -> bool:
    parts = cni_version.split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (0, 4)
    except (ValueError, IndexError):
        return False


def del_list(
    name: str,
    cni_version: str,
    plugins: tuple[Mapping[str, Any], ...],
    call: Invocation,
    runtime_config: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None,
) -> None:
    """DEL every plugin in reverse order (all of them even if one fails; the first error is raised)."""
    first: PluginFailed | None = None
    previous = prev_result if prev_result and _has_prev_result(cni_version) else None
    for plugin in reversed(plugins):
        config = plugin_config(name, cni_version, plugin, runtime_config, previous)
        try:
            invoke("DEL", config, call, name)
        except PluginFailed as exc:
            first = first or exc
    if first is not None:
        raise first
