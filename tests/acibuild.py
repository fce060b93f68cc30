"""ACI test images from Debian's busybox-static, signatures by the real ``gpg``, and a real web server.

API::

    aci_manifest(name="example.com/busybox", *, version="1.0.0", app=..., labels=None) -> dict
    build_aci(dest, manifest, rootfs=None, *, compress="gzip", extra=()) -> BuiltACI
        # rootfs: an imagebuild.Layer (default: busybox_layer()); its entries go under rootfs/.
        # manifest may be bytes (written as given, for broken manifests). compress: None, "gzip",
        # "bzip2", "xz" or "zstd". extra: (TarInfo, data) entries added as given (hostile ACIs).
    make_signer(base, name) -> Signer      # a throwaway GNUPGHOME with an ed25519 signing key
    Signer.sign(path, armor=True) -> Path  # gpg --detach-sign, written next to it as .asc
    WebServer(root, tls=(cert, key) | None, host="127.0.0.1", port=0)   # http.server in a thread
        .pages[path] = html   # answered for GET path?ac-discovery=1
        .requests             # every path asked for, in order
"""

from __future__ import annotations

import bz2
import copy
import gzip
import hashlib
import http.server
import io
import json
import lzma
import socketserver
import ssl
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.imagebuild import MTIME, Layer, busybox_layer

DEFAULT_APP: dict[str, Any] = {
    "exec": ["/bin/sh", "-c", "echo hello from the aci"],
    "user": "0",
    "group": "0",
    "workingDirectory": "/",
    "environment": [{"name": "PATH", "value": "/bin"}, {"name": "GREETING", "value": "hello-aci"}],
}


def aci_manifest(
    name: str = "example.com/busybox",
    *,
    version: str | None = "1.0.0",
    app: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An image manifest with os=linux, arch=amd64 (and version) labels plus ``labels``."""
    all_labels = {"os": "linux", "arch": "amd64", **({"version": version} if version else {}), **(labels or {})}
    return {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [{"name": k, "value": v} for k, v in all_labels.items()],
        "app": copy.deepcopy(DEFAULT_APP) if app is None else app,
    }


@dataclass
class BuiltACI:
    path: Path
    image_id: str  # sha512-<128 hex> of the uncompressed tar
    tar: bytes = field(repr=False)


def _entry(name: str, kind: bytes, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    return info


def aci_tar(manifest: dict[str, Any] | bytes, rootfs: Layer | None = None, extra: tuple[Any, ...] = ()) -> bytes:
    """The uncompressed ACI tar: manifest, rootfs/ and the rootfs layer's entries under rootfs/."""
    layer = rootfs if rootfs is not None else busybox_layer()
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest, indent=1).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = _entry("manifest", tarfile.REGTYPE, 0o644)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.addfile(_entry("rootfs", tarfile.DIRTYPE))
        for original, body in layer.entries:
            moved = copy.copy(original)
            moved.name = f"rootfs/{original.name}"
            if original.islnk():
                moved.linkname = f"rootfs/{original.linkname}"
            tar.addfile(moved, io.BytesIO(body) if moved.isreg() else None)
        for info, body in extra:
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return buf.getvalue()


def compress_bytes(data: bytes, kind: str | None) -> bytes:
    if kind is None:
        return data
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    raise ValueError(kind)


def build_aci(
    dest: Path,
    manifest: dict[str, Any] | bytes,
    rootfs: Layer | None = None,
    *,
    compress: str | None = "gzip",
    extra: tuple[Any, ...] = (),
) -> BuiltACI:
    tar = aci_tar(manifest, rootfs, extra)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(compress_bytes(tar, compress))
    return BuiltACI(dest, "sha512-" + hashlib.sha512(tar).hexdigest(), tar)


@dataclass
class Signer:
    home: Path
    fingerprint: str
    armored: bytes

    def sign(self, data: Path, *, armor: bool = True, out: Path | None = None) -> Path:
        """A detached signature of ``data`` made by gpg, at ``out`` (default ``data`` + ``.asc``)."""
        target = out or data.with_suffix(data.suffix + ".asc")
        subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", *(["--armor"] if armor else []),
             "--local-user", self.fingerprint, "--output", str(target), "--detach-sign", str(data)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return target

    def close(self) -> None:
        """Stop the gpg-agent that key generation and signing started for this home."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False, capture_output=True
        )


def make_signer(base: Path, name: str) -> Signer:
    home = base / f"gnupg-{name}"
    home.mkdir(mode=0o700, parents=True)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.com>", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")).lower()
    armored = subprocess.run([*gpg, "--armor", "--export", fingerprint], check=True, capture_output=True).stdout
    return Signer(home, fingerprint, armored)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class WebServer:
    """Serves files under ``root`` and discovery pages, over HTTPS when ``tls`` is given."""

    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None, host: str = "127.0.0.1", port: int = 0):
        self.root = root
        self.pages: dict[str, str] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                parts = urlsplit(self.path)
                if parts.query == "ac-discovery=1":
                    page = server.pages.get(parts.path)
                    body = page.encode() if page is not None else b""
                    self._answer(200 if page is not None else 404, body, "text/html")
                    return
                path = (server.root / parts.path.lstrip("/")).resolve()
                if not path.is_relative_to(server.root.resolve()) or not path.is_file():
                    self._answer(404, b"not found\n", "text/plain")
                    return
                self._answer(200, path.read_bytes(), "application/octet-stream")

            def _answer(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _Server((host, port), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port: int = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
