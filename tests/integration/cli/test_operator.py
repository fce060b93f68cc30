"""Operator commands against pods and images a real plugin made."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.integration.driver.conftest import CGROUP_PARENT, make_alloc, task_config
from tests.protocol.plugin import Plugin

CLI = str(Path(sys.executable).parent / "nomad-rkt-driver")


def cli(plugin_hcl: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--plugin-config", str(plugin_hcl)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_list_status_and_image_commands(plugin: Plugin, image: str, tmp_path: Path, data_dir: Path) -> None:
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(
        f'plugin "rkt" {{\n config {{\n  data_dir = "{data_dir}"\n'
        f'  cgroup_parent = "{CGROUP_PARENT}"\n  trust_dir = "{tmp_path}/keys"\n }}\n}}\n'
    )
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "while :; do sleep 0.2; done"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60)
    try:
        listed = json.loads(cli(plugin_hcl, "list", "--json").stdout)
        assert len(listed) == 1 and listed[0]["state"] == "running"
        pod_id = listed[0]["pod"]
        status = cli(plugin_hcl, "status", pod_id)
        assert status.returncode == 0 and "state    running" in status.stdout
        assert cli(plugin_hcl, "status", "no-such-pod").returncode == 1

        images = json.loads(cli(plugin_hcl, "image", "list", "--json").stdout)
        assert [i["name"] for i in images] == [image] and images[0]["layers"] == 3
        refused = cli(plugin_hcl, "image", "rm", image)
        assert refused.returncode == 1 and "used by running pods" in refused.stderr
    finally:
        plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=config.id, signal="SIGKILL"), timeout=60)
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)
    assert cli(plugin_hcl, "image", "rm", image).returncode == 0
    assert json.loads(cli(plugin_hcl, "image", "list", "--json").stdout) == []
    assert json.loads(cli(plugin_hcl, "list", "--json").stdout) == []


def test_trust_add(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    try:
        subprocess.run(
            [*gpg, "--passphrase", "", "--quick-gen-key", "ops <ops@example.com>", "ed25519", "sign", "never"],
            check=True,
            capture_output=True,
        )
        key = subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True)
    (tmp_path / "key.asc").write_bytes(key)
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(f'plugin "rkt" {{\n config {{\n  trust_dir = "{tmp_path}/keys"\n }}\n}}\n')
    added = cli(plugin_hcl, "trust", "add", "--prefix", "example.com/app", str(tmp_path / "key.asc"))
    assert added.returncode == 0 and 'Added key for prefix "example.com/app"' in added.stdout
    assert len(list((tmp_path / "keys" / "prefix.d" / "example.com" / "app").iterdir())) == 1
    (tmp_path / "junk.asc").write_text("not a key")
    refused = cli(plugin_hcl, "trust", "add", "--root", str(tmp_path / "junk.asc"))
    assert refused.returncode == 1 and "OpenPGP public key" in refused.stderr


def test_trust_add_sigstore_public_key(tmp_path: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(tmp_path / "signer.key"),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "signer.key"), "-pubout", "-out", str(tmp_path / "signer.pub")],
        check=True,
        capture_output=True,
    )
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(f'plugin "rkt" {{\n config {{\n  trust_dir = "{tmp_path}/keys"\n }}\n}}\n')
    added = cli(plugin_hcl, "trust", "add", "--prefix", "registry.example.com/team", str(tmp_path / "signer.pub"))
    assert added.returncode == 0, added.stderr
    stored = tmp_path / "keys" / "prefix.d" / "registry.example.com" / "team" / "signer.pub"
    assert stored.read_bytes() == (tmp_path / "signer.pub").read_bytes()
    refused = cli(plugin_hcl, "trust", "add", "--root", str(tmp_path / "signer.key"))
    assert refused.returncode == 1


def test_fetch_follows_the_trust_policy(image: str, tmp_path: Path) -> None:
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(f'plugin "rkt" {{\n config {{\n  data_dir = "{tmp_path}/data"\n }}\n}}\n')
    refused = cli(plugin_hcl, "fetch", image)
    assert refused.returncode == 1 and 'insecure_options = ["image"]' in refused.stderr
    fetched = cli(plugin_hcl, "fetch", image, "--insecure-options", "image")
    assert fetched.returncode == 0 and "layers   3" in fetched.stdout
    assert json.loads(cli(plugin_hcl, "image", "list", "--json").stdout)[0]["name"] == image
