"""A pod's /etc/resolv.conf and /etc/hosts (pure text builders).

resolv.conf, in order of precedence: the task's ``dns_servers`` (IPs, or the single value
``host`` = the host's file, or ``none`` = an empty file); else Nomad's TaskConfig DNS when it
gives servers; else DNS servers a CNI network returned; else the host's file. ``dns_search_domains``
and ``dns_options`` replace those lines. hosts: localhost lines, the pod's host name on its IP
(127.0.1.1 without one) and on its IPv6 address when it has one (with the usual ``ip6-*`` names
then), and ``extra_hosts`` entries ``"name:ip"``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from nomad_rkt_driver.config.task import split_extra_host
from nomad_rkt_driver.errors import InvalidConfig


@dataclass(frozen=True)
class DnsConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def _lines(text: str, key: str) -> list[str]:
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == key:
            found.extend(fields[1:])
    return found


def resolv_conf(job: DnsConfig, nomad: DnsConfig | None, cni_servers: Sequence[str], host_text: str) -> str:
    """The pod's resolv.conf text."""
    if job.servers == ("none",):
        servers: list[str] = []
        base = ""
    elif job.servers == ("host",) or not (job.servers or (nomad and nomad.servers) or cni_servers):
        base = host_text
        servers = _lines(host_text, "nameserver")
    else:
        base = ""
        servers = list(job.servers or (nomad.servers if nomad and nomad.servers else ()) or cni_servers)
    searches = list(job.searches) or list(nomad.searches if nomad else ()) or _lines(base, "search")
    options = list(job.options) or list(nomad.options if nomad else ()) or _lines(base, "options")
    out = [f"nameserver {s}" for s in servers]
    if searches:
        out.append("search " + " ".join(searches))
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n" if out else ""


IP6_NAMES = ("fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters")


def hosts(hostname: str, ip: str, extra_hosts: Sequence[str], ip6: str = "") -> str:
    """The pod's /etc/hosts text (``ip`` may itself be IPv6 for an IPv6-only pod)."""
    out = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{ip or '127.0.1.1'}\t{hostname}"]
    if ip6 and ip6 != ip:
        out.append(f"{ip6}\t{hostname}")
    if ip6 or ":" in ip:
        out.extend(IP6_NAMES)
    for entry in extra_hosts:
        name, ip_text = split_extra_host(entry)
        out.append(f"{ip_text}\t{name}")
    return "\n".join(out) + "\n"


def check_servers(servers: Sequence[str], where: str) -> None:
    """dns_servers are IPs, or the single value "host" or "none"."""
    if len(servers) == 1 and servers[0] in ("host", "none"):
        return
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidConfig(
                where, "dns_servers", f'"{server}" is not an IP address; use IPs, or only "host" or "none"'
            ) from None
