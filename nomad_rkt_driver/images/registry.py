"""A Registry HTTP API v2 client on ``requests``: ping, manifests, streamed blobs.

HTTPS always, with TLS verified (or a CA bundle); plain HTTP only when the caller allows it
(rkt's ``insecure_options = ["http"]``). A 401 is answered once with Basic credentials or a
Bearer token from the challenge's realm (tokens cached per scope until they expire). 5xx, 429
and connection failures are retried with bounded exponential backoff; everything else becomes
a clear error naming the registry and the thing asked for. Secrets are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from nomad_rkt_driver.errors import InvalidArgument

from .auth import Credentials
from .manifest import MANIFEST_MAX_BYTES, check_digest, digest_of
from .registryerrors import (
    ImageNotFound,
    ManifestDigestMismatch,
    RegistryAuthFailed,
    RegistryTLSError,
    RegistryUnavailable,
)
from .tokens import TokenSource

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 4
BACKOFF_FIRST_S: Final = 0.25
BACKOFF_MAX_S: Final = 4.0
RETRY_AFTER_MAX_S: Final = 30.0
MAX_REDIRECTS: Final = 5
BLOB_CHUNK_BYTES: Final = 1024 * 1024
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
_PLAIN_HTTP_TLS_HINTS: Final = ("wrong version number", "record layer failure", "packet length too long")


@dataclass(frozen=True)
class RawManifest:
    """A manifest as fetched: its media type (Content-Type), exact bytes and verified digest."""

    media_type: str
    data: bytes
    digest: str


class RegistryClient:
    """One registry (``host[:port]``); thread-safe enough to fetch several blobs at once."""

    def __init__(
        self,
        registry: str,
        *,
        insecure_http: bool = False,
        tls_verify: bool | str = True,
        credentials: Credentials | None = None,
        timeout_s: float = 30.0,
        session: requests.Session | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.registry = registry
        self.base_url = f"{'http' if insecure_http else 'https'}://{registry}"
        self.insecure_http = insecure_http
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self._owns_session = session is None
        self._session = session or _new_session()
        self._verify = tls_verify
        self._tokens = TokenSource(registry, credentials, self._token_get)
        log.debug(
            "registry client for %s: http=%s tls_verify=%s credentials=%r",
            registry,
            insecure_http,
            tls_verify if isinstance(tls_verify, bool) else "ca-bundle",
            credentials,
        )

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """``GET /v2/`` — check that this is a v2 registry we may talk to; raises as the other calls do."""
        with self._send("GET", "/v2/", scope="", what="the API root /v2/") as resp:
            self._raise_for_status(resp, "the API root /v2/")

    def get_manifest(self, repository: str, reference: str, accept: tuple[str, ...]) -> RawManifest:
        """``GET /v2/<name>/manifests/<reference>`` — fetch a manifest and verify its digest.

        The bytes are checked against ``reference`` when it is a digest, else against the
        ``Docker-Content-Digest`` header when sent. Raises ImageNotFound, RegistryAuthFailed,
        RegistryUnavailable, RegistryTLSError, ManifestDigestMismatch, InvalidArgument (too big).
        """
        what = f"manifest {repository}{'@' if ':' in reference else ':'}{reference}"
        headers = {"Accept": ", ".join(accept)}
        path = f"/v2/{repository}/manifests/{reference}"
        with self._send("GET", path, scope=_pull_scope(repository), what=what, headers=headers) as resp:
            self._raise_for_status(resp, what)
            data = self._read_limited(resp, MANIFEST_MAX_BYTES, what)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            announced = resp.headers.get("Docker-Content-Digest", "")
        return RawManifest(media_type, data, _verify_manifest_digest(data, reference, announced, self.registry, what))

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        write: Callable[[bytes], None],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """``GET /v2/<name>/blobs/<digest>`` — stream the blob into ``write`` chunk by chunk.

        ``progress`` gets the size of each chunk. Returns the bytes written. The caller verifies
        the digest (the store does while writing). Errors before the first byte are retried;
        a connection lost mid-stream raises RegistryUnavailable (recoverable) — start again with
        a fresh writer. Exceptions from ``write`` propagate unchanged.
        """
        what = f"blob {digest} of {repository}"
        check_digest(digest, what)
        total = 0
        with self._send("GET", f"/v2/{repository}/blobs/{digest}", scope=_pull_scope(repository), what=what) as resp:
            self._raise_for_status(resp, what)
            try:
                # read1: hand on whatever arrived (up to a chunk) instead of waiting for a full chunk,
                # so a slow registry still shows progress and aborts/deadlines act at once.
                while chunk := resp.raw.read1(BLOB_CHUNK_BYTES, decode_content=False):
                    write(chunk)
                    total += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise RegistryUnavailable(
                    f"registry {self.registry}: no data for {self.timeout_s:g} s after {total} bytes of {what} "
                    "(pull activity timeout); the pull can be retried"
                ) from exc
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                raise RegistryUnavailable(
                    f"registry {self.registry}: connection lost after {total} bytes of {what} "
                    f"({type(exc).__name__}); the pull can be retried"
                ) from exc
        return total

    # --- transport -------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, *, scope: str, what: str, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """Send with auth and retries; returns a streaming response (use it as a context manager)."""
        url = self.base_url + path
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                resp = self._authorized(method, url, scope, headers or {}, what)
            except requests.exceptions.SSLError as exc:
                raise self._tls_error(exc) from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    raise RegistryUnavailable(
                        f"registry {self.registry} unreachable for {what} after {attempt} attempts: "
                        f"{type(exc).__name__}: {_short(exc)}"
                    ) from exc
                self._sleep(attempt, None, f"{type(exc).__name__}", what)
                continue
            if resp.status_code < 500 and resp.status_code != 429:
                return resp
            retry_after = resp.headers.get("Retry-After")
            resp.close()
            if last:
                raise RegistryUnavailable(_status_message(self.registry, resp, what, attempt))
            self._sleep(attempt, retry_after, f"HTTP {resp.status_code}", what)
        raise AssertionError("unreachable")

    def _authorized(self, method: str, url: str, scope: str, headers: dict[str, str], what: str) -> requests.Response:
        auth = self._tokens.cached_header(scope)
        resp = self._follow(method, url, _with_auth(headers, auth))
        if resp.status_code != 401:
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        auth = self._tokens.answer(challenge, scope, what)
        resp = self._follow(method, url, _with_auth(headers, auth))
        if resp.status_code == 401:
            resp.close()
            raise RegistryAuthFailed(self._tokens.rejected_message(what))
        return resp

    def _follow(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        """Request ``url`` and follow redirects, dropping Authorization when the origin changes."""
        origin = _origin(self.base_url)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._session.request(
                method, url, headers=headers, stream=True, allow_redirects=False, verify=self._verify,
                timeout=self.timeout_s,
            )  # fmt: skip
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECT_CODES or not location:
                return resp
            resp.close()
            url = urljoin(url, location)
            if _origin(url) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            log.debug("registry %s: redirected to %s", self.registry, _origin(url))
        raise RegistryUnavailable(f"registry {self.registry}: more than {MAX_REDIRECTS} redirects for {url}")

    def _token_get(self, url: str, **kwargs: Any) -> requests.Response:
        """Talk to a token realm with this client's TLS settings; connection errors become RegistryUnavailable."""
        try:
            return self._session.request(
                kwargs.pop("method", "GET"), url, verify=self._verify, timeout=self.timeout_s, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RegistryUnavailable(
                f"token server {_origin(url)} of registry {self.registry} unreachable: {_short(exc)}"
            ) from exc

    def _raise_for_status(self, resp: requests.Response, what: str) -> None:
        code = resp.status_code
        if code == 200:
            return
        detail = _error_detail(resp)
        if code == 404:
            raise ImageNotFound(
                f"registry {self.registry} has no {what} (HTTP 404{detail}); "
                + ("check the image name and tag" if what.startswith("manifest") else "the image in the registry is "
                   "incomplete: push it again")
            )  # fmt: skip
        if code == 403:
            raise RegistryAuthFailed(
                f"registry {self.registry} denied access to {what} (HTTP 403{detail}); "
                "the credentials are accepted but lack pull permission for this repository"
            )
        raise RegistryUnavailable(
            f"registry {self.registry} answered HTTP {code}{detail} for {what}", recoverable=code >= 500 or code == 429
        )

    def _read_limited(self, resp: requests.Response, limit: int, what: str) -> bytes:
        data = bytearray()
        try:
            for chunk in resp.raw.stream(64 * 1024, decode_content=True):
                data += chunk
                if len(data) > limit:
                    raise InvalidArgument(f"registry {self.registry}: {what} is larger than {limit} bytes; refusing it")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RegistryUnavailable(
                f"registry {self.registry}: connection lost reading {what}: {_short(exc)}"
            ) from exc
        return bytes(data)

    def _tls_error(self, exc: requests.exceptions.SSLError) -> RegistryTLSError:
        text = str(exc).lower()
        if any(hint in text for hint in _PLAIN_HTTP_TLS_HINTS):
            return RegistryTLSError(
                f"registry {self.registry} answers plain HTTP, not HTTPS; plain HTTP is refused unless the task "
                'sets insecure_options = ["http"]'
            )
        return RegistryTLSError(
            f"TLS to registry {self.registry} failed: {_short(exc)}; give the registry's CA certificate "
            '(the plugin\'s tls_ca_file option) or, only if you accept the risk, set insecure_options = ["tls"]'
        )

    def _sleep(self, attempt: int, retry_after: str | None, why: str, what: str) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = min(RETRY_AFTER_MAX_S, max(delay, float(retry_after)))
        log.info("registry %s: %s for %s; retry %d in %.2f s", self.registry, why, what, attempt, delay)
        time.sleep(delay)


def _new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credentials or environment proxies slipped in behind our back
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _with_auth(headers: dict[str, str], auth: str | None) -> dict[str, str]:
    return {**headers, "Authorization": auth} if auth else dict(headers)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _verify_manifest_digest(data: bytes, reference: str, announced: str, registry: str, what: str) -> str:
    expected = reference if ":" in reference else announced
    if not expected:
        return digest_of(data, "sha256")
    check_digest(expected, what)
    actual = digest_of(data, expected.split(":", 1)[0])
    if actual != expected:
        raise ManifestDigestMismatch(
            f"registry {registry} sent {what} whose bytes hash to {actual}, not {expected}; "
            "the registry or something between us altered it"
        )
    return actual


def _error_detail(resp: requests.Response) -> str:
    """The registry's first ``errors[].code: message`` from a JSON error body, as ``, CODE: msg``."""
    try:
        body: Any = resp.json() if int(resp.headers.get("Content-Length", "0") or 0) < 65536 else None
    except (ValueError, requests.RequestException, urllib3.exceptions.HTTPError):
        return ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return f", {errors[0].get('code', '')}: {str(errors[0].get('message', ''))[:200]}"
    return ""


def _status_message(registry: str, resp: requests.Response, what: str, attempts: int) -> str:
    if resp.status_code == 429:
        return f"registry {registry} is rate-limiting requests (HTTP 429) for {what} after {attempts} attempts"
    return f"registry {registry} answered HTTP {resp.status_code} for {what} after {attempts} attempts"


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "…"


__all__ = [
    "ImageNotFound",
    "ManifestDigestMismatch",
    "RawManifest",
    "RegistryAuthFailed",
    "RegistryClient",
    "RegistryTLSError",
    "RegistryUnavailable",
]
