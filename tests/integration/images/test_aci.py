"""ACI images through Images.prepare (what StartTask and `fetch` run): local files and HTTPS URLs served
by a real web server with a CA made by openssl, signatures made by the real gpg, the signed / unsigned /
tampered / wrong-key matrix, hostile archives that must leave nothing in the store, compressions,
image IDs, trust_prefix, and the ACI manifest's pod defaults (named ports included)."""

from __future__ import annotations

import tarfile
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
from nomad_rkt_driver.images.imageconfig import NamedPort
from nomad_rkt_driver.images.keystore import Keystore
from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.store import Store
from tests.acibuild import BuiltACI, Signer, WebServer, aci_manifest, build_aci, make_signer
from tests.imagebuild import busybox_layer
from tests.registryserver import make_tls_files

NAME = "example.com/busybox"


@dataclass
class World:
    base: Path
    trusted: Signer
    stranger: Signer
    trust_dir: Path
    web: WebServer
    ca: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("aci")
    trusted, stranger = make_signer(base, "trusted"), make_signer(base, "stranger")
    trust_dir = base / "trustedkeys"
    Keystore([trust_dir]).add(trusted.armored, "example.com")
    Keystore([trust_dir]).add(stranger.armored, "example.org")  # trusted, but for another prefix
    ca, cert, key = make_tls_files(base / "tls", "DNS:localhost,IP:127.0.0.1")
    (base / "www").mkdir()
    web = WebServer(base / "www", tls=(cert, key))
    try:
        yield World(base, trusted, stranger, trust_dir, web, ca)
    finally:
        web.close()
        trusted.close()
        stranger.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", durable=False) as opened:
        yield opened


def prepare(world: World, store: Store, image: str, *options: str, ca: bool = True, **task: Any) -> ReadyImage:
    config = decode(TaskConfig, {"image": image, "insecure_options": list(options), **task}, "task config")
    plugin_values = {"data_dir": str(store.root), "trust_dir": str(world.trust_dir)}
    if ca:
        plugin_values["tls_ca_file"] = str(world.ca)
    plugin = decode(PluginConfig, plugin_values, "plugin config")
    return Images(store, Puller(store)).prepare(config, plugin, "task config")


def store_is_empty(store: Store) -> None:
    for sub in ("blobs", "layers", "records"):
        left = [p for p in (store.root / sub).rglob("*") if p.is_file() or (sub == "layers" and p.is_dir())]
        assert left == [], f"{sub} left in the store: {left}"


def http_manifest(name: str = NAME) -> dict[str, Any]:
    manifest = aci_manifest(name)
    manifest["app"]["ports"] = [{"name": "http", "protocol": "tcp", "port": 8080}]
    return manifest


# -- the signature matrix ------------------------------------------------------------------------


def _cell(world: World, tmp_path: Path, cell: str) -> BuiltACI:
    built = build_aci(tmp_path / "img" / "busybox.aci", http_manifest())
    if cell == "signed":
        world.trusted.sign(built.path)
    elif cell == "signed-binary":
        world.trusted.sign(built.path, armor=False)
    elif cell == "tampered":
        world.trusted.sign(built.path)
        other = build_aci(tmp_path / "other.aci", http_manifest(), busybox_layer().file("etc/motd", b"evil\n"))
        built.path.write_bytes(other.path.read_bytes())
        built = other
    elif cell == "wrong-key":
        world.stranger.sign(built.path)
    elif cell == "other-prefix":  # the image is named example.org/…, whose trusted key did not sign it
        built = build_aci(tmp_path / "img" / "busybox.aci", http_manifest("example.org/busybox"))
        world.trusted.sign(built.path)
    return built


MATRIX = [
    ("signed", None),
    ("signed-binary", None),
    ("unsigned", "error opening signature file"),
    ("tampered", "does not match its signature"),
    ("wrong-key", "signature made by unknown entity"),
    ("other-prefix", "signature made by unknown entity"),
]


