"""Unpacked layers as real overlayfs lower dirs: whiteouts hide, opaque dirs hide, busybox runs.

Images come from tests/imagebuild.py (our writer), umoci (an independent writer) and a copy
made by skopeo; each is imported through layout.py, unpacked by the store and mounted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.images.layout import import_image
from nomad_rkt_driver.images.reference import OCILayoutReference
from nomad_rkt_driver.images.store import ImageRecord, Store, StoreFull
from tests.imagebuild import busybox_image, read_layout_image, umoci_busybox_image


def require(program: str, hint: str) -> str:
    path = shutil.which(program)
    assert path, f"{program} is missing: {hint}"
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


def lower_dirs(store: Store, record: ImageRecord) -> list[Path]:
    return [store.unpacked_layer(layer.digest, layer.media_type, diff_id=layer.diff_id) for layer in record.layers]


@contextlib.contextmanager
def overlay(lowers: list[Path], work: Path) -> Iterator[Path]:
    """Mount ``lowers`` (bottom first) with a scratch upper dir; always unmounted."""
    upper, workdir, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, workdir, merged):
        d.mkdir(parents=True)
    options = f"lowerdir={':'.join(str(p) for p in reversed(lowers))},upperdir={upper},workdir={workdir}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True, capture_output=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def chroot_echo(root: Path) -> str:
    done = subprocess.run(["chroot", str(root), "/bin/busybox", "echo", "ok"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_three_layer_image_through_overlayfs(store: Store, tmp_path: Path) -> None:
    image = busybox_image(tmp_path / "oci")
    record = import_image(store, OCILayoutReference(str(image.layout), "latest"))
    lowers = lower_dirs(store, record)
    assert lower_dirs(store, record) == lowers  # unpacked once, then reused
    with overlay(lowers, tmp_path / "mnt") as root:
        assert not (root / "etc/old.conf").exists() and (root / "etc/keep.conf").read_text() == "keep\n"
        assert sorted(os.listdir(root / "var/cache/app")) == ["upper.txt"]  # opaque: lower.txt hidden
        assert (root / "opt/lower/a.txt").read_text() == "a\n"  # untouched lower content still there
        suid = os.lstat(root / "data/suid")
        assert (stat.S_IMODE(suid.st_mode), suid.st_uid, suid.st_gid) == (0o4755, 1000, 1000)
        assert os.getxattr(root / "data/suid", "user.test") == b"hello"
        assert (root / "app/hard").read_text() == "hello\n" and os.readlink(root / "app/link") == "hello.txt"
        assert chroot_echo(root) == "ok"
        done = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "cat /app/link; ls /etc"], capture_output=True)
        assert done.stdout.decode().startswith("hello\n") and "old.conf" not in done.stdout.decode()


def test_a_umoci_built_image(store: Store, tmp_path: Path) -> None:
    require("umoci", "apt-get install umoci")
    image = umoci_busybox_image(tmp_path / "umoci", tag="edge")
    record = import_image(store, OCILayoutReference(str(image.layout), "edge"))
    assert record.manifest_digest == image.manifest_digest and [x.diff_id for x in record.layers] == image.diff_ids
    with overlay(lower_dirs(store, record), tmp_path / "mnt") as root:
        assert not (root / "etc/old.conf").exists() and (root / "etc/keep.conf").exists()
        assert (root / "app/hello.txt").read_text() == "hello\n"
        assert chroot_echo(root) == "ok"


def test_a_layout_copied_by_skopeo(store: Store, tmp_path: Path) -> None:
    require("skopeo", "apt-get install skopeo")
    image = busybox_image(tmp_path / "a", tag="v1")
    copy = ["skopeo", "--insecure-policy", "copy", f"oci:{tmp_path}/a:v1", f"oci:{tmp_path}/b:copied"]
    done = subprocess.run(copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    theirs = read_layout_image(tmp_path / "b", "copied")
    record = import_image(store, OCILayoutReference(str(tmp_path / "b"), "copied"))
    assert record.manifest_digest == theirs.manifest_digest and record.config_digest == image.config_digest
    assert [x.diff_id for x in record.layers] == image.diff_ids
    with overlay(lower_dirs(store, record), tmp_path / "mnt") as root:
        assert chroot_echo(root) == "ok" and not (root / "etc/old.conf").exists()


def test_a_full_disk_leaves_no_partial_blob_or_layer(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        with Store(mount / "store", durable=False) as store:
            image = busybox_image(tmp_path / "oci")  # ~1 MB compressed, ~2 MB unpacked per copy
            record = import_image(store, OCILayoutReference(str(image.layout), "latest"))
            filler = mount / "filler"
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            filler.write_bytes(b"\0" * max(0, free - (256 << 10)))
            with pytest.raises(StoreFull, match="out of disk space"):
                store.unpacked_layer(record.layers[0].digest, diff_id=record.layers[0].diff_id)
            with pytest.raises(StoreFull), store.ingest("sha256:" + "0" * 64) as blob:
                blob.write(os.urandom(1 << 20))
            assert not store.layer_dir(record.layers[0].digest).exists()
            assert not [p for p in (store.root / "tmp").rglob("*") if p.is_file() and p.suffix != ".lock"]
            filler.unlink()
            assert store.unpacked_layer(record.layers[0].digest).is_dir()  # the next try works
    finally:
        subprocess.run(["umount", str(mount)], check=True)
