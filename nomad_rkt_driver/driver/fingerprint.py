"""The driver's health on this host, as Nomad's fingerprint wants it.

There are three outcomes: UNDETECTED when a part the driver cannot work without is missing
(runc, conmon, the CNI plugins), UNHEALTHY when the parts exist but the host cannot run pods
(not root, cgroups unusable, data dir unwritable), HEALTHY otherwise.
"""

from __future__ import annotations

import os

from nomad_rkt_driver import PLUGIN_NAME
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.network.cni import REQUIRED_PLUGINS, find_plugins
from nomad_rkt_driver.runtime.probe import cgroups, find_tool
from nomad_rkt_driver.types import Fingerprint, Health

_PREFIX = f"driver.{PLUGIN_NAME}"


def probe(config: PluginConfig, plugin_version: str) -> Fingerprint:
    """Check the host against ``config`` and describe the result (blocking: runs --version)."""
    attrs: dict[str, str | int | float | bool] = {f"{_PREFIX}.version": plugin_version}

    runtime = find_tool(config.runtime)
    if runtime is None:
        return Fingerprint(
            Health.UNDETECTED,
            f'OCI runtime "{config.runtime}" not found: install runc '
            '(apt-get install runc) or set runtime = "/path/to/runc" in the plugin config',
            attrs,
        )
    attrs[f"{_PREFIX}.runtime"] = os.path.basename(runtime.path)
    attrs[f"{_PREFIX}.runtime.version"] = runtime.version

    conmon = find_tool(config.conmon)
    if conmon is None:
        return Fingerprint(
            Health.UNDETECTED,
            f'monitor "{config.conmon}" not found: install conmon '
            '(apt-get install conmon) or set conmon = "/path/to/conmon" in the plugin config',
            attrs,
        )
    attrs[f"{_PREFIX}.conmon.version"] = conmon.version

    plugins = find_plugins(config.cni_path)
    missing = [name for name in REQUIRED_PLUGINS if name not in plugins]
    if missing:
        return Fingerprint(
            Health.UNDETECTED,
            f"CNI plugins {', '.join(missing)} not found in "
            f"{', '.join(config.cni_path)}: install containernetworking-plugins or set cni_path "
            "in the plugin config",
            attrs,
        )

    if os.geteuid() != 0:
        return Fingerprint(
            Health.UNHEALTHY,
            "the rkt driver must run as root (pods need namespaces, cgroups and iptables): run the Nomad agent as root",
            attrs,
        )
    groups = cgroups()
    attrs[f"{_PREFIX}.cgroup.version"] = groups.version
    if groups.problem:
        return Fingerprint(Health.UNHEALTHY, groups.problem, attrs)
    problem = _data_dir_problem(config.data_dir)
    if problem:
        return Fingerprint(Health.UNHEALTHY, problem, attrs)
    return Fingerprint(Health.HEALTHY, "Healthy", attrs)


def _data_dir_problem(path: str) -> str:
    try:
        os.makedirs(path, mode=0o711, exist_ok=True)
    except OSError as exc:
        return f"data_dir {path} cannot be created ({exc.strerror}); set data_dir to a writable local directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"data_dir {path} is not writable; set data_dir to a writable local directory"
    return ""