@pytest.mark.parametrize(("cell", "error"), MATRIX)
def test_local_file_signature_matrix(world: World, store: Store, tmp_path: Path, cell: str, error: str | None) -> None:
    built = _cell(world, tmp_path, cell)
    if error is None:
        ready = prepare(world, store, str(tmp_path / "img" / "busybox.aci"))
        assert ready.signer is not None and ready.signer.startswith(world.trusted.fingerprint)
        assert ready.record.kind == "aci" and ready.record.layers[0].diff_id == "sha512:" + built.image_id[7:]
        assert (ready.lower_dirs[0] / "bin" / "busybox").is_file()
        assert not (ready.lower_dirs[0] / "manifest").exists()
        return
    with pytest.raises(DriverError) as caught:
        prepare(world, store, str(tmp_path / "img" / "busybox.aci"))
    assert error in str(caught.value)
    if cell != "tampered":
        assert 'insecure_options = ["image"]' in str(caught.value)
    store_is_empty(store)
    ready = prepare(world, store, str(tmp_path / "img" / "busybox.aci"), "image")  # the opt-out lets it run
    assert ready.signer is None and ready.record.kind == "aci"


@pytest.mark.parametrize(("cell", "error"), MATRIX)
def test_https_url_signature_matrix(world: World, store: Store, tmp_path: Path, cell: str, error: str | None) -> None:
    built = _cell(world, tmp_path, cell)
    folder = world.web.root / f"matrix-{cell}"
    folder.mkdir()
    (folder / "busybox.aci").write_bytes(built.path.read_bytes())
    signature = tmp_path / "img" / "busybox.aci.asc"
    if signature.exists():
        (folder / "busybox.aci.asc").write_bytes(signature.read_bytes())
    url = world.web.url(f"matrix-{cell}/busybox.aci")
    if error is None:
        ready = prepare(world, store, url)
        assert ready.signer is not None and ready.signer.startswith(world.trusted.fingerprint)
        assert ready.record.name == url
        return
    with pytest.raises(DriverError) as caught:
        prepare(world, store, url)
    expected = "bad HTTP status code: 404" if cell == "unsigned" else error
    assert expected in str(caught.value)
    store_is_empty(store)
    assert prepare(world, store, url, "image").signer is None


def test_url_is_fetched_once_and_again_only_with_force_pull(world: World, store: Store, tmp_path: Path) -> None:
    built = build_aci(world.web.root / "once" / "busybox.aci", http_manifest())
    world.trusted.sign(built.path)
    url = world.web.url("once/busybox.aci")
    first = prepare(world, store, url)
    asked = [r for r in world.web.requests if r.startswith("/once/")]
    assert asked == ["/once/busybox.aci", "/once/busybox.aci.asc"]
    again = prepare(world, store, url)  # from the store, its kept signature checked again
    assert again.record == first.record and again.signer == first.signer
    assert [r for r in world.web.requests if r.startswith("/once/")] == asked
    prepare(world, store, url, force_pull=True)
    assert len([r for r in world.web.requests if r.startswith("/once/")]) == 4
    # stored unverified (opt-out) does not make it trusted for a task without the opt-out
    unsigned = build_aci(world.web.root / "once" / "unsigned.aci", http_manifest())
    prepare(world, store, world.web.url("once/unsigned.aci"), "image")
    with pytest.raises(DriverError, match="bad HTTP status code: 404"):
        prepare(world, store, world.web.url("once/unsigned.aci"))
    assert unsigned.path.exists()


def test_tls_needs_the_ca_option_or_the_tls_opt_out(world: World, store: Store) -> None:
    built = build_aci(world.web.root / "tls" / "busybox.aci", http_manifest())
    world.trusted.sign(built.path)
    url = world.web.url("tls/busybox.aci")
    with pytest.raises(DriverError, match="tls_ca_file") as caught:
        prepare(world, store, url, ca=False)
    assert "certificate verify failed" in str(caught.value)
    store_is_empty(store)
    assert prepare(world, store, url, "tls", ca=False).signer is not None


