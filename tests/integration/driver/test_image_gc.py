"""Unused images leave the store after gc.image_delay; images a task uses stay."""

from __future__ import annotations

import time
from pathlib import Path

from nomad_rkt_driver.images.store import Store
from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.protocol.plugin import Plugin

from .conftest import make_alloc, set_config, task_config


def stored(data_dir: Path) -> list[str]:
    with Store(data_dir / "images") as store:
        return [r.name for r in store.list_images()]


def test_unused_image_is_collected_after_the_delay(plugin: Plugin, image: str, tmp_path: Path, data_dir: Path) -> None:
    set_config(plugin, data_dir, gc={"image": True, "image_delay": "1s"})
    long = task_config(make_alloc(tmp_path, "long"), image, command="/bin/sh", args=["-c", "sleep 30"])
    short = task_config(make_alloc(tmp_path, "short"), image, command="/bin/true")
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=long), timeout=60)
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=short), timeout=60)
    plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=short.id), timeout=60)
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=short.id, force=True), timeout=60)
    time.sleep(1.8)
    assert stored(data_dir) == [image], "an image a running task uses must stay"

    plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id=long.id, signal="SIGKILL"), timeout=60)
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=long.id, force=True), timeout=60)
    assert stored(data_dir) == [image], "kept for image_delay after the last task"
    layers = data_dir / "images" / "layers" / "sha256"
    deadline = time.monotonic() + 10
    while (stored(data_dir) or any(layers.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored(data_dir) == []
    assert not any(layers.iterdir()), "unpacked layers go with the image"
