"""resolv.conf precedence and /etc/hosts contents."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.network.dns import DnsConfig, hosts, resolv_conf, split_extra_host

HOST = "nameserver 192.0.2.53\nsearch corp.example\noptions ndots:1\n"


def test_default_is_the_hosts_file() -> None:
    assert resolv_conf(DnsConfig(), None, [], HOST) == HOST


def test_precedence_job_then_nomad_then_cni() -> None:
    nomad = DnsConfig(("192.0.2.1",), ("svc.example",), ())
    assert resolv_conf(DnsConfig(), nomad, ["192.0.2.9"], HOST) == "nameserver 192.0.2.1\nsearch svc.example\n"
    assert resolv_conf(DnsConfig(), None, ["192.0.2.9"], HOST) == "nameserver 192.0.2.9\n"
    job = DnsConfig(("192.0.2.2", "192.0.2.3"), ("a.example", "b.example"), ("ndots:2",))
    assert resolv_conf(job, nomad, [], HOST) == (
        "nameserver 192.0.2.2\nnameserver 192.0.2.3\nsearch a.example b.example\noptions ndots:2\n"
    )


def test_host_and_none() -> None:
    assert resolv_conf(DnsConfig(("host",)), DnsConfig(("192.0.2.1",)), [], HOST) == HOST
    assert resolv_conf(DnsConfig(("none",)), None, ["192.0.2.9"], HOST) == ""
    assert resolv_conf(DnsConfig(("none",), ("x.example",)), None, [], HOST) == "search x.example\n"


def test_hosts_file() -> None:
    text = hosts("web", "10.250.1.2", ("db.internal:10.0.0.5", "v6:fd00::1"))
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost" and "10.250.1.2\tweb" in lines
    assert lines[-2:] == ["10.0.0.5\tdb.internal", "fd00::1\tv6"]
    assert "127.0.1.1\tweb" in hosts("web", "", ())


@pytest.mark.parametrize("entry", ["nocolon", ":1.2.3.4", "name:", "name:not-an-ip"])
def test_bad_extra_hosts(entry: str) -> None:
    with pytest.raises(ValueError, match=r"name:ip|not an IP"):
        split_extra_host(entry)