def test_image_id_resolves_from_the_store(world: World, store: Store, tmp_path: Path) -> None:
    built = build_aci(tmp_path / "id.aci", http_manifest())
    world.trusted.sign(built.path)
    with pytest.raises(DriverError, match="could not resolve image"):
        prepare(world, store, built.image_id[:71])
    first = prepare(world, store, str(built.path))
    for text in (built.image_id[:71], built.image_id[:20], built.image_id):
        ready = prepare(world, store, text)
        assert ready.record == first.record and ready.signer == first.signer
    with pytest.raises(DriverError, match="could not resolve image"):
        prepare(world, store, "sha512-" + ("0" if built.image_id[7] != "0" else "1") * 64)


# -- hostile and malformed ACIs ------------------------------------------------------------------


def _raw(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, 0o644, linkname
    return info


def _manifest_with(**app: Any) -> dict[str, Any]:
    manifest = aci_manifest()
    manifest["app"].update(app)
    return manifest


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "traversal": ({"extra": ((_raw("rootfs/../../etc/evil"), b"x"),)}, "'rootfs/../../etc/evil' has a '..'"),
    "absolute": ({"extra": ((_raw("/etc/evil"), b"x"),)}, "'/etc/evil' has an absolute name"),
    "extra-top-level": ({"extra": ((_raw("notes.txt"), b"x"),)}, "entry 'notes.txt' is outside manifest and rootfs/"),
    "symlink-escape": (
        {"rootfs": busybox_layer().symlink("escape", "/etc").file("escape/passwd", b"x")},
        "'rootfs/escape/passwd'",
    ),
    "hardlink-out": ({"extra": ((_raw("rootfs/pw", tarfile.LNKTYPE, "manifest"), b""),)}, "'rootfs/pw'"),
    "device": ({"rootfs": busybox_layer().device("dev/sda", 8, 0, char=False)}, "block device 8:0 is not allowed"),
    "duplicate": ({"extra": ((_raw("rootfs/etc/passwd"), b"x"),)}, "'rootfs/etc/passwd' appears twice"),
    "not-json": ({"manifest": b"{not json"}, "manifest field (whole file): not valid JSON"),
    "bad-kind": ({"manifest": {**aci_manifest(), "acKind": "PodManifest"}}, 'acKind: must be "ImageManifest"'),
    "bad-name": ({"manifest": aci_manifest("Example.com/BusyBox")}, "field name: 'Example.com/BusyBox' is not an AC"),
    "bad-version": ({"manifest": {**aci_manifest(), "acVersion": "one"}}, "field acVersion: 'one' is not a semantic"),
    "bad-arch": ({"manifest": aci_manifest(labels={"arch": "x86_64"})}, "arch='x86_64' is not valid with os='linux'"),
    "no-user": ({"manifest": _manifest_with(user=None)}, "field app.user: is required"),
    "bad-port-name": (
        {"manifest": _manifest_with(ports=[{"name": "HTTP", "protocol": "tcp", "port": 80}])},
        "app.ports[0].name: 'HTTP' is not an AC Name",
    ),
    "bad-port": (
        {"manifest": _manifest_with(ports=[{"name": "http", "protocol": "tcp", "port": 70000}])},
        "app.ports[0].port: 70000 is not a port number",
    ),
    "bad-protocol": (
        {"manifest": _manifest_with(ports=[{"name": "http", "protocol": "icmp", "port": 80}])},
        "app.ports[0].protocol: 'icmp' is not one of tcp, udp",
    ),
    "dependencies": (
        {"manifest": {**aci_manifest(), "dependencies": [{"imageName": "example.com/base"}]}},
        "field dependencies: ACI dependencies are not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_and_malformed_acis_are_refused_leaving_nothing(
    world: World, store: Store, tmp_path: Path, case: str
) -> None:
    parts, message = HOSTILE[case]
    manifest = parts.get("manifest", aci_manifest())
    built = build_aci(tmp_path / "bad.aci", manifest, parts.get("rootfs"), extra=parts.get("extra", ()))
    with pytest.raises(DriverError) as caught:
        prepare(world, store, str(built.path), "image")
    assert message in str(caught.value), str(caught.value)
    store_is_empty(store)
    assert list((store.root / "tmp").rglob("*.aci")) == []


@pytest.mark.parametrize("compression", [None, "bzip2", "xz", "zstd"])
def test_compressions_give_the_same_image_id(world: World, store: Store, tmp_path: Path, compression: str) -> None:
    built = build_aci(tmp_path / "c.aci", aci_manifest(), compress=compression)
    ready = prepare(world, store, str(built.path), "image")
    assert ready.record.layers[0].diff_id == "sha512:" + built.image_id[7:]
    assert (ready.lower_dirs[0] / "bin" / "busybox").is_file()


# -- what a pod takes from the manifest, and trust_prefix ----------------------------------------


def test_manifest_gives_the_pod_defaults_and_named_ports(world: World, store: Store, tmp_path: Path) -> None:
    manifest = _manifest_with(
        exec=["/bin/httpd", "-f", "-p", "8080"],
        user="1000",
        group="1000",
        workingDirectory="/srv",
        ports=[
            {"name": "http", "protocol": "tcp", "port": 8080},
            {"name": "dns", "protocol": "udp", "port": 53, "count": 2},
        ],
    )
    built = build_aci(tmp_path / "d.aci", manifest)
    defaults = prepare(world, store, str(built.path), "image").defaults
    assert defaults.exec == ("/bin/httpd", "-f", "-p", "8080")
    assert defaults.env == {"PATH": "/bin", "GREETING": "hello-aci"}
    assert (defaults.user, defaults.group, defaults.working_dir) == ("1000", "1000", "/srv")
    assert defaults.ports == (NamedPort("dns", 53, "udp"), NamedPort("http", 8080, "tcp"))
    assert defaults.labels["version"] == "1.0.0"


def test_trust_prefix_restricts_the_names_a_task_may_run(world: World, store: Store, tmp_path: Path) -> None:
    built = build_aci(tmp_path / "t.aci", aci_manifest())
    world.trusted.sign(built.path)
    with pytest.raises(DriverError, match=r'not under trust_prefix "example\.com/other"'):
        prepare(world, store, str(built.path), trust_prefix="example.com/other")
    store_is_empty(store)
    assert prepare(world, store, str(built.path), trust_prefix="example.com").signer is not None


def test_an_openpgp_key_kept_in_vault_verifies_acis_of_its_prefix(world: World, store: Store, tmp_path: Path) -> None:
    from tests.baoserver import ROOT_TOKEN, start

    (tmp_path / "bao").mkdir()
    bao = start(tmp_path / "bao")
    try:
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="keys/aci", secret={"key": world.stranger.armored.decode()}
        )
        built = build_aci(tmp_path / "vault.aci", aci_manifest("vault.example.com/app"))
        world.stranger.sign(built.path)
        task = decode(TaskConfig, {"image": str(built.path)}, "task config")
        base = {"data_dir": str(store.root), "trust_dir": str(world.trust_dir)}
        vault = {"address": bao.address, "auth": {"token": ROOT_TOKEN}}
        with pytest.raises(DriverError, match="signature made by unknown entity"):  # no trust block yet
            Images(store, Puller(store)).prepare(task, decode(PluginConfig, base, "p"), "task config")
        trusted = decode(
            PluginConfig,
            {**base, "vault": vault, "trust": [{"prefix": "vault.example.com", "vault_path": "secret/data/keys/aci"}]},
            "p",
        )
        ready = Images(store, Puller(store)).prepare(task, trusted, "task config")
        assert ready.signer == f"{world.stranger.fingerprint} (vault:secret/data/keys/aci)"
    finally:
        bao.stop()
