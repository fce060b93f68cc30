"""Build OCI test images from Debian's busybox-static: by hand with tarfile, or with umoci.

API (every function returns a :class:`BuiltImage` unless said otherwise)::

    Layer()                                   # a layer under construction; chain these:
        .file(path, data=b"", mode=0o644, uid=0, gid=0, xattrs=None)
        .dir(path, mode=0o755, uid=0, gid=0)
        .symlink(path, target)   .hardlink(path, target)   .fifo(path)
        .device(path, major, minor, char=True)
        .whiteout(path)          # writes dir/.wh.name
        .opaque(dir)             # writes dir/.wh..wh..opq
        .raw(tarinfo, data=b"")  # anything else, for hostile layers
        .tar() -> bytes          # the uncompressed layer tar (PAX format, mtimes fixed)
    busybox_layer() -> Layer                  # /bin/busybox + applet symlinks + /etc/passwd, /etc/group, dirs
    build_image(dest, layers, *, config=None, tag="latest", compress=True, platform=PLATFORM)
                                              # OCI layout at dest (created or extended)
    busybox_image(dest, *, tag="latest", compress=True)
                                              # the standard 3-layer image described at STANDARD_IMAGE
    umoci_busybox_image(dest, *, tag="latest")  # the same idea built by umoci (needs root)
    busybox_variants(dest, tags, unique_bytes) -> Path
                                              # images sharing the busybox base, each with its own
                                              # layer of random bytes (disk budget tests)
    add_index(dest, images, *, tag) -> str    # a multi-platform OCI index over images already in dest
    oci_archive(layout, archive) -> Path      # tar of a layout (the oci-archive: format)
    docker_archive(image, archive, repo_tags) -> Path   # the `docker save` format (uncompressed layers)

:class:`BuiltImage` has ``layout`` (Path), ``tag``, ``manifest_digest``, ``manifest`` (bytes),
``config_digest``, ``config`` (dict), ``layer_digests``, ``diff_ids``, ``layer_tars``
(uncompressed bytes, in order) and ``layer_media_types``.
``config`` passed to build_image is merged over :data:`DEFAULT_CONFIG`'s ``config`` section.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"
BUSYBOX_HINT = "apt-get install busybox-static"
UMOCI_HINT = "apt-get install umoci"
MTIME = 1_700_000_000
PLATFORM = {"os": "linux", "architecture": "amd64"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "true", "false", "env", "id", "test", "httpd", "nc", "wget", "stat")

DEFAULT_CONFIG: dict[str, Any] = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo hello from the test image"],
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
    "WorkingDir": "/app",
    "User": "1000:1000",
    "StopSignal": "SIGINT",
    "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}},
    "Labels": {"org.example.team": "images", "io.nomad.rkt.port.admin": "9090/tcp"},
}

#: What busybox_image() puts in its three layers (paths relative to the root).
STANDARD_IMAGE = {
    "layer 1": "busybox base; etc/old.conf, etc/keep.conf; var/cache/app/lower.txt; opt/lower/a.txt",
    "layer 2": "whiteout etc/old.conf; opaque var/cache/app + var/cache/app/upper.txt; "
    "data/suid (04755, 1000:1000, xattr user.test=hello)",
    "layer 3": "app/hello.txt ('hello\\n'); app/link -> hello.txt; app/hard (hardlink of app/hello.txt); etc/motd",
}


class Layer:
    """An uncompressed layer tar built entry by entry (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: list[tuple[tarfile.TarInfo, bytes]] = []

    def _add(self, info: tarfile.TarInfo, data: bytes = b"") -> Layer:
        info.mtime = info.mtime or MTIME
        info.size = len(data) if info.isreg() else 0
        self.entries.append((info, data))
        return self

    def raw(self, info: tarfile.TarInfo, data: bytes = b"") -> Layer:
        """Add ``info`` as given (size set from ``data`` for regular files)."""
        return self._add(info, data)

    def file(
        self,
        path: str,
        data: bytes = b"",
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        xattrs: dict[str, str] | None = None,
    ) -> Layer:
        info = _info(path, tarfile.REGTYPE, mode, uid, gid)
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return self._add(info, data)

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Layer:
        return self._add(_info(path, tarfile.DIRTYPE, mode, uid, gid))

    def symlink(self, path: str, target: str) -> Layer:
        info = _info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        return self._add(info)

    def hardlink(self, path: str, target: str) -> Layer:
        info = _info(path, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        return self._add(info)

    def fifo(self, path: str) -> Layer:
        return self._add(_info(path, tarfile.FIFOTYPE, 0o644))

    def device(self, path: str, major: int, minor: int, char: bool = True) -> Layer:
        info = _info(path, tarfile.CHRTYPE if char else tarfile.BLKTYPE, 0o600)
        info.devmajor, info.devminor = major, minor
        return self._add(info)

    def whiteout(self, path: str) -> Layer:
        parent, _, name = path.rpartition("/")
        return self.file(f"{parent}/.wh.{name}" if parent else f".wh.{name}")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory.rstrip('/')}/.wh..wh..opq")

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.entries:
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        return buf.getvalue()


def _info(path: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
    return info


def busybox_layer() -> Layer:
    """The base: busybox, a few applet symlinks, passwd/group and the usual directories."""
    if not os.access(BUSYBOX, os.X_OK):
        raise RuntimeError(f"{BUSYBOX} is missing: {BUSYBOX_HINT}")
    layer = Layer()
    for d in ("bin", "etc", "dev", "proc", "sys", "root", "var", "var/tmp"):
        layer.dir(d)
    layer.dir("tmp", mode=0o1777)
    layer.file("bin/busybox", Path(BUSYBOX).read_bytes(), mode=0o755)
    for applet in APPLETS:
        layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:\napp:x:1000:\n")
    return layer


@dataclass
class BuiltImage:
    layout: Path
    tag: str | None
    manifest_digest: str
    manifest: bytes
    config_digest: str
    config: dict[str, Any]
    layer_digests: list[str]
    diff_ids: list[str]
    layer_tars: list[bytes] = field(repr=False, default_factory=list)
    layer_media_types: list[str] = field(default_factory=list)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _load_index(layout: Path) -> dict[str, Any]:
    index_path = layout / "index.json"
    if index_path.exists():
        loaded: dict[str, Any] = json.loads(index_path.read_text())
        return loaded
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def _add_to_index(layout: Path, descriptor: dict[str, Any], tag: str | None) -> None:
    index = _load_index(layout)
    if tag:
        index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
        descriptor = {**descriptor, "annotations": {REF_NAME: tag}}
    index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(index))


def build_image(
    dest: Path,
    layers: list[Layer],
    *,
    config: dict[str, Any] | None = None,
    tag: str | None = "latest",
    compress: bool = True,
    platform: dict[str, str] | None = None,
    index: bool = True,
) -> BuiltImage:
    """Write an OCI image (blobs, manifest, tagged entry in index.json) into the layout ``dest``.

    ``index=False`` leaves index.json alone (for images referenced only by :func:`add_index`).
    """
    platform = platform or PLATFORM
    _load_index(dest)
    tars = [layer.tar() for layer in layers]
    blobs = [gzip.compress(t, mtime=0) if compress else t for t in tars]
    media = OCI_LAYER_GZIP if compress else OCI_LAYER
    layer_digests = [_write_blob(dest, b) for b in blobs]
    diff_ids = [sha256(t) for t in tars]
    cfg = {
        "created": "2023-11-14T22:13:20Z",
        **platform,
        "config": {**DEFAULT_CONFIG, **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "tests/imagebuild.py"} for _ in tars],
    }
    config_bytes = json.dumps(cfg).encode()
    config_digest = _write_blob(dest, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {"mediaType": media, "digest": d, "size": len(b)} for d, b in zip(layer_digests, blobs, strict=True)
        ],
    }
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = _write_blob(dest, manifest_bytes)
    if index:
        descriptor = {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes)}
        _add_to_index(dest, {**descriptor, "platform": platform}, tag)
    return BuiltImage(
        dest,
        tag,
        manifest_digest,
        manifest_bytes,
        config_digest,
        cfg,
        layer_digests,
        diff_ids,
        tars,
        [media] * len(tars),
    )


