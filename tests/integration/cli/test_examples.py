"""The example jobs in jobs/ run end to end through `nomad-rkt-driver run` with real parts: an OpenBao
dev server and a TLS + basic-auth docker-registry for vault-registry, the reference bridge CNI plugin
with iptables for cni-network (a named conflist) and for bridge (Nomad's group bridge network, made
by the runner as a Nomad client makes it); each leaves nothing behind."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nomad_rkt_driver.network.group import GroupNetworks
from tests.baoserver import ROOT_TOKEN, BaoServer, start
from tests.imagebuild import busybox_image
from tests.integration.network.conftest import fetch
from tests.registryserver import PASSWORD, USERNAME, RegistryServer

from .conftest import ROOT, PodNetwork, interrupt, output, run, start_runner, with_test_settings

JOBS = ROOT / "jobs"


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = start(tmp_path_factory.mktemp("bao"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry(workdir: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(workdir / "registry", "tls-basic").start()
    try:
        built = busybox_image(workdir / "layout", tag="v1")
        server.push(f"oci:{built.layout}:v1", "team/hello:v1")
        yield server
    finally:
        server.close()


def test_vault_registry_example_pulls_with_credentials_from_vault(
    workdir: Path, bao: BaoServer, registry: RegistryServer
) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=f"registry/{registry.host}", secret={"username": USERNAME, "password": PASSWORD}
    )
    plugin = with_test_settings(JOBS / "vault-registry.plugin.hcl", workdir / "vault.plugin.hcl", workdir / "data")
    env = dict(os.environ, VAULT_ADDR=bao.address, VAULT_TOKEN=ROOT_TOKEN)
    # The test registry's certificate is self-signed and its image unsigned: opted out through a variable.
    flags = ("-var", f"registry={registry.host}", "-var", 'insecure_options=["tls", "image"]')
    jobfile = JOBS / "vault-registry.nomad.hcl"

    done = run(workdir, jobfile, *flags, plugin=plugin, env=env)
    assert done.returncode == 0, done.stderr
    image = f"{registry.host}/team/hello:v1"
    assert f"hello: pulled {image}: 3 layers, " in done.stdout  # the plugin's progress events, shown
    assert "hello | hello from the test image" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    # Without the secret the pull is refused naming the Vault path, and nothing is started.
    bao.client().secrets.kv.v2.delete_metadata_and_all_versions(path=f"registry/{registry.host}")
    shutil.rmtree(workdir / "data" / "images")  # not already in the store
    refused = run(workdir, jobfile, *flags, plugin=plugin, env=env)
    assert refused.returncode == 1
    assert f"secret/data/registry/{registry.host}" in refused.stderr, refused.stderr
    assert "hello | " not in refused.stdout

    # The job's variables are required-checked and typed like Nomad's.
    wrong = run(workdir, jobfile, "-var", "insecure_options=tls", plugin=plugin, env=env)
    assert wrong.returncode == 1 and "-var insecure_options" in wrong.stderr


@dataclass
class CniRun:
    workdir: Path
    bridge: str
    pod: PodNetwork


@pytest.fixture
def cni_run(workdir: Path) -> Iterator[CniRun]:
    """jobs/cni-network.* and jobs/cni/ as shipped, copied to workdir/jobs (the plugin file's relative
    cni_config_dir is taken from its own directory, so it means the shipped conflist); afterwards,
    nothing of the pod's network may be left: netns, iptables rules for its address, a veth on the
    bridge, IPAM leases."""
    jobs = workdir / "jobs"
    jobs.mkdir()
    shutil.copytree(JOBS / "cni", jobs / "cni")
    shutil.copy(JOBS / "cni-network.nomad.hcl", jobs / "cni-network.nomad.hcl")
    (jobs / "images").symlink_to(workdir / "images")
    conflist = json.loads((JOBS / "cni" / "bridge-net.conflist").read_text())
    leases = Path("/var/lib/cni/networks") / conflist["name"]
    made = CniRun(workdir, conflist["plugins"][0]["bridge"], PodNetwork(workdir / "data"))
    existed = Path(f"/sys/class/net/{made.bridge}").exists()
    leases_existed = leases.exists()
    yield made
    on_bridge = output("ip", "-o", "link", "show", "master", made.bridge)
    lease_files = [p.name for p in leases.glob("*") if p.name != "lock" and not p.name.startswith("last_reserved")]
    left = made.pod.leftovers()
    if not existed:  # CNI's bridge plugin keeps the bridge, as docker0 or cni0 stay; the test removes it
        subprocess.run(["ip", "link", "delete", made.bridge], check=False, capture_output=True)
    if not leases_existed and not lease_files:  # host-local's own lock and last_reserved_ip files
        shutil.rmtree(leases, ignore_errors=True)
    assert left == [], "the cni-network job left network state behind"
    assert on_bridge == "", f"a pod interface is left on {made.bridge}: {on_bridge}"
    assert lease_files == [], "the cni-network job left IPAM leases behind"


def test_cni_network_example_serves_through_a_named_bridge_network(cni_run: CniRun) -> None:
    workdir = cni_run.workdir
    plugin = with_test_settings(
        JOBS / "cni-network.plugin.hcl", workdir / "jobs" / "cni-network.plugin.hcl", workdir / "data"
    )
    proc = start_runner(workdir, workdir / "jobs" / "cni-network.nomad.hcl", plugin=plugin)
    try:
        assert proc.stdout is not None
        address = ""
        deadline = time.monotonic() + 90
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            cni_run.pod.note(line)
            if "port http -> " in line:
                address = line.split("-> ", 1)[1].strip()
        assert address.startswith("http://127.0.0.1:"), "the runner printed no address"
        pod = cni_run.pod.ip
        assert pod.startswith("10.66.77."), f"the pod is not on bridge-net's subnet: {pod!r}"
        assert output("ip", "-o", "link", "show", "master", cni_run.bridge), "no pod interface on the bridge"
        assert any(f"{pod}:8080" in rule for rule in cni_run.pod.nat_rules()), "no portmap DNAT to the pod"
        assert "hello from a rkt pod" in fetch(address, max(1.0, deadline - time.monotonic()))
        interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@dataclass
class GroupBridge:
    """jobs/bridge.nomad.hcl as shipped in a work dir, with a per-test bridge and subnet given the way a
    Nomad agent's config gives them (client { bridge_network_name, bridge_network_subnet } beside the
    plugin block), and what the run made, noted from its output."""

    workdir: Path
    bridge: str
    subnet: str
    plugin: Path
    job: Path
    chains_before: set[str]
    netns: str = ""
    ip: str = ""

    def note(self, line: str) -> None:
        """``web: network mode bridge: namespace /run/netns/<alloc id> on nomad (<ip>)``."""
        found = re.search(r"network mode bridge: namespace /run/netns/(\S+) on nomad \((\S+)\)", line)
        if found:
            self.netns, self.ip = found.groups()

    def leftovers(self) -> list[str]:
        """The alloc's namespace, veths, per-alloc nat chains, iptables rules for its address, its lease,
        the runner's state file."""
        assert self.netns and self.ip, "the runner never said which namespace and address it made"
        left = [f"netns {self.netns}"] if Path(f"/run/netns/{self.netns}").exists() else []
        left += [
            f"link on {self.bridge}: {line}"
            for line in output("ip", "-o", "link", "show", "master", self.bridge).splitlines()
        ]
        mine = re.compile(rf"(?<![\d.]){re.escape(self.ip)}(?![\d])")
        for table in ("nat", "filter"):
            rules = output("iptables", "-t", table, "-S").splitlines()
            left += [f"iptables -t {table} {r}" for r in rules if mine.search(r) or self.netns in r]
        left += [f"iptables nat chain {c}" for c in sorted(nat_chains() - self.chains_before)]
        if (LEASES / self.ip).exists():
            left.append(f"lease {LEASES / self.ip}")
        groups = self.workdir / "data" / "network" / "groups"
        left += [f"state {p}" for p in groups.glob("*")] if groups.is_dir() else []
        return left


