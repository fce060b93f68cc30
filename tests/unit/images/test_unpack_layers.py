"""Safe layer unpacking: hostile layers are refused leaving nothing; good ones keep every detail."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from nomad_rkt_driver.images.unpack import (
    CorruptLayer,
    LayerBudgetExceeded,
    UnpackBudget,
    UnpackStats,
    UnsafeLayer,
    unpack_layer,
)
from tests.imagebuild import MTIME, Layer, sha256

DIGEST = "sha256:" + "1a" * 32
# A VFS_CAP_REVISION_2 file capability granting CAP_NET_BIND_SERVICE (bit 10) in the permitted set.
CAP_NET_BIND = (b"\x00\x00\x00\x02" + (1 << 10).to_bytes(4, "little") + b"\x00" * 12).decode()


def unpack(blob: bytes, dest: Path, **kwargs: object) -> UnpackStats:
    return unpack_layer(io.BytesIO(blob), dest, digest=DIGEST, **kwargs)  # type: ignore[arg-type]


def refused(layer: Layer, tmp_path: Path, fragment: str, entry: str, **kwargs: object) -> UnsafeLayer:
    tmp_path.mkdir(exist_ok=True)
    dest = tmp_path / "layer"
    with pytest.raises(UnsafeLayer) as caught:
        unpack(layer.tar(), dest, **kwargs)
    message = str(caught.value)
    assert DIGEST in message and repr(entry) in message and fragment in message, message
    assert not dest.exists(), "a refused layer must leave nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing outside the layer dir either"
    return caught.value


def test_absolute_names_are_refused(tmp_path: Path) -> None:
    refused(Layer().file("/etc/passwd", b"x"), tmp_path / "t", "absolute name", "/etc/passwd")


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "a/b/../../../evil", "./../evil", "a/.."])
def test_dotdot_components_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "t").mkdir()
    refused(Layer().dir("a").file(name, b"x"), tmp_path / "t", "'..' component", name)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("target", ["/etc", "../..", "..", "/"])
def test_a_file_through_a_symlinked_dir_out_of_the_root_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "t").mkdir()
    layer = Layer().symlink("escape", target).file("escape/pwned", b"x")
    refused(layer, tmp_path / "t", "out of the layer root", "escape/pwned")
    assert not (tmp_path / "pwned").exists() and not Path("/etc/pwned").exists()


def test_a_chain_of_symlinks_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    layer = Layer().dir("a").dir("a/b").symlink("a/b/up", "../..").symlink("a/out", "b/up/..").file("a/out/x", b"x")
    refused(layer, tmp_path / "t", "out of the layer root", "a/out/x")


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    refused(Layer().symlink("a", "b").symlink("b", "a").file("a/x"), tmp_path / "t", "out of the layer root", "a/x")


def test_symlinks_inside_the_root_are_followed_and_may_point_anywhere(tmp_path: Path) -> None:
    layer = (
        Layer()
        .dir("usr")
        .dir("usr/lib")
        .symlink("lib", "usr/lib")
        .file("lib/libc.so", b"elf")
        .symlink("abs", "/etc/shadow")
        .symlink("dangling", "../../../nowhere")
    )
    dest = tmp_path / "layer"
    unpack(layer.tar(), dest)
    assert (dest / "usr/lib/libc.so").read_bytes() == b"elf" and (dest / "lib").is_symlink()
    assert os.readlink(dest / "abs") == "/etc/shadow" and os.readlink(dest / "dangling") == "../../../nowhere"


@pytest.mark.parametrize(
    ("layer", "entry", "fragment"),
    [
        (Layer().hardlink("h", "/etc/passwd"), "h", "absolute hardlink target"),
        (Layer().hardlink("h", "../outside"), "h", "'..' component"),
        (Layer().hardlink("h", "later").file("later"), "h", "not (yet) extracted"),
        (Layer().symlink("d", "/etc").hardlink("h", "d/passwd"), "h", "out of the layer root"),
        (Layer().dir("d").hardlink("h", "d"), "h", "is a dir"),
        (Layer().hardlink("h", "."), "h", "outside the layer root"),
    ],
)
def test_hardlink_escapes_are_refused(tmp_path: Path, layer: Layer, entry: str, fragment: str) -> None:
    refused(layer, tmp_path / "t", fragment, entry)


def test_device_nodes_are_refused_unless_allowed(tmp_path: Path) -> None:
    refused(Layer().device("dev/null", 1, 3), tmp_path / "t", "character device 1:3 is not allowed", "dev/null")
    refused(Layer().device("dev/sda", 8, 0, char=False), tmp_path / "t", "block device 8:0", "dev/sda")
    dest = tmp_path / "ok"
    unpack(Layer().dir("dev").device("dev/null", 1, 3).tar(), dest, allow_devices=True)
    st = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


def test_a_native_0_0_whiteout_device_is_allowed(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    stats = unpack(Layer().device("gone", 0, 0).tar(), dest)
    assert stats.whiteouts == 1 and os.lstat(dest / "gone").st_rdev == 0


def test_entry_budget_stops_a_bomb_and_leaves_nothing(tmp_path: Path) -> None:
    layer = Layer()
    for i in range(50):
        layer.file(f"f{i}")
    err = refused(layer, tmp_path / "t", "more than 20 entries", "f20", budget=UnpackBudget(max_entries=20))
    assert isinstance(err, LayerBudgetExceeded)


def test_byte_budget_stops_a_decompression_bomb(tmp_path: Path) -> None:
    bomb = gzip.compress(Layer().file("zeros", b"\0" * (8 << 20)).tar())
    assert len(bomb) < 20_000
    dest = tmp_path / "layer"
    with pytest.raises(LayerBudgetExceeded, match="budget of 1048576") as caught:
        unpack(bomb, dest, budget=UnpackBudget(max_bytes=1 << 20))
    assert "'zeros'" in str(caught.value) and not dest.exists()


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo("big")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    dest = tmp_path / "layer"
    with pytest.raises(CorruptLayer, match="extended header"):
        unpack(Layer().raw(info).tar(), dest)
    assert not dest.exists()


def test_garbage_and_diff_id_mismatch_are_corrupt_layers(tmp_path: Path) -> None:
    with pytest.raises(CorruptLayer, match=DIGEST):
        unpack(b"\x1f\x8b not really gzip", tmp_path / "a")
    with pytest.raises(CorruptLayer, match="not diff_id"):
        unpack(Layer().file("a", b"1").tar(), tmp_path / "b", diff_id=sha256(b"other"))
    assert list(tmp_path.iterdir()) == []


def test_whiteouts_and_opaque_dirs_become_overlay_markers(tmp_path: Path) -> None:
    layer = (
        Layer()
        .whiteout("etc/old.conf")
        .dir("var")
        .dir("var/cache")
        .opaque("var/cache")
        .file("var/cache/new", b"n")
        .whiteout("both")
        .file("both", b"kept: this layer has it")
        .file("again", b"a")
        .whiteout("again")
        .file(".wh..wh.plnk/123", b"aufs")
    )
    dest = tmp_path / "layer"
    stats = unpack(layer.tar(), dest)
    st = os.lstat(dest / "etc/old.conf")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert (dest / "var/cache/new").read_bytes() == b"n"
    assert (dest / "both").read_bytes() == b"kept: this layer has it"
    assert (dest / "again").read_bytes() == b"a"
    assert not (dest / ".wh..wh.plnk").exists() and not list(dest.rglob(".wh.*"))
    # old.conf and both (made, then replaced by this layer's own file); "again" came after its file.
    assert (stats.whiteouts, stats.opaque_dirs) == (2, 1)


def test_ownership_modes_times_and_xattrs_are_kept(tmp_path: Path) -> None:
    layer = (
        Layer()
        .dir("srv", mode=0o750, uid=1000, gid=1001)
        .file(
            "srv/suid",
            b"#!",
            mode=0o4755,
            uid=1000,
            gid=1001,
            xattrs={"user.note": "hi", "security.capability": CAP_NET_BIND},
        )
        .file("srv/sgid", b"", mode=0o2711, uid=0, gid=50)
        .dir("tmp", mode=0o1777)
        .symlink("srv/link", "suid")
        .hardlink("srv/hard", "srv/suid")
        .fifo("srv/pipe")
        .file("srv/trusted", b"", xattrs={"trusted.overlay.redirect": "/etc", "user.ok": "1"})
    )
    dest = tmp_path / "layer"
    unpack(layer.tar(), dest)
    st = os.lstat(dest / "srv/suid")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o4755)
    assert st.st_mtime == MTIME and st.st_nlink == 2 and os.lstat(dest / "srv/hard").st_ino == st.st_ino
    assert os.getxattr(dest / "srv/suid", "user.note") == b"hi"
    assert os.getxattr(dest / "srv/suid", "security.capability") == CAP_NET_BIND.encode()
    assert stat.S_IMODE(os.lstat(dest / "srv/sgid").st_mode) == 0o2711 and os.lstat(dest / "srv/sgid").st_gid == 50
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    srv = os.lstat(dest / "srv")
    assert (srv.st_uid, stat.S_IMODE(srv.st_mode), srv.st_mtime) == (1000, 0o750, MTIME)
    assert os.readlink(dest / "srv/link") == "suid" and os.lstat(dest / "srv/link").st_mtime == MTIME
    assert stat.S_ISFIFO(os.lstat(dest / "srv/pipe").st_mode)
    assert "trusted.overlay.redirect" not in os.listxattr(dest / "srv/trusted")
    assert os.getxattr(dest / "srv/trusted", "user.ok") == b"1"


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    layer = (
        Layer()
        .file("x", b"first")
        .file("x", b"second")
        .symlink("y", "x")
        .file("y", b"file now")
        .dir("d")
        .file("d/inner")
        .file("d", b"dir replaced")
        .file("z", b"f")
        .dir("z", mode=0o700)
    )
    dest = tmp_path / "layer"
    unpack(layer.tar(), dest)
    assert (dest / "x").read_bytes() == b"second"
    assert not (dest / "y").is_symlink() and (dest / "y").read_bytes() == b"file now"
    assert (dest / "d").read_bytes() == b"dir replaced"
    assert (dest / "z").is_dir()


def test_a_file_never_replaces_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("safe")
    layer = Layer().symlink("target", str(outside)).file("target", b"overwrite?")
    dest = tmp_path / "layer"
    unpack(layer.tar(), dest)
    assert outside.read_text() == "safe" and (dest / "target").read_bytes() == b"overwrite?"


@pytest.mark.parametrize("compression", ["none", "gzip", "gzip-file", "xz", "zstd"])
def test_compressions_are_sniffed(tmp_path: Path, compression: str) -> None:
    tar = Layer().dir("etc").file("etc/hello", b"hi\n").tar()
    blobs = {"none": tar, "gzip": gzip.compress(tar), "gzip-file": gzip.compress(tar), "xz": lzma.compress(tar)}
    if compression == "zstd":
        assert shutil.which("zstd"), "apt-get install zstd"
        blobs["zstd"] = subprocess.run(["zstd", "-q", "-c"], input=tar, capture_output=True, check=True).stdout
    dest = tmp_path / "layer"
    if compression in ("gzip-file", "zstd"):  # real files (zstd goes through a child zstd -dc)
        path = tmp_path / "blob"
        path.write_bytes(blobs[compression])
        with path.open("rb") as f:
            stats = unpack_layer(f, dest, digest=DIGEST, diff_id=sha256(tar))
    else:
        stats = unpack(blobs[compression], dest, diff_id=sha256(tar))
    assert (dest / "etc/hello").read_bytes() == b"hi\n" and stats.diff_id == sha256(tar)
    assert stats.stream_bytes == len(tar) and stats.entries == 2


@pytest.mark.parametrize("program", ["gzip", "zstd"])
def test_a_truncated_compressed_file_is_refused(tmp_path: Path, program: str) -> None:
    tar = Layer().file("a", os.urandom(100_000)).tar()
    good = subprocess.run([program, "-c"], input=tar, capture_output=True, check=True).stdout
    path = tmp_path / "blob"
    path.write_bytes(good[: len(good) // 2])
    with path.open("rb") as f, pytest.raises(CorruptLayer, match=DIGEST):
        unpack_layer(f, tmp_path / "layer", digest=DIGEST)
    assert not (tmp_path / "layer").exists()


def test_strip_prefix_keeps_only_the_aci_rootfs(tmp_path: Path) -> None:
    layer = Layer().file("manifest", b"{}").dir("rootfs").dir("rootfs/bin").file("rootfs/bin/app", b"x", mode=0o755)
    dest = tmp_path / "layer"
    unpack(layer.tar(), dest, strip_prefix="rootfs/")
    assert sorted(p.name for p in dest.iterdir()) == ["bin"] and (dest / "bin/app").read_bytes() == b"x"
