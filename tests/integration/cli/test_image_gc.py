"""`nomad-rkt-driver image gc` (and `image list`'s sizes) against a store a real plugin and the
`fetch` command filled, with a real pod running from one of the images."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.imagebuild import busybox_variants
from tests.integration.driver.conftest import CGROUP_PARENT, make_alloc, task_config
from tests.protocol.plugin import Plugin

from .test_operator import cli

MiB = 1 << 20


def du(path: Path) -> int:
    done = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def listing(plugin_hcl: Path) -> dict[str, dict[str, object]]:
    return {i["name"]: i for i in json.loads(cli(plugin_hcl, "image", "list", "--json").stdout)}


def test_image_gc_dry_run_then_gc_frees_what_no_pod_uses(plugin: Plugin, tmp_path: Path, data_dir: Path) -> None:
    layout = busybox_variants(tmp_path / "layout", "abc", 2 * MiB)
    a, b, c = (f"oci:{layout}:{tag}" for tag in "abc")
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(
        f'plugin "rkt" {{\n config {{\n  data_dir = "{data_dir}"\n  cgroup_parent = "{CGROUP_PARENT}"\n'
        '  gc {\n   image_store_max = "100MiB"\n  }\n }\n}\n'
    )
    for image in (b, c):
        fetched = cli(plugin_hcl, "fetch", image, "--insecure-options", "image")
        assert fetched.returncode == 0, fetched.stderr
    running = task_config(make_alloc(tmp_path), a, command="/bin/sh", args=["-c", "sleep 60"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=running), timeout=60)
    try:
        images = listing(plugin_hcl)
        assert set(images) == {a, b, c}
        assert images[a]["in_use"] and not images[b]["in_use"] and not images[c]["in_use"]
        assert all(2 * 2 * MiB <= int(str(images[x]["unique_bytes"])) < 5 * MiB for x in (a, b, c))
        assert all(int(str(i["disk_bytes"])) > int(str(i["unique_bytes"])) for i in images.values()), "shared base"
        assert all(float(str(i["last_used"])) > 0 for i in images.values())
        table = cli(plugin_hcl, "image", "list")
        assert "LAST USED" in table.stdout and "MiB" in table.stdout and "budget 100.0 MiB" in table.stderr

        before = du(data_dir / "images")
        dry = cli(plugin_hcl, "image", "gc", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert re.search(rf"would remove +{re.escape(b)} \(", dry.stdout)
        assert re.search(rf"would remove +{re.escape(c)} \(", dry.stdout)
        assert re.search(rf"kept +{re.escape(a)}: used by running pods", dry.stdout)
        assert set(listing(plugin_hcl)) == {a, b, c} and du(data_dir / "images") == before, "a dry run removes nothing"
        summary = json.loads(cli(plugin_hcl, "image", "gc", "--dry-run", "--json").stdout)
        assert summary["dry_run"] and {r["name"] for r in summary["removed"]} == {b, c}
        assert [k["name"] for k in summary["kept"]] == [a] and summary["freed_bytes"] > 0

        done = cli(plugin_hcl, "image", "gc")
        assert done.returncode == 0, done.stderr
        freed = int(re.search(r"freed .* \((\d+) bytes\) in 2 images", done.stdout).group(1))  # type: ignore[union-attr]
        assert freed == int(str(images[b]["unique_bytes"])) + int(str(images[c]["unique_bytes"]))
        assert set(listing(plugin_hcl)) == {a}, "the image of the running pod stays"
        assert abs((before - du(data_dir / "images")) - freed) < 256 * 1024, "it freed what it says"
        assert re.search(rf"kept +{re.escape(a)}", done.stdout)

        refused = cli(plugin_hcl, "image", "rm", a)
        assert refused.returncode == 1 and "used by running pods" in refused.stderr
    finally:
        plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=running.id, signal="SIGKILL"), timeout=60)
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=running.id, force=True), timeout=60)
    last = cli(plugin_hcl, "image", "gc")
    assert last.returncode == 0 and re.search(rf"removed +{re.escape(a)}", last.stdout)
    assert listing(plugin_hcl) == {}
    store = data_dir / "images"
    assert [p for p in (store / "blobs" / "sha256").iterdir()] == []
    assert [p for p in (store / "layers" / "sha256").iterdir()] == []


def test_image_gc_to_budget_needs_a_budget(tmp_path: Path) -> None:
    plugin_hcl = tmp_path / "plugin.hcl"
    plugin_hcl.write_text(f'plugin "rkt" {{\n config {{\n  data_dir = "{tmp_path}/data"\n }}\n}}\n')
    refused = cli(plugin_hcl, "image", "gc", "--to-budget")
    assert refused.returncode == 1 and "image_store_max" in refused.stderr
    plugin_hcl.write_text(
        f'plugin "rkt" {{\n config {{\n  data_dir = "{tmp_path}/data"\n  gc {{\n   image_store_max = "ten gigs"\n'
        "  }\n }\n}\n"
    )
    bad = cli(plugin_hcl, "image", "gc")
    assert bad.returncode == 1 and "gc.image_store_max" in bad.stderr and "GiB" in bad.stderr
