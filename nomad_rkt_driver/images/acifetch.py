"""Downloads for ACI images: the archive and its detached signature, by ``https``/``http``/``file`` URL.

Bodies are streamed to a file (never held in memory) with ``requests``; TLS is verified
against the system CAs plus the plugin's ``tls_ca_file`` (see :func:`tls_verify_setting`)
unless the task set ``insecure_options = ["tls"]``. Errors keep rkt's wording
(``bad HTTP status code: 404``) and add the fix.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

import requests
import urllib3

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 20.0
SIGNATURE_MAX_BYTES: Final = 1 << 20
_CHUNK: Final = 1 << 20
_DEBIAN_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"
_bundles: dict[tuple[str, float], str] = {}
_bundles_lock = threading.Lock()


class FetchFailed(FailedPrecondition):
    """A download failed for a reason that may go away (network, TLS, server error)."""

    recoverable = True


class FetchNotFound(NotFound):
    """The server answered, but not with the file (e.g. 404)."""


def unverified_tls_allowed() -> None:
    """The task opted out of TLS checks (``tls``): urllib3's per-request warning says nothing new then."""
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def system_ca_bundle() -> str:
    """The host's CA bundle file (Debian's, else OpenSSL's default, else requests' certifi bundle)."""
    if os.path.isfile(_DEBIAN_BUNDLE):
        return _DEBIAN_BUNDLE
    default = ssl.get_default_verify_paths().cafile
    if default and os.path.isfile(default):
        return default
    import certifi

    return str(certifi.where())


def tls_verify_setting(ca_file: str | None, skip_verify: bool, bundle_dir: Path) -> bool | str:
    """What ``requests`` wants as ``verify``: False (``tls`` insecure), True, or a bundle path
    holding the system CAs followed by ``ca_file`` (written once under ``bundle_dir``).

    Raises:
        InvalidArgument: ``ca_file`` cannot be read or holds no PEM certificate.
    """
    if skip_verify:
        return False
    if not ca_file:
        return True
    try:
        extra = Path(ca_file).read_bytes()
        mtime = os.stat(ca_file).st_mtime
    except OSError as exc:
        raise InvalidArgument(
            f"tls_ca_file {ca_file!r} cannot be read ({exc.strerror}); give a PEM file of CA certificates"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in extra:
        raise InvalidArgument(f"tls_ca_file {ca_file!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    with _bundles_lock:
        cached = _bundles.get((ca_file, mtime))
        if cached and os.path.isfile(cached):
            return cached
        system = Path(system_ca_bundle()).read_bytes()
        combined = system.rstrip(b"\n") + b"\n" + extra
        bundle_dir.mkdir(parents=True, exist_ok=True)
        target = bundle_dir / f"ca-bundle-{hashlib.sha256(combined).hexdigest()[:16]}.pem"
        if not target.is_file():
            fd, temp = tempfile.mkstemp(dir=bundle_dir, prefix=".bundle-")
            with os.fdopen(fd, "wb") as f:
                f.write(combined)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        _bundles[(ca_file, mtime)] = str(target)
        return str(target)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "…"


def download(
    url: str,
    dest: Path,
    *,
    what: str,
    verify: bool | str,
    timeout_s: float,
    limit: int | None = None,
    session: requests.Session | None = None,
) -> int:
    """Write the body at ``url`` to the new file ``dest``; return its size.

    ``what`` names the file in errors (``the image``, ``the signature file``).

    Raises:
        FetchNotFound: a non-200 answer (``bad HTTP status code: N``) or a missing ``file://`` path.
        FetchFailed: connection, TLS or read errors, or a timeout.
        InvalidArgument: the body is larger than ``limit``.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        source = unquote(parts.path)
        try:
            with open(source, "rb") as src, open(dest, "xb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        except FileNotFoundError:
            raise FetchNotFound(f"error downloading {what}: open {source}: no such file or directory") from None
        size = dest.stat().st_size
        if limit is not None and size > limit:
            raise InvalidArgument(f"{what} at {url} is larger than {limit} bytes; refusing it")
        return size
    if verify is False:
        unverified_tls_allowed()
        log.warning("downloading %s from %s without TLS verification (insecure_options tls)", what, url)
    owned = session is None
    http = session or requests.Session()
    try:
        try:
            resp = http.get(url, stream=True, verify=verify, timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s))
        except requests.exceptions.SSLError as exc:
            raise FetchFailed(
                f"error downloading {what} from {url}: TLS failed: {_short(exc)}; trust the server's CA with the "
                'plugin\'s tls_ca_file option or, only if you accept the risk, set insecure_options = ["tls"]'
            ) from exc
        except requests.RequestException as exc:
            raise FetchFailed(f"error downloading {what} from {url}: {_short(exc)}") from exc
        with resp:
            if resp.status_code != 200:
                raise FetchNotFound(f"error downloading {what} from {url}: bad HTTP status code: {resp.status_code}")
            size = 0
            try:
                with open(dest, "xb") as out:
                    for chunk in resp.iter_content(_CHUNK):
                        size += len(chunk)
                        if limit is not None and size > limit:
                            raise InvalidArgument(f"{what} at {url} is larger than {limit} bytes; refusing it")
                        out.write(chunk)
            except requests.RequestException as exc:
                raise FetchFailed(f"error downloading {what} from {url}: {_short(exc)}") from exc
        log.debug("downloaded %s from %s (%d bytes)", what, url, size)
        return size
    finally:
        if owned:
            http.close()