def standard_layers() -> list[Layer]:
    """The three layers of :data:`STANDARD_IMAGE`."""
    lower = (
        busybox_layer()
        .file("etc/old.conf", b"old\n")
        .file("etc/keep.conf", b"keep\n")
        .dir("var/cache")
        .dir("var/cache/app")
        .file("var/cache/app/lower.txt", b"lower\n")
        .dir("opt")
        .dir("opt/lower")
        .file("opt/lower/a.txt", b"a\n")
    )
    middle = (
        Layer()
        .whiteout("etc/old.conf")
        .dir("var/cache/app")
        .opaque("var/cache/app")
        .file("var/cache/app/upper.txt", b"upper\n")
        .dir("data", uid=1000, gid=1000)
        .file("data/suid", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000, xattrs={"user.test": "hello"})
    )
    upper = (
        Layer()
        .dir("app", uid=1000, gid=1000)
        .file("app/hello.txt", b"hello\n", uid=1000, gid=1000)
        .symlink("app/link", "hello.txt")
        .hardlink("app/hard", "app/hello.txt")
        .file("etc/motd", b"welcome\n")
    )
    return [lower, middle, upper]


def busybox_image(dest: Path, *, tag: str | None = "latest", compress: bool = True) -> BuiltImage:
    """The standard 3-layer busybox image (see :data:`STANDARD_IMAGE`) as an OCI layout at ``dest``."""
    return build_image(dest, standard_layers(), tag=tag, compress=compress)


