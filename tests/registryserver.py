"""Test fixture: a real ``docker-registry`` on 127.0.0.1, plus a fault-injecting proxy and a token server.

Flavours: ``plain`` (HTTP), ``tls-basic`` (HTTPS with a CA made here by ``openssl`` and
htpasswd basic auth), ``token`` (HTTP with Bearer token auth; :class:`TokenServer` issues
RS256 JWTs signed by ``openssl dgst`` with the key whose certificate the registry trusts).
Images are pushed by ``skopeo copy``. :class:`FaultProxy` sits in front of a registry to
count, slow down, fail or redirect requests — it forwards to the real registry, it never
answers in its place (except the 5xx/redirects it is told to inject).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any, Final

READY_TIMEOUT_S: Final = 15.0
USERNAME: Final = "puller"
PASSWORD: Final = "s3cret-Pa55"
SERVICE: Final = "test-registry"
ISSUER: Final = "test-token-issuer"


def need(binary: str, package: str) -> str:
    """The path of ``binary``; fails (never skips) the test with an install hint when it is missing."""
    path = shutil.which(binary)
    if path is None:
        raise AssertionError(f"{binary} is not installed: apt-get install {package} (scripts/setup.sh does)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([need("openssl", "openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls_files(directory: Path, san: str = "IP:127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA (ca.crt) and a server key/cert for ``san`` (default IP 127.0.0.1) signed by it; returns (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=nomad-rkt-driver test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=digitalSignature,keyEncipherment\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=directory)  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


class TokenServer:
    """A Docker token server: ``GET /token?service=…&scope=…`` with optional Basic auth → a signed JWT."""

    def __init__(self, directory: Path, *, username: str = USERNAME, password: str = PASSWORD) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key", "-out", "token.crt",
                 "-days", "2", "-subj", "/CN=nomad-rkt-driver test token issuer", cwd=directory)  # fmt: skip
        self.key = directory / "token.key"
        self.cert = directory / "token.crt"
        self._x5c = base64.b64encode(ssl.PEM_cert_to_DER_cert(self.cert.read_text())).decode()
        self.username, self.password = username, password
        self.requests: list[dict[str, str]] = []
        self.lifetime_s = 300
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def issue(self, scope: str, subject: str) -> str:
        """A JWT granting ``scope`` (``repository:NAME:ACTIONS``, space-separated for several)."""
        now = int(time.time())
        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + self.lifetime_s, "nbf": now - 5,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            [need("openssl", "openssl"), "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                auth = self.headers.get("Authorization", "")
                outer.requests.append({**query, "authorization": auth.split(" ")[0]})
                user = ""
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if (user, password) != (outer.username, outer.password):
                        self._answer(401, {"details": "wrong username or password"})
                        return
                token = outer.issue(query.get("scope", ""), user or "anonymous")
                self._answer(200, {"token": token, "access_token": token, "expires_in": outer.lifetime_s})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RegistryServer:
    """One ``docker-registry serve`` process with its storage, config and log in ``workdir``."""

    def __init__(self, workdir: Path, flavour: str = "plain") -> None:
        assert flavour in ("plain", "tls-basic", "token"), flavour
        need("docker-registry", "docker-registry")
        self.workdir = workdir
        self.flavour = flavour
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "registry.log"
        self.ca: Path | None = None
        self.token_server: TokenServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._config = workdir / "config.yml"
        self._config.write_text(json.dumps(self._config_doc()))  # JSON is YAML

    def _config_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "test-secret"},
        }
        if self.flavour == "tls-basic":
            self.ca, cert, key = make_tls_files(self.workdir / "tls")
            htpasswd = subprocess.run(
                [need("htpasswd", "apache2-utils"), "-Bbn", USERNAME, PASSWORD],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout  # fmt: skip
            (self.workdir / "htpasswd").write_text(htpasswd)
            doc["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
            doc["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(self.workdir / "htpasswd")}}
        elif self.flavour == "token":
            self.token_server = TokenServer(self.workdir / "token")
            doc["auth"] = {"token": {"realm": self.token_server.realm, "service": SERVICE, "issuer": ISSUER,
                                     "rootcertbundle": str(self.token_server.cert)}}  # fmt: skip
        return doc

    @property
    def secure(self) -> bool:
        return self.flavour == "tls-basic"

    def start(self) -> RegistryServer:
        """Start the process and wait until it accepts connections."""
        assert self._proc is None or self._proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self._config)], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"docker-registry exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"docker-registry did not listen on {self.host} within {READY_TIMEOUT_S} s")

    def kill(self) -> None:
        """SIGKILL the registry (as a crash would) and reap it."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def close(self) -> None:
        self.kill()
        if self.token_server is not None:
            self.token_server.close()
            self.token_server = None

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps blob ``digest`` (to tamper with or delete it)."""
        algorithm, _, hexpart = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hexpart[:2] / hexpart / "data"

    def push(self, source: str, repo_tag: str, *, all_platforms: bool = False) -> None:
        """``skopeo copy SOURCE docker://HOST/REPO_TAG`` (``source`` like ``oci:/dir:tag``)."""
        cmd = [need("skopeo", "skopeo"), "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
        if self.flavour != "plain":
            cmd.append(f"--dest-creds={USERNAME}:{PASSWORD}")
        if all_platforms:
            cmd.append("--all")
        proc = subprocess.run(
            [*cmd, source, f"docker://{self.host}/{repo_tag}"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"skopeo push of {source} failed: {proc.stderr}"


class FaultProxy:
    """An HTTP proxy to a plain registry that counts, throttles, fails or redirects requests."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.fail_next = 0  # answer this many next requests with 500
        self.fail_status = 500
        self.throttle_bytes_per_s: float | None = None
        self.redirect_blobs_to: str | None = None  # base URL (scheme://host:port) to send blob GETs to
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def blob_gets(self) -> Counter[str]:
        """How many times each blob digest was requested with GET."""
        with self.lock:
            return Counter(p.rsplit("/", 1)[1] for m, p, _ in self.requests if m == "GET" and "/blobs/" in p)

    def count(self, fragment: str) -> int:
        with self.lock:
            return sum(1 for _, p, _ in self.requests if fragment in p)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._forward()

            def do_GET(self) -> None:
                self._forward()

            def _forward(self) -> None:
                with outer.lock:
                    outer.requests.append((self.command, self.path, dict(self.headers.items())))
                    fail = outer.fail_next > 0
                    outer.fail_next -= 1 if fail else 0
                if fail:
                    self._simple(outer.fail_status, b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}')
                    return
                if outer.redirect_blobs_to and "/blobs/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", outer.redirect_blobs_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._relay()

            def _relay(self) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", outer.upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    try:
                        upstream.request(self.command, self.path, headers=headers)
                        resp = upstream.getresponse()
                    except OSError:
                        self._simple(502, b"upstream down")
                        return
                    self.send_response(resp.status)
                    body_len = resp.getheader("Content-Length")
                    for key, value in resp.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "date", "server"):
                            self.send_header(key, value)
                    if body_len is None:
                        data = resp.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self.end_headers()
                    if self.command != "HEAD":
                        self._stream(resp, int(body_len))
                finally:
                    upstream.close()

            def _stream(self, resp: http.client.HTTPResponse, length: int) -> None:
                sent = 0
                while sent < length:
                    rate = outer.throttle_bytes_per_s
                    try:
                        chunk = resp.read(min(64 * 1024, length - sent) if rate is None else 16 * 1024)
                    except OSError:
                        chunk = b""
                    if not chunk:  # upstream died mid-body: cut the client off too
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    try:
                        self.wfile.write(chunk)
                    except OSError:  # the client went away (a cancelled or timed-out pull)
                        self.close_connection = True
                        return
                    sent += len(chunk)
                    if rate:
                        time.sleep(len(chunk) / rate)

            def _simple(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _tar_layer(files: dict[str, bytes], *, gzip_level: int | None) -> bytes:
    import gzip
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o755, 1_700_000_000
            tar.addfile(info, io.BytesIO(files[name]))
    data = buf.getvalue()
    return data if gzip_level is None else gzip.compress(data, compresslevel=gzip_level, mtime=0)


def build_layout(
    directory: Path,
    layers: list[dict[str, bytes]],
    *,
    tag: str = "latest",
    architecture: str = "amd64",
    variant: str = "",
    gzip_level: int | None = 1,
) -> str:
    """Write a one-image OCI layout (one layer per dict of path → content); returns ``oci:DIR:TAG``.

    Layers are gzip'd tars (uncompressed when ``gzip_level`` is None). Use :func:`busybox_files`
    for a runnable bottom layer.
    """
    import hashlib

    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    media = "application/vnd.oci.image.layer.v1.tar" + ("" if gzip_level is None else "+gzip")
    layer_descs, diff_ids = [], []
    for files in layers:
        raw = _tar_layer(files, gzip_level=None)
        blob = raw if gzip_level is None else _tar_layer(files, gzip_level=gzip_level)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layer_descs.append({"mediaType": media, "digest": put(blob), "size": len(blob)})
    platform = {"os": "linux", "architecture": architecture, **({"variant": variant} if variant else {})}
    config = json.dumps(
        {**platform, "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    )
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config.encode()),
                   "size": len(config)}  # fmt: skip
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config_desc, "layers": layer_descs}).encode()  # fmt: skip
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest),
        "size": len(manifest),
        "platform": platform,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    _write_index(directory, [entry])
    return f"oci:{directory}:{tag}"


def build_index_layout(directory: Path, images: list[Path], *, tag: str = "latest") -> str:
    """Merge single-image layouts (from :func:`build_layout`) into one layout whose ``tag`` is an index."""
    import hashlib

    entries = []
    for image in images:
        for blob in (image / "blobs" / "sha256").iterdir():
            target = directory / "blobs" / "sha256" / blob.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, target)
        (entry,) = json.loads((image / "index.json").read_text())["manifests"]
        entry.pop("annotations", None)
        entries.append(entry)
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()  # fmt: skip
    digest = hashlib.sha256(index).hexdigest()
    (directory / "blobs" / "sha256" / digest).write_bytes(index)
    _write_index(
        directory,
        [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": f"sha256:{digest}",
                "size": len(index),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    )
    return f"oci:{directory}:{tag}"


def _write_index(directory: Path, entries: list[dict[str, Any]]) -> None:
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


def busybox_files() -> dict[str, bytes]:
    """The bottom layer of a runnable image: Debian's static busybox as /bin/busybox and /bin/sh."""
    busybox = Path("/bin/busybox")
    assert busybox.is_file(), "busybox-static is not installed: apt-get install busybox-static"
    data = busybox.read_bytes()
    return {"bin/busybox": data, "bin/sh": data}