LEASES = Path("/var/lib/cni/networks/nomad")  # host-local's default dir for Nomad's network "nomad"


def nat_chains() -> set[str]:
    """Per-alloc nat chains (portmap's shared CNI-HOSTPORT-* ones stay by design)."""
    lines = output("iptables", "-t", "nat", "-S").splitlines()
    return {line[3:] for line in lines if line.startswith("-N CNI-") and not line.startswith("-N CNI-HOSTPORT-")}


def _chain_exists(chain: str) -> bool:
    return subprocess.run(["iptables", "-n", "-L", chain], capture_output=True, check=False).returncode == 0


def _free_subnet() -> str:
    routes = output("ip", "-4", "route", "show")
    while True:
        prefix = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}."
        if prefix not in routes:
            return prefix + "0/24"


@pytest.fixture
def group_bridge(workdir: Path) -> Iterator[GroupBridge]:
    bridge = f"nrdb{secrets.token_hex(4)}"
    subnet = _free_subnet()
    plugin = workdir / "agent.hcl"
    plugin.write_text(
        f'client {{\n  bridge_network_name = "{bridge}"\n  bridge_network_subnet = "{subnet}"\n}}\n'
        + (workdir / "plugin.hcl").read_text()
    )
    job = workdir / "bridge.nomad.hcl"
    shutil.copy(JOBS / "bridge.nomad.hcl", job)
    shared = {c: _chain_exists(c) for c in ("CNI-FORWARD", "NOMAD-ADMIN")}
    leases_existed = LEASES.exists()
    made = GroupBridge(workdir, bridge, subnet, plugin, job, nat_chains())
    yield made
    # Safety net after a failed test: the runner's group networks of this data dir, torn down from their state.
    networks = GroupNetworks(workdir / "data" / "network" / "groups", ("/usr/lib/cni",))
    for state in sorted(networks.root.glob("*.json")):
        networks.destroy(state.name.removesuffix(".json"))
    # What stays by design, as with Nomad: the bridge, NOMAD-ADMIN's rule for it, the firewall plugin's
    # shared chains. The test made them for its own bridge, so it removes them.
    subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)
    rule = ["-o", bridge, "-d", subnet, "-j", "ACCEPT"]
    subprocess.run(["iptables", "-D", "NOMAD-ADMIN", *rule], check=False, capture_output=True)
    if not shared["CNI-FORWARD"]:
        jump = ["-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD"]
        subprocess.run(["iptables", "-D", "FORWARD", *jump], check=False, capture_output=True)
        subprocess.run(["iptables", "-F", "CNI-FORWARD"], check=False, capture_output=True)
        subprocess.run(["iptables", "-X", "CNI-FORWARD"], check=False, capture_output=True)
    if not shared["NOMAD-ADMIN"]:
        subprocess.run(["iptables", "-X", "NOMAD-ADMIN"], check=False, capture_output=True)
    lease_files = [p for p in LEASES.glob("*") if p.name != "lock" and not p.name.startswith("last_reserved")]
    if not leases_existed and not lease_files:
        shutil.rmtree(LEASES, ignore_errors=True)


