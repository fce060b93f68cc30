"""IPv6: the dual-stack default network, which networks want IPv6, host checks, hosts entries,
the address Nomad gets, and the plugin option's validation (pure parts; the real plugins run in
tests/integration/network/test_ipv6.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from nomad_rkt_driver.config.decode import decode_msgpack
from nomad_rkt_driver.config.fields import settings
from nomad_rkt_driver.config.plugin import WHERE, PluginConfig
from nomad_rkt_driver.errors import FailedPrecondition, InvalidConfig
from nomad_rkt_driver.network import cni, conflist, netns
from nomad_rkt_driver.network.attach import NetworkRequest, PodNetworks
from nomad_rkt_driver.network.dns import hosts
from nomad_rkt_driver.network.ports import PortForward

W = "rkt task config"


def plugin_config(**values: object) -> PluginConfig:
    body: dict[str, object] = {s.name: None for s in settings(PluginConfig)}
    body.update(values)
    return decode_msgpack(PluginConfig, msgpack.packb(body), WHERE)


def test_subnet6_is_off_by_default_and_validated() -> None:
    assert plugin_config().default_network_subnet6 == ""
    assert plugin_config(default_network_subnet6="fd52:6b74::/64").default_network_subnet6 == "fd52:6b74::/64"
    for bad, needle in (
        ("10.0.0.0/24", "not an IPv6 subnet"),
        ("fd52::/126", "too small"),
        ("fe80::/64", "not usable"),
        ("fd52::1/64", "not an IPv6 subnet"),  # host bits set
    ):
        with pytest.raises(InvalidConfig, match=needle) as caught:
            plugin_config(default_network_subnet6=bad)
        assert "default_network_subnet6" in str(caught.value)


def test_default_network_is_dual_stack_only_when_asked() -> None:
    v4 = conflist.default_network("10.250.9.0/24", "/x/ipam")
    assert "subnet" in v4.plugins[0]["ipam"] and not conflist.wants_ipv6(v4)
    dual = conflist.default_network("10.250.9.0/24", "/x/ipam", "fd52:6b74::/64")
    assert dual.plugins[0]["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.250.9.0/24"}], [{"subnet": "fd52:6b74::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dataDir": "/x/ipam",
    }
    assert dual.plugins[0]["ipMasq"] is True and conflist.wants_ipv6(dual)


def test_named_conflists_with_v6_ranges_want_ipv6(tmp_path: Path) -> None:
    def conf(ipam: dict[str, Any]) -> conflist.NetworkConf:
        return conflist.parse(json.dumps({"name": "n", "plugins": [{"type": "bridge", "ipam": ipam}]}), "f")

    assert conflist.wants_ipv6(conf({"type": "host-local", "ranges": [[{"subnet": "fd00:1::/64"}]]}))
    assert conflist.wants_ipv6(conf({"type": "static", "addresses": [{"address": "fd00:1::5/64"}]}))
    assert not conflist.wants_ipv6(conf({"type": "host-local", "subnet": "10.1.0.0/16", "dataDir": "/a:b"}))
    assert not conflist.wants_ipv6(conf({"type": "dhcp"}))
    (tmp_path / "d.conflist").write_text(json.dumps({"name": "default", "plugins": [{"type": "ptp"}]}))
    # a file named "default" replaces the builtin one, dual-stack option or not
    chosen = conflist.select(("default",), str(tmp_path), "10.1.0.0/24", "/x", W, "fd52::/64")
    assert chosen[0].source.endswith("d.conflist") and not conflist.wants_ipv6(chosen[0])


def write_proc(root: Path, all_flag: str = "0", default_flag: str = "0") -> None:
    for scope, flag in (("all", all_flag), ("default", default_flag)):
        directory = root / "sys/net/ipv6/conf" / scope
        directory.mkdir(parents=True)
        (directory / "disable_ipv6").write_text(flag + "\n")


def test_ipv6_problem_names_what_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "ipv6.disable=1" in netns.ipv6_problem(str(tmp_path / "none"))
    off = tmp_path / "off"
    write_proc(off, all_flag="1")
    assert "net.ipv6.conf.all.disable_ipv6 = 1" in netns.ipv6_problem(str(off))
    new_links_off = tmp_path / "default-off"
    write_proc(new_links_off, default_flag="1")
    assert "net.ipv6.conf.default.disable_ipv6 = 1" in netns.ipv6_problem(str(new_links_off))
    on = tmp_path / "on"
    write_proc(on)
    assert netns.ipv6_problem(str(on)) == ""
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    assert "ip6tables is not installed" in netns.ipv6_problem(str(on))


def test_no_ipv6_host_refuses_before_making_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "ipv6_problem", lambda proc_root="/proc": "IPv6 is disabled on this host (x)")
    made: list[str] = []
    monkeypatch.setattr(netns, "create", lambda name, ipv6=False: made.append(name) or "")
    networks = PodNetworks(tmp_path / "net", ("/usr/lib/cni",), str(tmp_path / "net.d"), "10.1.0.0/24", "fd52::/64")
    with pytest.raises(FailedPrecondition, match="default_network_subnet6") as caught:
        networks.setup(NetworkRequest("pod1"), W)
    assert "IPv6 is disabled on this host" in str(caught.value)
    assert made == [] and networks.pods() == []
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "v6.conflist").write_text(
        json.dumps({"name": "v6", "plugins": [{"type": "ptp", "ipam": {"ranges": [[{"subnet": "fd9::/64"}]]}}]})
    )
    with pytest.raises(FailedPrecondition, match=r'network "v6" \(.*v6.conflist\) has IPv6 ranges'):
        networks.setup(NetworkRequest("pod2", nets=("v6",)), W)
    assert made == [] and networks.pods() == []


def test_ipv6_host_port_needs_an_ipv6_pod_network(tmp_path: Path) -> None:
    networks = PodNetworks(tmp_path / "net", ("/usr/lib/cni",), str(tmp_path / "net.d"), "10.1.0.0/24")
    forward = PortForward("http", "fd00::2", 8080, 80, "tcp")
    with pytest.raises(InvalidConfig, match='port "http" is on the IPv6 host address fd00::2') as caught:
        networks.setup(NetworkRequest("pod1", forwards=(forward,)), W)
    assert "default_network_subnet6" in str(caught.value)
    assert networks.pods() == []


def test_address_for_nomad_prefers_ipv4_and_keeps_ipv6() -> None:
    dual = {"ips": [{"address": "fd52::2/64"}, {"address": "10.1.0.2/24"}]}
    assert cni.first_address(dual, 4) == "10.1.0.2"
    assert cni.first_address(dual, 6) == "fd52::2"
    assert cni.first_address({"ips": [{"address": "10.1.0.2/24"}]}, 6) == ""


def test_hosts_file_lists_both_addresses() -> None:
    text = hosts("web", "10.1.0.2", ("db:fd00::5",), "fd52::2")
    lines = text.splitlines()
    assert "10.1.0.2\tweb" in lines and "fd52::2\tweb" in lines and "fd00::5\tdb" in lines
    assert "ff02::2\tip6-allrouters" in lines
    only6 = hosts("web", "fd52::2", (), "").splitlines()
    assert "fd52::2\tweb" in only6 and "ff02::1\tip6-allnodes" in only6
    assert "ip6-allnodes" not in hosts("web", "10.1.0.2", ())
