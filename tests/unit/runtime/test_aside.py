"""Trees renamed aside for removal: what a crash leaves is found and collected, never one this
process is deleting now, never across a mount, never following a symlink out of the tree."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import FailedPrecondition
from nomad_rkt_driver.runtime import aside


def crashed_removal(parent: Path, name: str, outside: Path) -> Path:
    """A tree as a removal killed between its rename and the end of its rmtree leaves it."""
    tree = parent / name
    (tree / "rootfs" / "etc").mkdir(parents=True)
    (tree / "rootfs" / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (tree / "rootfs" / "link").symlink_to(outside)
    os.chmod(tree / "rootfs" / "etc", 0o500)
    os.rename(tree, parent / f"{aside.PREFIX}{name}-0123abcd")
    return parent / f"{aside.PREFIX}{name}-0123abcd"


def test_leftovers_are_found_at_both_levels_and_collected(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep").write_text("x")
    pods = tmp_path / "pods"
    (pods / "pod-live").mkdir(parents=True)
    top = crashed_removal(pods, "pod-gone", outside)
    bundle = crashed_removal(pods / "pod-live", "bundle", outside)
    crashed_removal(top, "bundle", outside)  # inside a leftover: goes with it, not listed
    os.utime(top, (0, 0))  # a pod dir made long ago: the rename (ctime), not its mtime, starts the age
    found = dict(aside.leftovers([pods, tmp_path / "absent"]))
    assert set(found) == {top, bundle}
    assert all(0 <= age < 60 for age in found.values()), found
    for path in found:
        aside.collect(path)
    assert sorted(p.name for p in pods.rglob("*")) == ["pod-live"]
    assert (outside / "keep").read_text() == "x", "symlinks are not followed"
    with pytest.raises(FailedPrecondition, match="not a removal leftover"):
        aside.collect(pods / "pod-live")


def test_a_removal_in_progress_is_neither_listed_nor_collected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "pod-1"
    (victim / "a").mkdir(parents=True)
    seen: list[list[Path]] = []
    refused: list[str] = []
    rmtree = aside.shutil.rmtree

    def slow_rmtree(path: Path) -> None:  # the pass looks while the removal is between rename and rmtree
        seen.append([p for p, _ in aside.leftovers([tmp_path], now=1e12)])
        doomed = next(tmp_path.glob(f"{aside.PREFIX}pod-1-*"))
        try:
            aside.collect(doomed)
        except FailedPrecondition as exc:
            refused.append(str(exc))
        rmtree(path)

    monkeypatch.setattr(aside.shutil, "rmtree", slow_rmtree)
    worker = threading.Thread(target=aside.remove, args=(victim,))
    worker.start()
    worker.join()
    assert seen == [[]], "a removal of this process is not a leftover, however old"
    assert refused and "being removed by this process now" in refused[0]
    assert list(tmp_path.iterdir()) == []
    aside.remove(victim)  # already gone: quiet


def test_a_failed_removal_leaves_a_leftover_that_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "pod-2"
    victim.mkdir()

    def failing(path: Path) -> None:
        raise OSError("device busy")

    monkeypatch.setattr(aside.shutil, "rmtree", failing)
    with pytest.raises(OSError, match="device busy"):
        aside.remove(victim)
    monkeypatch.undo()
    [(left, _)] = aside.leftovers([tmp_path])
    assert left.name.startswith(f"{aside.PREFIX}pod-2-")
    aside.collect(left)
    assert list(tmp_path.iterdir()) == []