def test_bridge_example_runs_both_tasks_in_nomads_group_bridge_network(group_bridge: GroupBridge) -> None:
    workdir = group_bridge.workdir
    proc = start_runner(workdir, group_bridge.job, plugin=group_bridge.plugin)
    try:
        assert proc.stdout is not None
        address = probe = ""
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while not (address and probe) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            group_bridge.note(line)
            if "port http -> " in line:
                address = line.split("-> ", 1)[1].strip()
            if line.startswith("probe | "):
                probe = line
        assert address.startswith("http://127.0.0.1:"), f"the runner printed no address: {lines}"
        assert ipaddress.ip_address(group_bridge.ip) in ipaddress.ip_network(group_bridge.subnet)
        assert Path(f"/run/netns/{group_bridge.netns}").exists()
        host_port = address.rsplit(":", 1)[1].strip("/")
        # One interface on the bridge for the whole allocation, and portmap's forward host port → to, tcp and udp.
        assert len(output("ip", "-o", "link", "show", "master", group_bridge.bridge).splitlines()) == 1
        dnat = [r for r in output("iptables", "-t", "nat", "-S").splitlines() if f"{group_bridge.ip}:8080" in r]
        assert {("-p tcp" in r, "-p udp" in r) for r in dnat} == {(True, False), (False, True)}, dnat
        assert all(f"--dport {host_port}" in r for r in dnat)
        assert "hello from a rkt pod" in fetch(address, 30)
        # The probe task reached httpd on its own loopback: both tasks are in the one namespace, and
        # NOMAD_PORT_http is the port inside it (to = 8080), not the host port.
        assert probe.strip() == (
            "probe | reached httpd at 127.0.0.1:8080 in the shared namespace: <h1>hello from a rkt pod</h1>"
        ), probe
        interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert group_bridge.leftovers() == []


