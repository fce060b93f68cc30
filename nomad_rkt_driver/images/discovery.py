"""appc meta discovery (rkt.md §3): where the ACI, its signature and its signing keys are, by name.

For ``example.com/app`` with labels, the prefixes ``example.com/app`` then ``example.com`` are
tried, longest first: ``GET https://<prefix>?ac-discovery=1`` (redirects followed). A failure or
a non-200 answer is retried over plain ``http://`` only when the task allows ``http``
(``insecure_options``); otherwise it is noted and the next, shorter, prefix is tried. Each page's
``<meta name="ac-discovery" content="PREFIX TEMPLATE">`` tags whose PREFIX starts the image name
give templates; ``{name}``, ``{ext}`` (``aci`` / ``aci.asc``) and every label (``{version}``,
defaulting to ``latest``, ``{os}``, ``{arch}``, custom ones) are filled in and a template with
anything ``{…}`` left over is skipped. The first prefix that yields an endpoint ends the walk
and, like rkt, only the first endpoint is used. ``ac-discovery-pubkeys`` URLs are collected for
messages only: discovered keys are never trusted automatically.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

import requests

from nomad_rkt_driver.errors import FailedPrecondition
from nomad_rkt_driver.images.acifetch import unverified_tls_allowed
from nomad_rkt_driver.images.reference import AppcNameReference

log = logging.getLogger(__name__)

PAGE_MAX_BYTES: Final = 1 << 20
CONNECT_TIMEOUT_S: Final = 20.0
_LEFTOVER: Final = re.compile(r"\{[^{}]*\}")


class DiscoveryFailed(FailedPrecondition):
    """No endpoint was found for an appc name; the message lists what was tried."""

    recoverable = True


@dataclass(frozen=True)
class Endpoints:
    """Where an appc image is: its ACI and signature URLs, and the signing keys its site offers."""

    aci: str
    signature: str
    pubkeys: tuple[str, ...] = ()


class _MetaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, str, str]] = []  # (meta name, prefix, template)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta":
            return
        values = dict(attrs)
        name, content = values.get("name"), values.get("content")
        if name not in ("ac-discovery", "ac-discovery-pubkeys") or not content:
            return
        parts = content.split(None, 1)
        if len(parts) == 2:
            self.tags.append((name, parts[0], parts[1].strip()))


def parse_meta(html: str) -> list[tuple[str, str, str]]:
    """Every ``ac-discovery`` / ``ac-discovery-pubkeys`` meta tag in a page as (name, prefix, template)."""
    parser = _MetaParser()
    parser.feed(html)
    parser.close()
    return parser.tags


def render(template: str, name: str, labels: dict[str, str], ext: str) -> str | None:
    """``template`` with ``{name}``, ``{ext}`` and the labels filled in; None if ``{…}`` is left over."""
    values = {"version": "latest", **labels, "name": name, "ext": ext}
    result = template
    for key, value in values.items():
        result = result.replace("{" + key + "}", value)
    return None if _LEFTOVER.search(result) else result


def prefixes(name: str) -> list[str]:
    """``a/b/c`` → ``["a/b/c", "a/b", "a"]`` (longest first)."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def discover(
    ref: AppcNameReference,
    *,
    allow_http: bool,
    verify: bool | str,
    timeout_s: float = 60.0,
    session: requests.Session | None = None,
) -> Endpoints:
    """Find the ACI and signature URLs for ``ref`` (see the module docstring).

    Raises:
        DiscoveryFailed: no prefix gave an endpoint (rkt: ``discovery failed``); every attempt is listed.
    """
    if verify is False:
        unverified_tls_allowed()
    owned = session is None
    http = session or requests.Session()
    tried: list[str] = []
    try:
        for prefix in prefixes(ref.name):
            tags = _fetch_page(http, prefix, allow_http, verify, timeout_s, tried)
            if tags is None:
                continue
            matching = [(kind, template) for kind, pfx, template in tags if ref.name.startswith(pfx)]
            images = [render(t, ref.name, ref.labels, "aci") for kind, t in matching if kind == "ac-discovery"]
            signatures = [render(t, ref.name, ref.labels, "aci.asc") for kind, t in matching if kind == "ac-discovery"]
            pubkeys = tuple(t for kind, t in matching if kind == "ac-discovery-pubkeys")
            usable = [(a, s) for a, s in zip(images, signatures, strict=True) if a is not None and s is not None]
            if usable:
                aci, signature = usable[0]
                log.info("image %s: discovered %s (via %s)", ref, aci, prefix)
                return Endpoints(aci, signature, pubkeys)
            tried.append(
                f"{prefix}: no ac-discovery meta tag matches {ref.name} with labels "
                f"{', '.join(f'{k}={v}' for k, v in sorted(ref.labels.items()))}"
                if tags
                else f"{prefix}: found no ACI meta tags"
            )
    finally:
        if owned:
            http.close()
    plain = "" if allow_http else '; plain-HTTP discovery is tried only with insecure_options = ["http"]'
    raise DiscoveryFailed(
        f'discovery failed for "{ref}": no endpoints discovered ({"; ".join(tried)}); the image\'s site must '
        f'serve <meta name="ac-discovery" content="PREFIX https://HOST/{{name}}-{{version}}-{{os}}-{{arch}}.{{ext}}"> '
        f"at https://<prefix>?ac-discovery=1{plain}; or fetch the ACI by its https URL instead"
    )


def _fetch_page(
    http: requests.Session, prefix: str, allow_http: bool, verify: bool | str, timeout_s: float, tried: list[str]
) -> list[tuple[str, str, str]] | None:
    for scheme in ("https", "http") if allow_http else ("https",):
        url = f"{scheme}://{prefix}?ac-discovery=1"
        try:
            with http.get(
                url, verify=verify, timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s), stream=True
            ) as resp:
                if resp.status_code != 200:
                    tried.append(f"{url}: bad HTTP status code: {resp.status_code}")
                    continue
                body = resp.raw.read(PAGE_MAX_BYTES, decode_content=True)
                return parse_meta(body.decode(resp.encoding or "utf-8", errors="replace"))
        except requests.RequestException as exc:
            text = str(exc)
            tried.append(f"{url}: {text[:200]}")
    return None


def check_fetched(ref: AppcNameReference, manifest_name: str, labels: dict[str, str]) -> str | None:
    """rkt's check of a discovered image against the name and labels asked for; the problem or None."""
    if manifest_name != ref.name:
        return f'error when reading the app name: "{ref.name}" expected but "{manifest_name}" found'
    for key, value in sorted(ref.labels.items()):
        if key not in labels:
            return f'requested label "{key}" not provided by the image manifest'
        if labels[key] != value:
            return f'requested value for label "{key}": "{value}" differs from fetched aci label value: "{labels[key]}"'
    return None
