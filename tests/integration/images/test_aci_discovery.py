"""appc discovery against real web servers: HTTPS on 127.0.0.1:443 and plain HTTP on 127.0.0.1:80 (the
tests run as root), images named ``localhost/...`` as discovery has no port in names. Meta tags,
template filling and skipping, the prefix walk, the http fallback only with ``http``, rkt's
name/label checks, and discovered signing keys that are never trusted on their own."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.imaging import Images, ReadyImage
from nomad_rkt_driver.errors import DriverError
from nomad_rkt_driver.images.keystore import Keystore
from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.store import Store
from tests.acibuild import Signer, WebServer, aci_manifest, build_aci, make_signer
from tests.registryserver import make_tls_files

TEMPLATE = "https://localhost/aci/{name}-{version}-{os}-{arch}.{ext}"


@dataclass
class Sites:
    https: WebServer
    http: WebServer
    signer: Signer
    stranger: Signer
    trust_dir: Path
    ca: Path


def _serve(root: Path, port: int, tls: tuple[Path, Path] | None) -> WebServer:
    try:
        return WebServer(root, tls=tls, host="127.0.0.1", port=port)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            pytest.fail(f"discovery tests need 127.0.0.1:{port} free and root to bind it: {exc}")
        raise


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    base = tmp_path_factory.mktemp("discovery")
    signer, stranger = make_signer(base, "publisher"), make_signer(base, "stranger")
    trust_dir = base / "trustedkeys"
    Keystore([trust_dir]).add(signer.armored, "localhost/disc")
    ca, cert, key = make_tls_files(base / "tls", "DNS:localhost,IP:127.0.0.1")
    (base / "www").mkdir()
    (base / "plain").mkdir()
    https = _serve(base / "www", 443, (cert, key))
    try:
        http = _serve(base / "plain", 80, None)
    except BaseException:
        https.close()
        raise
    try:
        yield Sites(https, http, signer, stranger, trust_dir, ca)
    finally:
        http.close()
        https.close()
        signer.close()
        stranger.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", durable=False) as opened:
        yield opened


def prepare(
    sites: Sites, store: Store, image: str, *options: str, transport: str = "docker", **task: Any
) -> ReadyImage:
    config = decode(TaskConfig, {"image": image, "insecure_options": list(options), **task}, "task config")
    plugin = decode(
        PluginConfig,
        {
            "data_dir": str(store.root),
            "trust_dir": str(sites.trust_dir),
            "tls_ca_file": str(sites.ca),
            "default_image_transport": transport,
        },
        "plugin config",
    )
    return Images(store, Puller(store)).prepare(config, plugin, "task config")


def publish(sites: Sites, name: str, *, version: str = "1.0.0", manifest_name: str | None = None) -> Path:
    """Build, sign and serve the ACI that TEMPLATE names for ``name`` (linux/amd64, ``version``)."""
    path = sites.https.root / "aci" / f"{name}-{version}-linux-amd64.aci"
    build_aci(path, aci_manifest(manifest_name or name, version=version))
    sites.signer.sign(path)
    return path


def meta(prefix: str, template: str, kind: str = "ac-discovery") -> str:
    return f'<meta name="{kind}" content="{prefix} {template}">'


def asked(sites: Sites, fragment: str) -> list[str]:
    return [r for r in sites.https.requests + sites.http.requests if fragment in r]


def store_is_empty(store: Store) -> None:
    assert list((store.root / "records").iterdir()) == []
    assert [p for p in (store.root / "blobs").rglob("*") if p.is_file()] == []


def test_meta_tags_templates_and_the_first_endpoint(sites: Sites, store: Store) -> None:
    name = "localhost/disc/app"
    publish(sites, name)
    sites.https.pages["/disc/app"] = "\n".join(
        [
            "<html><head>",
            meta("localhost/other", TEMPLATE),  # another prefix: not for this name
            meta("localhost/disc", "https://localhost/aci/{name}-{channel}.{ext}"),  # {channel} left: skipped
            meta("localhost/disc", TEMPLATE),  # the first usable endpoint
            meta("localhost/disc", "https://localhost/mirror/{name}.{ext}"),  # never used
            "</head></html>",
        ]
    )
    ready = prepare(sites, store, f"appc:{name}:1.0.0")
    assert ready.signer is not None and ready.signer.startswith(sites.signer.fingerprint)
    assert ready.record.name == "localhost/disc/app:1.0.0,arch=amd64,os=linux"
    assert ready.defaults.env["GREETING"] == "hello-aci"
    assert asked(sites, "/aci/localhost/disc/app-1.0.0-linux-amd64.aci") == [
        "/aci/localhost/disc/app-1.0.0-linux-amd64.aci",
        "/aci/localhost/disc/app-1.0.0-linux-amd64.aci.asc",
    ]
    assert asked(sites, "/mirror/") == [] and asked(sites, "channel") == []
    before = len(sites.https.requests)
    assert prepare(sites, store, f"appc:{name}:1.0.0").record == ready.record  # stored: no discovery again
    assert len(sites.https.requests) == before


def test_bare_names_are_appc_names_when_the_plugin_says_so(sites: Sites, store: Store) -> None:
    name = "localhost/disc/bare"
    publish(sites, name)
    sites.https.pages["/disc/bare"] = meta("localhost/disc", TEMPLATE)
    ready = prepare(sites, store, f"{name}:1.0.0", transport="appc")  # rkt's reading of a bare name
    assert ready.record.name == "localhost/disc/bare:1.0.0,arch=amd64,os=linux"
    assert asked(sites, "/disc/bare?ac-discovery=1") == ["/disc/bare?ac-discovery=1"]


def test_the_walk_goes_up_to_shorter_prefixes(sites: Sites, store: Store) -> None:
    name = "localhost/disc/walk/app"
    publish(sites, name)
    sites.https.pages["/disc/walk"] = meta("localhost/disc/walk", TEMPLATE)
    ready = prepare(sites, store, f"appc:{name}:1.0.0")
    assert ready.record.kind == "aci"
    pages = [r for r in sites.https.requests if "walk" in r and "ac-discovery" in r]
    assert pages == ["/disc/walk/app?ac-discovery=1", "/disc/walk?ac-discovery=1"]


def test_plain_http_discovery_only_with_the_http_opt_out(sites: Sites, store: Store) -> None:
    name = "localhost/disc/plain"
    publish(sites, name)
    sites.http.pages["/disc/plain"] = meta("localhost/disc/plain", TEMPLATE)
    with pytest.raises(DriverError) as caught:
        prepare(sites, store, f"appc:{name}:1.0.0")
    message = str(caught.value)
    assert f'discovery failed for "{name}:1.0.0' in message and 'insecure_options = ["http"]' in message
    assert [r for r in sites.http.requests if "plain" in r] == []
    store_is_empty(store)
    ready = prepare(sites, store, f"appc:{name}:1.0.0", "http")
    assert ready.signer is not None  # http only found the endpoints: the image is still verified
    assert [r for r in sites.http.requests if "plain" in r] == ["/disc/plain?ac-discovery=1"]


def test_the_fetched_name_and_labels_must_be_the_ones_asked_for(sites: Sites, store: Store) -> None:
    publish(sites, "localhost/disc/labels", version="2.0.0")
    sites.https.root.joinpath("aci/localhost/disc/labels-2.0.0-linux-amd64.aci").write_bytes(
        publish(sites, "localhost/disc/labels-src", version="1.0.0", manifest_name="localhost/disc/labels").read_bytes()
    )
    sites.signer.sign(sites.https.root / "aci/localhost/disc/labels-2.0.0-linux-amd64.aci")
    sites.https.pages["/disc/labels"] = meta("localhost/disc/labels", TEMPLATE)
    with pytest.raises(DriverError, match=r'requested value for label "version": "2\.0\.0" differs from fetched'):
        prepare(sites, store, "appc:localhost/disc/labels:2.0.0")
    publish(sites, "localhost/disc/named", manifest_name="localhost/disc/other")
    sites.https.pages["/disc/named"] = meta("localhost/disc/named", TEMPLATE)
    with pytest.raises(DriverError) as caught:
        prepare(sites, store, "appc:localhost/disc/named:1.0.0")
    assert 'error when reading the app name: "localhost/disc/named" expected but "localhost/disc/other" found' in str(
        caught.value
    )
    store_is_empty(store)


def test_discovered_keys_are_offered_but_never_trusted(sites: Sites, store: Store) -> None:
    name = "localhost/keys/app"  # no key is trusted for localhost/keys
    path = sites.https.root / "aci" / f"{name}-1.0.0-linux-amd64.aci"
    build_aci(path, aci_manifest(name))
    sites.stranger.sign(path)
    (sites.https.root / "keys").mkdir(exist_ok=True)
    (sites.https.root / "keys" / "pubkeys.gpg").write_bytes(sites.stranger.armored)
    sites.https.pages["/keys/app"] = "\n".join(
        [
            meta("localhost/keys", TEMPLATE),
            meta("localhost/keys", "https://localhost/keys/pubkeys.gpg", "ac-discovery-pubkeys"),
        ]
    )
    with pytest.raises(DriverError) as caught:
        prepare(sites, store, f"appc:{name}:1.0.0")
    message = str(caught.value)
    assert "signature made by unknown entity" in message
    assert "https://localhost/keys/pubkeys.gpg" in message and "not trusted automatically" in message
    assert asked(sites, "pubkeys.gpg") == []
    store_is_empty(store)
