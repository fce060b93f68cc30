"""Bundles on real overlayfs: layering, rollback of a half-made bundle, idempotent delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument
from nomad_rkt_driver.runtime import bundle


def test_overlay_bundle_layers_and_delete(tmp_path: Path, layers: list[Path]) -> None:
    made = bundle.create_bundle(tmp_path / "b", layers, {"ociVersion": "1.0.2", "root": {"path": "x"}})
    try:
        assert bundle.is_mountpoint(made.rootfs)
        assert (made.rootfs / "etc" / "hostname").read_text() == "upper\n"
        assert (made.rootfs / "bin" / "busybox").is_file()
        (made.rootfs / "new.txt").write_text("written in the pod")
        assert (made.path / "upper" / "new.txt").exists()
        assert not (layers[0] / "new.txt").exists()
        assert json.loads(made.config.read_text())["root"]["path"] == str(made.rootfs)
    finally:
        bundle.delete_bundle(made.path)
    assert not made.path.exists() and bundle.mounts_under(tmp_path) == []
    bundle.delete_bundle(made.path)  # idempotent
    assert [p.name for p in tmp_path.iterdir()] == []


def test_failure_after_the_mount_rolls_back(tmp_path: Path, layers: list[Path]) -> None:
    with pytest.raises(TypeError):
        bundle.create_bundle(tmp_path / "b", layers, {"unserialisable": object()})
    assert bundle.mounts_under(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_missing_layer_is_refused_and_leaves_nothing(tmp_path: Path, layers: list[Path]) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        bundle.create_bundle(tmp_path / "b", [*layers, tmp_path / "nope"], {})
    with pytest.raises(InvalidArgument, match="no image layer"):
        bundle.create_bundle(tmp_path / "b", [], {})
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_dir_is_refused(tmp_path: Path, layers: list[Path]) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(FailedPrecondition, match="already exists"):
        bundle.create_bundle(tmp_path / "b", layers, {})
    assert list(tmp_path.iterdir()) == [tmp_path / "b"]


def test_copy_mode_has_no_mount(tmp_path: Path, layers: list[Path]) -> None:
    made = bundle.create_bundle(tmp_path / "b", layers, {}, no_overlay=True)
    assert not bundle.is_mountpoint(made.rootfs)
    assert (made.rootfs / "etc" / "hostname").read_text() == "upper\n"
    bundle.delete_bundle(made.path)
    assert list(tmp_path.iterdir()) == []
