"""ACI pieces without servers: the appc: prefix, manifest rules, discovery templates and meta tags."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nomad_rkt_driver.images.acimanifest import InvalidACIManifest, parse_manifest
from nomad_rkt_driver.images.discovery import check_fetched, parse_meta, prefixes, render
from nomad_rkt_driver.images.imageconfig import NamedPort
from nomad_rkt_driver.images.reference import AppcNameReference, DockerReference, parse_reference


def test_the_appc_prefix_names_an_appc_image_and_round_trips() -> None:
    ref = parse_reference("appc:example.com/app:1.0")
    assert isinstance(ref, AppcNameReference) and ref.version == "1.0" and ref.labels["os"] == "linux"
    assert parse_reference(str(ref)) == ref  # the canonical form carries os/arch labels, so it stays appc
    assert isinstance(parse_reference("example.com/app:1.0"), DockerReference)  # bare still means docker


def _manifest(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "example.com/web",
        "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
        "app": {"exec": ["/bin/httpd"], "user": "0", "group": "0"},
    }
    base.update(fields)
    return json.dumps(base).encode()


def test_manifest_ports_keep_their_names_for_port_map() -> None:
    app = {
        "exec": ["/bin/httpd"],
        "user": "0",
        "group": "0",
        "ports": [{"name": "http", "protocol": "tcp", "port": 80}],
    }
    defaults = parse_manifest(_manifest(app=app), "x.aci").defaults()
    assert defaults.port("http") == NamedPort("http", 80, "tcp") and defaults.working_dir == "/"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"acVersion": None}, "field acVersion: is required"),
        ({"labels": [{"name": "os", "value": "plan9"}]}, "os='plan9' is not one of"),
        ({"labels": [{"name": "arch", "value": "amd64"}]}, "needs an os label"),
        ({"labels": [{"name": "name", "value": "x"}]}, 'may not be called "name"'),
        ({"app": {"exec": [], "user": "0", "group": "0"}}, "app.exec: must be a non-empty list"),
        ({"app": {"user": "/etc/owner", "group": "0"}}, "app.user: '/etc/owner': a user given as a file path"),
        ({"app": {"user": "0", "group": "0", "workingDirectory": "srv"}}, "app.workingDirectory: 'srv' must be"),
        ({"app": {"user": "0", "group": "0", "eventHandlers": [{"name": "pre-start"}]}}, "not supported"),
        (
            {
                "app": {
                    "user": "0",
                    "group": "0",
                    "ports": [{"name": "a", "protocol": "tcp", "port": 65535, "count": 2}],
                }
            },
            "ports 65535..65536 go past 65535",
        ),
    ],
)
def test_manifest_rules_name_the_field(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidACIManifest, match="manifest field") as caught:
        parse_manifest(_manifest(**fields), "x.aci")
    assert fragment in str(caught.value)


def test_templates_fill_labels_and_skip_leftovers() -> None:
    labels = {"os": "linux", "arch": "amd64", "channel": "beta"}
    assert (
        render("https://h/{name}-{version}-{channel}.{ext}", "h/app", labels, "aci")
        == "https://h/h/app-latest-beta.aci"
    )
    assert render("https://h/{name}-{flavour}.{ext}", "h/app", labels, "aci") is None
    assert prefixes("a/b/c") == ["a/b/c", "a/b", "a"]


def test_meta_tags_are_read_from_html() -> None:
    html = (
        '<html><head><meta name="ac-discovery" content="example.com https://example.com/{name}.{ext}">'
        '<meta name="ac-discovery-pubkeys" content="example.com https://example.com/keys.asc">'
        '<meta name="description" content="other"><meta name="ac-discovery" content="broken"></head></html>'
    )
    assert parse_meta(html) == [
        ("ac-discovery", "example.com", "https://example.com/{name}.{ext}"),
        ("ac-discovery-pubkeys", "example.com", "https://example.com/keys.asc"),
    ]


def test_fetched_image_checks_use_rkts_words() -> None:
    ref = parse_reference("example.com/app:1.0,channel=beta")
    assert isinstance(ref, AppcNameReference)
    labels = {"os": "linux", "arch": ref.labels["arch"], "version": "1.0"}
    assert (
        check_fetched(ref, "example.com/app", labels) == 'requested label "channel" not provided by the image manifest'
    )
    assert check_fetched(ref, "example.com/other", labels) == (
        'error when reading the app name: "example.com/app" expected but "example.com/other" found'
    )
    assert check_fetched(ref, "example.com/app", {**labels, "channel": "beta"}) is None
