"""TaskStats carries every process of the pod (resource_usage_by_pid), as Nomad's exec driver does."""

from __future__ import annotations

from pathlib import Path

import psutil
from google.protobuf.duration_pb2 import Duration

from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.protocol.plugin import Plugin

from .conftest import make_alloc, task_config
from .test_lifecycle import destroy, start


def test_stats_have_each_process_of_the_pod(plugin: Plugin, image: str, tmp_path: Path, data_dir: Path) -> None:
    alloc = make_alloc(tmp_path)
    # pid 1 of the pod waits; its child burns CPU
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "sh -c 'while :; do :; done' & wait"])
    start(plugin, config)
    init = int((data_dir / "pods" / "pods" / pod_id_for(config.id) / "container.pid").read_text())
    stream = plugin.driver.TaskStats(
        driver_pb2.TaskStatsRequest(task_id=config.id, collection_interval=Duration(nanos=300_000_000))
    )
    try:
        samples = [next(stream).stats for _ in range(4)]
    finally:
        stream.cancel()
    last = samples[-1]
    pids = {int(pid): usage for pid, usage in last.resource_usage_by_pid.items()}
    assert init in pids and len(pids) == 2, f"the pod's two processes, got {sorted(pids)}"
    (burner,) = set(pids) - {init}
    assert pids[burner].cpu.percent > 20 and pids[init].cpu.percent < 5
    assert all(usage.memory.rss > 0 for usage in pids.values())
    assert list(pids[init].memory.measured_fields) == [driver_pb2.MemoryUsage.RSS]
    assert driver_pb2.CPUUsage.PERCENT in pids[burner].cpu.measured_fields
    assert last.agg_resource_usage.cpu.percent >= pids[burner].cpu.percent * 0.8
    # psutil, an independent reader of /proc, agrees on the idle init's resident memory (in bytes, not
    # pages or KiB; the shell may have touched a few more pages since the sample)
    assert abs(pids[init].memory.rss - psutil.Process(init).memory_info().rss) <= 512 * 1024
    destroy(plugin, config.id)
