"""The example jobs in jobs/ run end to end through `nomad-rkt-driver run` with real parts: an OpenBao
dev server and a TLS + basic-auth docker-registry for vault-registry, the reference bridge CNI plugin
with iptables for bridge; each leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.baoserver import ROOT_TOKEN, BaoServer, start
from tests.imagebuild import busybox_image
from tests.registryserver import PASSWORD, USERNAME, RegistryServer

from .conftest import ROOT, PodNetwork, output, run, start_runner, with_test_settings

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
class BridgeRun:
    workdir: Path
    bridge: str
    pod: PodNetwork


@pytest.fixture
def bridge_run(workdir: Path) -> Iterator[BridgeRun]:
    """jobs/bridge.* and jobs/cni/ as shipped, copied to workdir/jobs (the plugin file's relative
    cni_config_dir is taken from its own directory, so it means the shipped conflist); afterwards,
    nothing of the pod's network may be left: netns, iptables rules for its address, a veth on the
    bridge, IPAM leases."""
    jobs = workdir / "jobs"
    jobs.mkdir()
    shutil.copytree(JOBS / "cni", jobs / "cni")
    shutil.copy(JOBS / "bridge.nomad.hcl", jobs / "bridge.nomad.hcl")
    (jobs / "images").symlink_to(workdir / "images")
    conflist = json.loads((JOBS / "cni" / "bridge-net.conflist").read_text())
    leases = Path("/var/lib/cni/networks") / conflist["name"]
    made = BridgeRun(workdir, conflist["plugins"][0]["bridge"], PodNetwork(workdir / "data"))
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
    assert left == [], "the bridge job left network state behind"
    assert on_bridge == "", f"a pod interface is left on {made.bridge}: {on_bridge}"
    assert lease_files == [], "the bridge job left IPAM leases behind"


def test_bridge_example_serves_through_a_named_bridge_network(bridge_run: BridgeRun) -> None:
    workdir = bridge_run.workdir
    plugin = with_test_settings(JOBS / "bridge.plugin.hcl", workdir / "jobs" / "bridge.plugin.hcl", workdir / "data")
    proc = start_runner(workdir, workdir / "jobs" / "bridge.nomad.hcl", plugin=plugin)
    try:
        assert proc.stdout is not None
        address = ""
        deadline = time.monotonic() + 90
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            bridge_run.pod.note(line)
            if "port http -> " in line:
                address = line.split("-> ", 1)[1].strip()
        assert address.startswith("http://127.0.0.1:"), "the runner printed no address"
        pod = bridge_run.pod.ip
        assert pod.startswith("10.66.77."), f"the pod is not on bridge-net's subnet: {pod!r}"
        assert output("ip", "-o", "link", "show", "master", bridge_run.bridge), "no pod interface on the bridge"
        assert any(f"{pod}:8080" in rule for rule in bridge_run.pod.nat_rules()), "no portmap DNAT to the pod"
        page = ""
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(address, timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.2)
        assert "hello from a rkt pod" in page
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "all tasks stopped and cleaned up" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
