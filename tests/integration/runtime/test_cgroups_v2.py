"""cgroup v2 readers against a real unified hierarchy mounted by the test.

This host is cgroup v1 hybrid: a fresh ``mount -t cgroup2`` works and its groups have a live
``cpu.stat`` (always present in v2), but the memory controller is bound to v1, so v2 memory
files cannot exist here. The memory reader is therefore tested on files written in the
kernel's documented v2 format (Documentation/admin-guide/cgroup-v2.rst), not copied from a v2 host.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.runtime import bundle, cgroups

BURN_S = 0.3
MIN_CPU_NS = 10_000_000


@pytest.fixture
def unified(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "cg2"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "none", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        for group in sorted(mnt.glob("nrd-*"), reverse=True):
            with contextlib.suppress(OSError):
                group.rmdir()
        bundle.unmount(mnt)


def test_v2_cpu_and_pids_from_a_live_group(unified: Path) -> None:
    group = unified / "nrd-live"
    group.mkdir()
    assert cgroups.version(str(unified)) == 2
    burner = subprocess.Popen(["busybox", "sh", "-c", "while :; do :; done"])
    try:
        (group / "cgroup.procs").write_text(str(burner.pid))
        time.sleep(BURN_S)
        sample = cgroups.stats("/nrd-live", root=str(unified))
        assert sample.pids == (burner.pid,)
        assert sample.cpu.total_ns >= MIN_CPU_NS  # a busy loop for 0.3 s, even on a loaded machine
        assert sample.cpu.user_ns + sample.cpu.system_ns > 0
        assert sample.memory.measured == ()  # no v2 memory controller on a hybrid host
    finally:
        burner.kill()
        burner.wait()
    assert cgroups.remove("/nrd-live", root=str(unified)) == []
    assert not group.exists()


MEMORY_STAT = """anon 1048576
file 2097152
kernel 65536
kernel_stack 16384
slab 40960
sock 0
shmem 0
"""


def test_v2_memory_and_oom_from_documented_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    group = root / "pod"
    group.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (group / "memory.stat").write_text(MEMORY_STAT)
    (group / "memory.current").write_text("3211264\n")
    (group / "memory.peak").write_text("4194304\n")
    (group / "memory.swap.current").write_text("0\n")
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (group / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
                                    "nr_periods 10\nnr_throttled 2\nthrottled_usec 300\n")  # fmt: skip
    sample = cgroups.stats("/pod", root=str(root))
    assert sample.memory == cgroups.MemoryStats(
        rss=1048576, cache=2097152, swap=0, usage=3211264, max_usage=4194304, kernel_usage=65536,
        measured=("RSS", "Cache", "Kernel Usage", "Usage", "Max Usage", "Swap"),
    )  # fmt: skip
    assert sample.cpu == cgroups.CpuStats(1_500_000, 1_000_000, 500_000, 2, 300_000)
    assert cgroups.oom_kills("/pod", root=str(root)) == 1
    (group / "memory.peak").write_text("max\n")
    assert "Max Usage" not in cgroups.stats("/pod", root=str(root)).memory.measured