def test_a_bridge_job_whose_task_fails_to_start_leaves_no_network(group_bridge: GroupBridge) -> None:
    text = group_bridge.job.read_text()
    broken = text.replace(
        'image   = "oci:images/busybox:1"\n        command = "/bin/sh"',
        'image   = "oci:images/missing:1"\n        command = "/bin/sh"',
    )
    assert broken != text
    group_bridge.job.write_text(broken)
    done = run(group_bridge.workdir, group_bridge.job, plugin=group_bridge.plugin)
    assert done.returncode == 1
    assert "images/missing" in done.stderr, done.stderr
    for line in done.stdout.splitlines():
        group_bridge.note(line)
    assert "httpd: started" in done.stdout  # the first task ran in the namespace, and was destroyed
    assert group_bridge.leftovers() == []


def test_none_and_named_cni_group_modes_in_one_job(cni_run: CniRun) -> None:
    """Group mode "none" gets a namespace with only lo, "cni/bridge-net" one with the shipped conflist on
    eth0; two such groups in the runner's one allocation get <alloc id>-0 and -1; both go at the end."""
    workdir = cni_run.workdir
    plugin = with_test_settings(
        JOBS / "cni-network.plugin.hcl", workdir / "jobs" / "cni-network.plugin.hcl", workdir / "data"
    )
    task = (
        '  task "{0}" {{\n   driver = "rkt"\n   config {{\n    image = "oci:images/busybox:1"\n'
        '    command = "/bin/cat"\n    args = ["/proc/net/dev"]\n    insecure_options = ["image"]\n   }}\n  }}\n'
    )
    job = workdir / "jobs" / "modes.nomad.hcl"
    job.write_text(
        'job "modes" {\n type = "batch"\n'
        ' group "isolated" {\n  network {\n   mode = "none"\n  }\n' + task.format("lo") + " }\n"
        ' group "named" {\n  network {\n   mode = "cni/bridge-net"\n  }\n' + task.format("eth") + " }\n}\n"
    )
    done = run(workdir, job, plugin=plugin)
    assert done.returncode == 0, done.stderr
    made = dict(re.findall(r"network mode \S+: namespace /run/netns/(\S+) (.*)", done.stdout))
    assert len(made) == 2, done.stdout
    names = sorted(made)
    assert [n.rsplit("-", 1)[1] for n in names] == ["0", "1"] and names[0][:-2] == names[1][:-2]
    assert made[names[0]] == "(only lo)"
    found = re.match(r"on bridge-net \((10\.66\.77\.\d+)\)", made[names[1]])
    assert found, made
    cni_run.pod.ip = found.group(1)  # the fixture checks its iptables rules and lease are gone
    cni_run.pod.pod_ids = {"no-pod-netns"}  # the driver made no namespace of its own; the group's are checked here
    interfaces = {
        name: sorted(m.split(":")[0].strip() for m in re.findall(rf"^{name} \| +(\w+):", done.stdout, re.M))
        for name in ("lo", "eth")
    }
    assert interfaces == {"lo": ["lo"], "eth": ["eth0", "lo"]}
    assert not any(Path(f"/run/netns/{n}").exists() for n in names)
    assert not any((workdir / "data" / "network" / "groups").glob("*"))
