"""Nomad's group network as the runner makes it: the builtin bridge conflist, the port mappings,
the NOMAD_* port env of a bridge-mode task, and the job file's network modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nomad_rkt_driver.cli.env import task_env
from nomad_rkt_driver.cli.jobfile import JobFileError, load_job
from nomad_rkt_driver.cli.ports import Allocated
from nomad_rkt_driver.cli.run import Runner, RunningTask, client_bridge
from nomad_rkt_driver.network import cni
from nomad_rkt_driver.network.group import (
    BridgeSettings,
    GroupNetworks,
    GroupPort,
    admin_rule,
    nomad_bridge,
    port_mappings,
)

JOBS = Path(__file__).resolve().parents[3] / "jobs"


def test_nomad_bridge_conflist_is_nomads_builtin_one() -> None:
    conf = nomad_bridge()
    assert (conf.name, conf.cni_version) == ("nomad", "0.4.0")
    assert [p["type"] for p in conf.plugins] == ["loopback", "bridge", "firewall", "portmap"]
    bridge = conf.plugins[1]
    assert bridge["bridge"] == "nomad"
    assert bridge["ipMasq"] is True and bridge["isGateway"] is True and bridge["forceAddress"] is True
    assert bridge["hairpinMode"] is False
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "172.26.64.0/20"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert conf.plugins[2] == {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": "NOMAD-ADMIN"}
    assert conf.plugins[3] == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def test_nomad_bridge_takes_the_clients_bridge_settings() -> None:
    conf = nomad_bridge(BridgeSettings("br-test", "10.9.8.0/24", hairpin=True))
    bridge = conf.plugins[1]
    assert (bridge["bridge"], bridge["hairpinMode"]) == ("br-test", True)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.9.8.0/24"}]]
    rule = admin_rule(BridgeSettings("br-test", "10.9.8.0/24"))
    assert rule == ["-o", "br-test", "-d", "10.9.8.0/24", "-j", "ACCEPT"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (BridgeSettings(name="a-name-longer-than-15"), "bridge_network_name"),
        (BridgeSettings(name=""), "bridge_network_name"),
        (BridgeSettings(subnet="10.0.0.0/33"), "bridge_network_subnet"),
        (BridgeSettings(subnet="fd00::/64"), "bridge_network_subnet"),
    ],
)
def test_bad_bridge_settings_are_refused_naming_the_setting(settings: BridgeSettings, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        settings.check("plugin.hcl: client")


def test_every_group_port_is_mapped_for_tcp_and_udp_onto_its_to() -> None:
    mappings = port_mappings(
        [GroupPort("http", 23456, 8080, "127.0.0.1"), GroupPort("dns", 25353, 0, ""), GroupPort("x", 24000, -1, "")]
    )
    assert mappings == [
        {"hostPort": 23456, "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 23456, "containerPort": 8080, "protocol": "udp", "hostIP": "127.0.0.1"},
        {"hostPort": 25353, "containerPort": 25353, "protocol": "tcp"},  # to unset: the same number
        {"hostPort": 25353, "containerPort": 25353, "protocol": "udp"},
        {"hostPort": 24000, "containerPort": 24000, "protocol": "tcp"},  # to = -1 as well
        {"hostPort": 24000, "containerPort": 24000, "protocol": "udp"},
    ]


def _job(tmp_path: Path, network: str, task_config: str = "") -> Path:
    path = tmp_path / "job.nomad.hcl"
    path.write_text(
        f'job "j" {{\n group "g" {{\n  network {{\n{network}\n  }}\n'
        f'  task "t" {{\n   driver = "rkt"\n   config {{\n    image = "busybox"\n{task_config}\n   }}\n  }}\n }}\n}}\n'
    )
    return path


def test_bridge_mode_port_env_is_nomads(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, '   mode = "bridge"\n   port "http" {\n    to = 8080\n   }\n   port "raw" {}'))
    (group,) = job.groups
    assert group.network_mode == "bridge" and group.own_netns
    ports = (Allocated("http", 23456, 8080, "127.0.0.1"), Allocated("raw", 24567, 0, "127.0.0.1"))
    env = task_env(job, group, group.tasks[0], "a1", ports)
    assert env["NOMAD_PORT_http"] == env["NOMAD_ALLOC_PORT_http"] == "8080"  # inside the namespace
    assert env["NOMAD_HOST_PORT_http"] == "23456"
    assert env["NOMAD_IP_http"] == env["NOMAD_HOST_IP_http"] == "127.0.0.1"
    assert env["NOMAD_ADDR_http"] == env["NOMAD_HOST_ADDR_http"] == "127.0.0.1:23456"
    assert env["NOMAD_PORT_raw"] == env["NOMAD_HOST_PORT_raw"] == "24567"  # no to: the host value


@pytest.mark.parametrize("mode", ["host", "bridge", "none", "cni/mynet"])
def test_nomads_network_modes_are_accepted(tmp_path: Path, mode: str) -> None:
    (group,) = load_job(_job(tmp_path, f'   mode = "{mode}"')).groups
    assert group.network_mode == mode
    assert group.own_netns is (mode != "host")


@pytest.mark.parametrize("mode", ["tap", "cni/", "container:web"])
def test_an_unknown_network_mode_is_refused_naming_the_group_and_the_modes(tmp_path: Path, mode: str) -> None:
    with pytest.raises(JobFileError, match=r'group "g": network mode ".*" is not supported; use one of host'):
        load_job(_job(tmp_path, f'   mode = "{mode}"'))


def test_none_mode_with_ports_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match='network mode "none" has no network to forward ports to'):
        load_job(_job(tmp_path, '   mode = "none"\n   port "http" {}'))


def test_a_task_net_in_a_group_namespace_is_refused_naming_the_task(tmp_path: Path) -> None:
    job = _job(tmp_path, '   mode = "bridge"', '    net = ["default"]')
    with pytest.raises(JobFileError, match=r'task "t": config net = .* the group\'s network mode is "bridge"'):
        load_job(job)
    # In host mode (the default) the task picks its networks itself.
    load_job(_job(tmp_path, '   port "http" {}', '    net = ["default"]'))


def test_the_bridge_example_is_nomads_group_bridge_with_two_tasks() -> None:
    job = load_job(JOBS / "bridge.nomad.hcl")
    (group,) = job.groups
    assert group.network_mode == "bridge"
    assert [(p.label, p.to) for p in group.ports] == [("http", 8080)]
    assert [t.name for t in group.tasks] == ["httpd", "probe"]
    assert all("net" not in t.config and "port_map" not in t.config for t in group.tasks)


def test_client_bridge_settings_come_from_the_agent_config_file(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.hcl"
    plugin.write_text('plugin "rkt" {\n  config {}\n}\n')
    assert client_bridge(plugin) == BridgeSettings()
    plugin.write_text(
        'client {\n  bridge_network_name = "br0"\n  bridge_network_subnet = "10.1.2.0/24"\n'
        "  bridge_network_hairpin_mode = true\n}\n" + plugin.read_text()
    )
    assert client_bridge(plugin) == BridgeSettings("br0", "10.1.2.0/24", True)
    plugin.write_text('client {\n  bridge_network_subnet = "nonsense"\n}\n')
    with pytest.raises(JobFileError, match="bridge_network_subnet"):
        client_bridge(plugin)


def test_each_group_namespace_is_named_after_the_allocation(tmp_path: Path) -> None:
    path = tmp_path / "two.nomad.hcl"
    group = (
        '  group "{0}" {{\n   network {{\n    mode = "{1}"\n   }}\n   task "t" {{\n    driver = "rkt"\n   }}\n  }}\n'
    )
    path.write_text(
        'job "j" {\n' + group.format("a", "bridge") + group.format("b", "host") + group.format("c", "none") + "}\n"
    )
    job = load_job(path)
    runner = Runner(job, tmp_path, {"data_dir": str(tmp_path / "data")})
    groups = list(job.groups)
    assert runner.netns_name(groups, groups[0]) == f"{runner.alloc_id}-0"
    assert runner.netns_name(groups, groups[2]) == f"{runner.alloc_id}-1"
    single = load_job(_job(tmp_path, '   mode = "bridge"'))
    alone = Runner(single, tmp_path, {"data_dir": str(tmp_path / "data")})
    assert alone.netns_name(list(single.groups), single.groups[0]) == alone.alloc_id  # Nomad's /var/run/netns/<id>


def test_an_unknown_cni_mode_network_is_refused_listing_the_known_ones(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, '   mode = "cni/nope"'))
    runner = Runner(job, tmp_path, {"data_dir": str(tmp_path / "data"), "cni_config_dir": str(JOBS / "cni")})
    with pytest.raises(JobFileError, match=r'no CNI network named "nope" in .*known there: bridge-net'):
        runner.group_confs(list(job.groups))
    named = load_job(_job(tmp_path, '   mode = "cni/bridge-net"'))
    runner = Runner(named, tmp_path, {"data_dir": str(tmp_path / "data"), "cni_config_dir": str(JOBS / "cni")})
    conf = runner.group_confs(list(named.groups))["g"]
    assert conf is not None and conf.source.endswith("bridge-net.conflist")


def test_a_failed_add_leaves_no_state_and_stale_networks_are_found(tmp_path: Path) -> None:
    networks = GroupNetworks(tmp_path / "groups", (str(tmp_path / "no-plugins"),))
    name = f"nrd-unit-{os.getpid()}"
    with pytest.raises(cni.PluginMissing, match="needs the CNI plugins loopback, bridge, firewall, portmap"):
        networks.create(name, nomad_bridge(), [])
    assert not (tmp_path / "groups" / f"{name}.json").exists()
    assert not Path(f"/run/netns/{name}").exists()
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "dead.json").write_text('{"netns": "dead", "pid": 999999999}')
    (tmp_path / "groups" / "mine.json").write_text(f'{{"netns": "mine", "pid": {os.getpid()}}}')
    assert networks.stale() == ["dead"]


def test_a_failed_add_is_rolled_back_with_del_and_the_namespace_removed(tmp_path: Path) -> None:
    """Stand-in plugins: bridge fails ADD, every DEL succeeds and is logged; the namespace must go."""
    plugins = tmp_path / "cni"
    plugins.mkdir()
    calls = tmp_path / "calls"
    for kind in ("loopback", "bridge", "firewall", "portmap"):
        fail = 'echo \'{"code": 11, "msg": "no bridge today"}\'; exit 1' if kind == "bridge" else "echo '{}'"
        script = plugins / kind
        script.write_text(
            f'#!/bin/sh\ncat >/dev/null\necho "$CNI_COMMAND {kind} $CNI_NETNS" >> {calls}\n'
            f'if [ "$CNI_COMMAND" = ADD ]; then {fail}; fi\n'
        )
        script.chmod(0o755)
    networks = GroupNetworks(tmp_path / "groups", (str(plugins),))
    name = f"nrd-unit-rb-{os.getpid()}"
    try:
        with pytest.raises(cni.PluginFailed, match="no bridge today"):
            networks.create(name, nomad_bridge(), [GroupPort("http", 23456, 8080, "127.0.0.1")])
        assert not Path(f"/run/netns/{name}").exists()
        assert not (tmp_path / "groups" / f"{name}.json").exists()
        lines = calls.read_text().splitlines()
        assert [line.split()[:2] for line in lines] == [
            ["ADD", "loopback"],
            ["ADD", "bridge"],
            ["DEL", "portmap"],
            ["DEL", "firewall"],
            ["DEL", "bridge"],
            ["DEL", "loopback"],
        ]
        assert all(line.endswith(f"/run/netns/{name}") for line in lines)  # DEL while the namespace exists
    finally:
        if Path(f"/run/netns/{name}").exists():
            os.system(f"ip netns delete {name}")


def test_port_map_in_a_group_namespace_is_ignored_with_a_warning_naming_the_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port_map = '    port_map {\n     http = "8080-tcp"\n    }'
    job = load_job(_job(tmp_path, '   mode = "bridge"\n   port "http" {}', port_map))
    (group,) = job.groups
    runner = Runner(job, tmp_path, {"data_dir": str(tmp_path / "data")})
    runner.warn_ignored_ports(RunningTask(group.tasks[0], group, group.tasks[0].config, {}))
    warning = capsys.readouterr().err
    assert 't: warning: port_map/ports (http) are ignored in network mode "bridge"' in warning
    assert "to its `to`" in warning
    host = load_job(_job(tmp_path, '   port "http" {}', port_map))
    runner.warn_ignored_ports(RunningTask(host.groups[0].tasks[0], host.groups[0], host.groups[0].tasks[0].config, {}))
    assert capsys.readouterr().err == ""  # host mode: the plugin forwards port_map itself
