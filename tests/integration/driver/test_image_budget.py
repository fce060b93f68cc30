"""The image store's disk budget in a running plugin: StartTask evicts the least recently used
images no task uses, never the image of a running pod, and the layers a kept image shares stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_rkt_driver.images.store import Store
from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.imagebuild import busybox_variants
from tests.protocol.plugin import Plugin

from .conftest import make_alloc, set_config, task_config

MiB = 1 << 20


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # each image: the shared busybox base (~3.9 MiB, blob + unpacked) and 8 MiB of its own
    return busybox_variants(tmp_path_factory.mktemp("budget") / "layout", "abcd", 4 * MiB)


def stored(data_dir: Path) -> set[str]:
    with Store(data_dir / "images") as store:
        return {r.name for r in store.list_images()}


def run_once(plugin: Plugin, tmp_path: Path, image: str, task: str) -> None:
    config = task_config(make_alloc(tmp_path, task), image, command="/bin/sh", args=["-c", "test -f /data/*"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=60)
    waited = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)
    assert waited.result.exit_code == 0


def test_start_task_evicts_lru_unused_images_and_keeps_the_running_ones(
    plugin: Plugin, layout: Path, tmp_path: Path, data_dir: Path
) -> None:
    set_config(
        plugin, data_dir, gc={"image": True, "image_delay": "1h", "image_store_max": "22MiB"}
    )  # two images fit, not three
    a, b, c, d = (f"oci:{layout}:{tag}" for tag in "abcd")
    long = task_config(make_alloc(tmp_path, "long"), a, command="/bin/sh", args=["-c", "sleep 60"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=long), timeout=60)
    try:
        run_once(plugin, tmp_path, b, "b")
        assert stored(data_dir) == {a, b}
        run_once(plugin, tmp_path, c, "c")
        assert stored(data_dir) == {a, c}, "b, least recently used and unused, goes; a's pod runs"
        run_once(plugin, tmp_path, d, "d")
        assert stored(data_dir) == {a, d}, "then c; a is older but in use"
        with Store(data_dir / "images") as store:
            kept = store.lookup_image(a)
            assert kept is not None
            base = kept.layers[0].digest
            assert store.layer_dir(base).is_dir(), "the base layer evicted images shared stays with a"
            records = store.list_images()
            on_disk = {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}
            assert on_disk == {x for r in records for x in r.blobs}, "no blob of an evicted image is left"
            unpacked = {f"sha256:{p.name}" for p in (store.root / "layers" / "sha256").iterdir()}
            assert unpacked == {layer.digest for r in records for layer in r.layers}
        run_once(plugin, tmp_path, a, "a2")  # pods still start from the kept image and its shared layer
        assert stored(data_dir) == {a, d}
        evicted = [json.loads(line) for line in plugin.stderr_lines if '"image removed' in line]
        assert [e["image"] for e in evicted] == [b, c], "one log line per evicted image, in LRU order"
        assert all(e["@level"] == "info" and int(e["freed_bytes"]) >= 8 * MiB for e in evicted)
    finally:
        plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=long.id, signal="SIGKILL"), timeout=60)
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=long.id, force=True), timeout=60)