def add_index(dest: Path, images: list[BuiltImage], *, tag: str, platforms: list[dict[str, str]]) -> str:
    """Add a nested OCI index (a multi-platform image) over ``images`` to ``dest``, tagged ``tag``."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": i.manifest_digest, "size": len(i.manifest), "platform": p}
            for i, p in zip(images, platforms, strict=True)
        ],
    }
    data = json.dumps(index).encode()
    digest = _write_blob(dest, data)
    _add_to_index(dest, {"mediaType": OCI_INDEX, "digest": digest, "size": len(data)}, tag)
    return digest


def oci_archive(layout: Path, archive: Path) -> Path:
    """Tar the layout directory (entries relative to its root), as skopeo's oci-archive does."""
    with tarfile.open(archive, "w") as tar:
        for child in sorted(layout.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


def docker_archive(image: BuiltImage, archive: Path, repo_tags: list[str]) -> Path:
    """Write ``image`` in the ``docker save`` format: manifest.json, <hex>.json config, <id>/layer.tar."""
    config_bytes = json.dumps(image.config).encode()
    config_name = sha256(config_bytes).split(":")[1] + ".json"
    layer_names = [f"{sha256(t).split(':')[1]}/layer.tar" for t in image.layer_tars]
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}]
    with tarfile.open(archive, "w") as tar:
        for name, data in [
            (config_name, config_bytes),
            *zip(layer_names, image.layer_tars, strict=True),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))
    return archive


def _umoci(*args: str) -> None:
    if shutil.which("umoci") is None:
        raise RuntimeError(f"umoci is missing: {UMOCI_HINT}")
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def umoci_busybox_image(dest: Path, *, tag: str = "latest") -> BuiltImage:
    """A 2-layer busybox image built by umoci (an independent OCI writer), configured like ours.

    Layer 1: busybox + applets + etc/old.conf + etc/keep.conf; layer 2 (a second unpack/repack
    cycle): etc/old.conf deleted (umoci writes the whiteout), app/hello.txt added.
    """
    ref = f"{dest}:{tag}"
    _umoci("init", "--layout", str(dest))
    _umoci("new", "--image", ref)
    with tempfile.TemporaryDirectory() as work:
        bundle = Path(work) / "b1"
        _umoci("unpack", "--image", ref, str(bundle))
        rootfs = bundle / "rootfs"
        (rootfs / "bin").mkdir(exist_ok=True)
        (rootfs / "etc").mkdir(exist_ok=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "etc" / "old.conf").write_text("old\n")
        (rootfs / "etc" / "keep.conf").write_text("keep\n")
        _umoci("repack", "--image", ref, str(bundle))
        bundle2 = Path(work) / "b2"
        _umoci("unpack", "--image", ref, str(bundle2))
        (bundle2 / "rootfs" / "etc" / "old.conf").unlink()
        (bundle2 / "rootfs" / "app").mkdir()
        (bundle2 / "rootfs" / "app" / "hello.txt").write_text("hello\n")
        _umoci("repack", "--image", ref, str(bundle2))
    _umoci(
        "config",
        "--image",
        ref,
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo hello",
        "--config.env",
        "GREETING=hello",
        "--config.workingdir",
        "/app",
        "--config.user",
        "1000:1000",
        "--config.exposedports",
        "8080/tcp",
        "--config.label",
        "org.example.team=images",
    )
    return read_layout_image(dest, tag)


def read_layout_image(layout: Path, tag: str) -> BuiltImage:
    """Describe the image tagged ``tag`` in an existing layout (for layouts made by other tools)."""
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == tag]

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / digest.replace(":", "/")).read_bytes()

    manifest_bytes = blob(desc["digest"])
    manifest = json.loads(manifest_bytes)
    config = json.loads(blob(manifest["config"]["digest"]))
    layers = manifest["layers"]
    return BuiltImage(
        layout=layout,
        tag=tag,
        manifest_digest=desc["digest"],
        manifest=manifest_bytes,
        config_digest=manifest["config"]["digest"],
        config=config,
        layer_digests=[layer["digest"] for layer in layers],
        diff_ids=list(config["rootfs"]["diff_ids"]),
        layer_tars=[gzip.decompress(blob(layer["digest"])) for layer in layers],
        layer_media_types=[layer["mediaType"] for layer in layers],
    )


def busybox_variants(dest: Path, tags: str | list[str], unique_bytes: int) -> Path:
    """Images that share the busybox base layer, each with a layer of ``unique_bytes`` random bytes
    of its own (``data/<tag>``, uncompressed, so blob and unpacked layer both take that much), in
    one OCI layout at ``dest``; returns the layout (images are ``oci:<layout>:<tag>``)."""
    base = busybox_layer()
    for tag in tags:
        build_image(dest, [base, Layer().file(f"data/{tag}", os.urandom(unique_bytes))], tag=tag, compress=False)
    return dest
