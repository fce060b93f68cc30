"""Fingerprint outcomes against the real binaries this host has (CI installs them)."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.driver.fingerprint import probe
from nomad_rkt_driver.runtime.probe import cgroups, find_tool
from nomad_rkt_driver.types import Health


@pytest.fixture
def config(tmp_path: Path) -> PluginConfig:
    return PluginConfig(data_dir=str(tmp_path / "data"))


def test_runc_conmon_and_cni_are_installed() -> None:
    # In CI a missing dependency is a failure, never a skip: .ci/run installs them.
    assert shutil.which("runc"), "runc is not installed (apt-get install runc)"
    assert shutil.which("conmon"), "conmon is not installed (apt-get install conmon)"
    assert os.path.isfile("/usr/lib/cni/portmap"), "install containernetworking-plugins"


def test_healthy_host(config: PluginConfig) -> None:
    fp = probe(config, "0.1.0")
    assert fp.health is Health.HEALTHY, fp.description
    assert fp.attributes["driver.rkt.version"] == "0.1.0"
    assert str(fp.attributes["driver.rkt.runtime.version"]).startswith("1.")
    assert fp.attributes["driver.rkt.conmon.version"]
    assert fp.attributes["driver.rkt.cgroup.version"] in (1, 2)
    assert os.path.isdir(config.data_dir)


def test_missing_runtime_is_undetected_and_says_how_to_fix(config: PluginConfig) -> None:
    fp = probe(replace(config, runtime="/nonexistent/runc"), "0.1.0")
    assert fp.health is Health.UNDETECTED
    assert "/nonexistent/runc" in fp.description and "apt-get install runc" in fp.description


def test_missing_conmon_is_undetected(config: PluginConfig) -> None:
    fp = probe(replace(config, conmon="no-such-conmon"), "0.1.0")
    assert fp.health is Health.UNDETECTED and "conmon" in fp.description


def test_missing_cni_plugins_are_named(config: PluginConfig, tmp_path: Path) -> None:
    partial = tmp_path / "cni"
    partial.mkdir()
    for name in ("ptp", "bridge"):
        os.symlink(f"/usr/lib/cni/{name}", partial / name)
    fp = probe(replace(config, cni_path=(str(partial),)), "0.1.0")
    assert fp.health is Health.UNDETECTED
    assert "host-local, portmap" in fp.description and str(partial) in fp.description


def test_unwritable_data_dir_is_unhealthy(config: PluginConfig, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    fp = probe(replace(config, data_dir=str(blocker / "below")), "0.1.0")
    assert fp.health is Health.UNHEALTHY and "data_dir" in fp.description


def test_tool_versions_are_read() -> None:
    runc = find_tool("runc")
    assert runc is not None and runc.path.startswith("/") and runc.version[0].isdigit()
    assert find_tool("/nonexistent/x") is None


def test_cgroup_v2_tree_is_recognised(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    assert cgroups(str(tmp_path)).version == 2 and not cgroups(str(tmp_path)).problem


def test_cgroup_v1_without_memory_is_a_problem(tmp_path: Path) -> None:
    for name in ("cpu", "cpuacct", "pids"):
        (tmp_path / name).mkdir()
    result = cgroups(str(tmp_path))
    assert result.version == 0 and "memory" in result.problem


def test_this_hosts_cgroups_are_usable() -> None:
    assert not cgroups().problem


def test_not_root_is_unhealthy(config: PluginConfig) -> None:
    # A real unprivileged process: fork, drop to nobody, probe, report back through a pipe.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            fp = probe(config, "0.1.0")
            os.write(write_end, f"{fp.health.name}|{fp.description}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged probe crashed"
    health, description = answer.split("|", 1)
    assert health == "UNHEALTHY" and "root" in description
