"""CNI conflists: parsing, the builtin default network, selection with clear errors, plugin configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.network import cni, conflist

W = "rkt task config"


def write(directory: Path, name: str, body: object) -> Path:
    path = directory / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def test_parse_conflist_and_single_conf() -> None:
    conf = conflist.parse('{"cniVersion": "0.4.0", "name": "lan", "plugins": [{"type": "bridge"}]}', "f")
    assert (conf.name, conf.cni_version, conf.plugins, conf.source) == ("lan", "0.4.0", ({"type": "bridge"},), "f")
    single = conflist.parse('{"cniVersion": "0.3.1", "name": "one", "type": "ptp", "ipMasq": true}', "g")
    assert single.plugins == ({"type": "ptp", "ipMasq": True},)
    assert conflist.NetworkConf.from_json(conf.to_json()) == conf


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"plugins": [{"type": "x"}]}', 'has no "name"'),
        ('{"name": "a", "plugins": []}', "non-empty list"),
        ('{"name": "a", "plugins": [{"ipam": {}}]}', 'plugins[0] has no "type"'),
        ('{"name": "a"}', 'neither "plugins" nor "type"'),
    ],
)
def test_parse_refuses_broken_files(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        conflist.parse(text, "f")


def test_default_network_is_rkts(tmp_path: Path) -> None:
    conf = conflist.default_network("10.250.9.0/24", "/x/ipam")
    ptp, portmap = conf.plugins
    assert conf.name == "default" and ptp["type"] == "ptp" and ptp["ipMasq"] is True
    assert ptp["ipam"] == {
        "type": "host-local",
        "subnet": "10.250.9.0/24",
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/x/ipam",
    }
    assert portmap["type"] == "portmap" and portmap["capabilities"] == {"portMappings": True}
    assert conflist.select(("default",), str(tmp_path / "absent"), "10.250.9.0/24", "/x", W) == (
        conflist.default_network("10.250.9.0/24", "/x"),
    )


def test_select_named_networks_in_job_order_and_override_default(tmp_path: Path) -> None:
    write(tmp_path, "10-b.conflist", {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]})
    write(tmp_path, "20-a.conflist", {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "ptp"}]})
    write(tmp_path, "30-d.conflist", {"cniVersion": "1.0.0", "name": "default", "plugins": [{"type": "ptp"}]})
    write(tmp_path, "notes.txt", "ignored")
    chosen = conflist.select(("a", "b", "default"), str(tmp_path), "10.250.9.0/24", "/x", W)
    assert [c.name for c in chosen] == ["a", "b", "default"]
    assert chosen[2].source.endswith("30-d.conflist")  # the operator's default replaces the builtin


def test_unknown_network_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "lan.conflist", {"cniVersion": "1.0.0", "name": "lan", "plugins": [{"type": "bridge"}]})
    with pytest.raises(InvalidConfig) as info:
        conflist.select(("wan",), str(tmp_path), "10.250.9.0/24", "/x", W)
    assert info.value.attribute == "net"
    assert 'network "wan" is not known; known networks: default, host, lan, none' in str(info.value)


def test_broken_conflist_is_named(tmp_path: Path) -> None:
    bad = write(tmp_path, "lan.conflist", '{"name": "lan", "plugins": [')
    with pytest.raises(InvalidConfig) as info:
        conflist.select(("lan",), str(tmp_path), "10.250.9.0/24", "/x", W)
    assert str(bad) in str(info.value) and "not valid JSON" in str(info.value)
    with pytest.raises(InvalidConfig, match=r"unreadable files there: .*lan\.conflist"):
        conflist.select(("other",), str(tmp_path), "10.250.9.0/24", "/x", W)


def test_plugin_config_grants_runtime_config_by_capability() -> None:
    mappings = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    got = cni.plugin_config("n", "1.0.0", portmap, mappings, {"ips": []})
    assert got["runtimeConfig"] == mappings and got["prevResult"] == {"ips": []}
    assert got["name"] == "n" and got["cniVersion"] == "1.0.0"
    plain = cni.plugin_config("n", "1.0.0", {"type": "ptp"}, mappings, None)
    assert "runtimeConfig" not in plain and "prevResult" not in plain


def test_missing_plugin_binary_names_it_and_the_path(tmp_path: Path) -> None:
    call = cni.Invocation("c", "/nonexistent", "eth0", (str(tmp_path),))
    with pytest.raises(cni.PluginMissing) as info:
        cni.add_list("default", "1.0.0", ({"type": "portmap"},), call, {})
    assert info.value.recoverable
    assert f'"portmap", which is in none of {tmp_path}' in str(info.value)
    assert "containernetworking-plugins" in str(info.value)
