"""CgroupReader: cgroup files kept open between samples, within the process's descriptor budget."""

from pathlib import Path

import pytest

from nomad_rkt_driver.runtime import cgroups


def v2_group(root: Path, usage_usec: int) -> Path:
    group = root / "pod"
    group.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (group / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    (group / "memory.stat").write_text("anon 4096\nfile 8192\nkernel 512\n")
    (group / "memory.current").write_text("12800\n")
    (group / "cgroup.procs").write_text("7\n8\n")
    return group


def test_files_stay_open_within_the_budget_and_new_values_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = cgroups._KEPT_FDS
    monkeypatch.setattr(budget, "limit", budget.kept + 2)  # room for two of the reader's files
    before = budget.kept
    v2_group(tmp_path, 1000)
    reader = cgroups.CgroupReader("/pod", str(tmp_path))
    first = reader.sample()
    assert budget.kept == before + 2  # the other files are opened per sample, not kept
    assert first.cpu.total_ns == 1_000_000 and first.pids == (7, 8)
    assert first.memory == cgroups.MemoryStats(
        rss=4096, cache=8192, usage=12800, kernel_usage=512, measured=("RSS", "Cache", "Kernel Usage", "Usage")
    )
    v2_group(tmp_path, 5000)  # the same files, rewritten: kept or not, the next sample sees it
    (tmp_path / "pod" / "cgroup.procs").write_text("9\n")
    second = reader.sample()
    assert second.cpu.total_ns == 5_000_000 and second.pids == (9,)
    assert second.memory == first.memory
    assert reader.sample() == second
    reader.close()
    assert budget.kept == before
    assert reader.sample().cpu.total_ns == 0  # closed: zeros, nothing reopened
    assert budget.kept == before


def test_one_shot_stats_keep_nothing_open(tmp_path: Path) -> None:
    v2_group(tmp_path, 1000)
    before = cgroups._KEPT_FDS.kept
    assert cgroups.stats("/pod", str(tmp_path)).cpu.total_ns == 1_000_000
    assert cgroups._KEPT_FDS.kept == before
