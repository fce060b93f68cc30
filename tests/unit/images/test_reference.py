"""Image reference parsing: every form of the issue, Docker Hub defaults, and clear refusals."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images import platform as image_platform
from nomad_rkt_driver.images.reference import (
    ACIFileReference,
    ACIURLReference,
    AppcNameReference,
    DockerArchiveReference,
    DockerReference,
    ImageIDReference,
    InvalidReference,
    OCIArchiveReference,
    OCILayoutReference,
    default_app_name,
    parse_reference,
    sanitize_ac_name,
)

D256 = "sha256:" + "ab" * 32
HOST = {"os": "linux", "arch": "amd64"}

GOOD = [
    # Docker Hub defaults: docker.io registry, library/ for one component, tag latest
    ("busybox", DockerReference("docker.io", "library/busybox", "latest", None)),
    ("docker://busybox", DockerReference("docker.io", "library/busybox", "latest", None)),
    ("docker:busybox:1.36", DockerReference("docker.io", "library/busybox", "1.36", None)),
    ("redis:7", DockerReference("docker.io", "library/redis", "7", None)),
    ("bitnami/redis", DockerReference("docker.io", "bitnami/redis", "latest", None)),
    ("docker.io/busybox", DockerReference("docker.io", "library/busybox", "latest", None)),
    ("index.docker.io/library/busybox", DockerReference("docker.io", "library/busybox", "latest", None)),
    ("registry-1.docker.io/busybox", DockerReference("docker.io", "library/busybox", "latest", None)),
    ("localhost/app", DockerReference("localhost", "app", "latest", None)),
    ("localhost:5000/team/app:v1", DockerReference("localhost:5000", "team/app", "v1", None)),
    ("127.0.0.1:5000/app", DockerReference("127.0.0.1:5000", "app", "latest", None)),
    ("quay.io/coreos/etcd:v3.5.0", DockerReference("quay.io", "coreos/etcd", "v3.5.0", None)),
    (f"busybox@{D256}", DockerReference("docker.io", "library/busybox", None, D256)),
    (f"busybox:1.36@{D256}", DockerReference("docker.io", "library/busybox", "1.36", D256)),
    (
        "docker://Registry.Example:443/a_b/c-d.e__f",
        DockerReference("Registry.Example:443", "a_b/c-d.e__f", "latest", None),
    ),
    # layouts and archives
    ("oci:/srv/images/app", OCILayoutReference("/srv/images/app", None)),
    ("oci:/srv/images/app:v1.2", OCILayoutReference("/srv/images/app", "v1.2")),
    ("oci:relative/dir:latest", OCILayoutReference("relative/dir", "latest")),
    ("oci-archive:/tmp/app.tar", OCIArchiveReference("/tmp/app.tar", None)),
    ("oci-archive:/tmp/app.tar:edge", OCIArchiveReference("/tmp/app.tar", "edge")),
    ("docker-archive:/tmp/save.tar", DockerArchiveReference("/tmp/save.tar", None)),
    (
        "docker-archive:/tmp/save.tar:busybox",
        DockerArchiveReference("/tmp/save.tar", "docker.io/library/busybox:latest"),
    ),
    (
        "docker-archive:/tmp/save.tar:localhost:5000/x:t",
        DockerArchiveReference("/tmp/save.tar", "localhost:5000/x:t"),
    ),
    ("docker-archive:/tmp/save.tar:@1", DockerArchiveReference("/tmp/save.tar", "@1")),
    # ACI
    ("https://example.com/images/app-1.0.aci", ACIURLReference("https://example.com/images/app-1.0.aci")),
    ("http://127.0.0.1:8080/app.aci", ACIURLReference("http://127.0.0.1:8080/app.aci")),
    ("file:///srv/app.aci", ACIURLReference("file:///srv/app.aci")),
    ("/srv/images/app.aci", ACIFileReference("/srv/images/app.aci")),
    ("./app.aci", ACIFileReference("./app.aci")),
    ("images/app.aci", ACIFileReference("images/app.aci")),
    ("../up/dir/app", ACIFileReference("../up/dir/app")),
    (
        "example.com/app:v1.0.0,channel=beta",
        AppcNameReference("example.com/app", {"version": "v1.0.0", "channel": "beta", **HOST}),
    ),
    ("coreos.com/etcd,os=linux,arch=aarch64", AppcNameReference("coreos.com/etcd", {"os": "linux", "arch": "aarch64"})),
    ("sha512-0123abcd", ImageIDReference("sha512-0123abcd")),
]

BAD = [
    ("", "empty"),
    (" busybox", "whitespace"),
    ("Busybox", "lowercase"),
    ("library/Busy", "lowercase"),
    ("busybox:", "bad tag"),
    ("busybox:a b", "bad tag"),
    ("busybox@sha256:abc", "sha256 needs 64"),
    ("busybox@md5:" + "a" * 32, "expected sha256"),
    ("busybox@sha256:" + "A" * 64, "lowercase hex"),
    ("docker://", "no repository"),
    ("docker://localhost:5000/", "no repository"),
    ("docker://-bad-.com/x", "bad registry host"),
    ("a//b", "bad repository component"),
    ("oci:", "no path"),
    ("oci:/x:bad tag", "bad tag"),
    ("oci-archive::tag", "no path"),
    ("docker-archive:/x.tar:@one", "bad image index"),
    (f"docker-archive:/x.tar:busybox@{D256}", "named by tag"),
    ("https://example.com/app.tar.gz", "must name an .aci"),
    ("https:///app.aci", "no host"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD, ids=[g[0] or "empty" for g in GOOD])
def test_good_references_parse_and_round_trip(text: str, expected: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_platform._platform, "machine", lambda: "x86_64")
    ref = parse_reference(text)
    assert ref == expected
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(("text", "fragment"), BAD, ids=[b[0] or "empty" for b in BAD])
def test_bad_references_say_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    message = str(caught.value)
    assert fragment in message and repr(text) in message
    assert "accepted forms" in message and "oci:PATH[:TAG]" in message
    assert isinstance(caught.value, InvalidArgument)


def test_canonical_strings() -> None:
    assert str(parse_reference("busybox")) == "docker://docker.io/library/busybox:latest"
    assert str(parse_reference(f"busybox@{D256}")) == f"docker://docker.io/library/busybox@{D256}"
    assert str(parse_reference("oci:./a/../b:t")) == "oci:b:t"
    assert str(parse_reference("docker-archive:/s.tar:redis:7")) == "docker-archive:/s.tar:docker.io/library/redis:7"
    assert str(parse_reference("example.com/app,b=2,a=1")).startswith("example.com/app,a=1,arch=")


def test_docker_hub_api_host_and_manifest_reference() -> None:
    hub = parse_reference("busybox")
    assert isinstance(hub, DockerReference)
    assert (
        hub.api_host == "registry-1.docker.io" and hub.reference == "latest" and hub.name == "docker.io/library/busybox"
    )
    pinned = parse_reference(f"localhost:5000/app:v1@{D256}")
    assert isinstance(pinned, DockerReference)
    assert pinned.api_host == "localhost:5000" and pinned.reference == D256


def test_default_transport_appc_makes_bare_names_appc_names() -> None:
    ref = parse_reference("example.com/app:v1", default_transport="appc")
    assert isinstance(ref, AppcNameReference) and ref.version == "v1"
    assert isinstance(parse_reference("docker://busybox", default_transport="appc"), DockerReference)
    with pytest.raises(InvalidArgument, match="default image transport"):
        parse_reference("busybox", default_transport="rocket")


@pytest.mark.parametrize(
    ("machine", "arch"), [("x86_64", "amd64"), ("aarch64", "aarch64"), ("armv7l", "armv7l"), ("i686", "i386")]
)
def test_appc_names_default_os_and_arch_to_the_host(machine: str, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_platform._platform, "machine", lambda: machine)
    ref = parse_reference("example.com/app", default_transport="appc")
    assert isinstance(ref, AppcNameReference)
    assert ref.labels == {"os": "linux", "arch": arch}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("example.com/app,os=linux:v1", "only right after the name"),
        ("example.com/app:v1:v2", "at most once"),
        ("Example.com/app,os=linux", "AC identifier"),
        ("example.com/app,os", "LABEL=VALUE"),
        ("example.com/app,os=linux,os=freebsd", "given twice"),
        ("example.com/app,name=x", "bad label name"),
    ],
)
def test_bad_appc_names(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference, match=fragment):
        parse_reference(text, default_transport="appc")


def test_aci_signature_locations() -> None:
    url = parse_reference("https://example.com/app.aci?x=1")
    assert isinstance(url, ACIURLReference) and url.signature_url == "https://example.com/app.aci.asc?x=1"
    local = parse_reference("/srv/app.aci")
    assert isinstance(local, ACIFileReference) and local.signature_path == "/srv/app.aci.asc"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("busybox", "busybox"),
        ("quay.io/coreos/etcd:v3", "etcd"),
        ("example.com/my_app", "my-app"),
        ("oci:/srv/web-server:v1", "web-server"),
        ("/srv/app.aci", "app"),
        ("docker-archive:/x/save.tar", "save-tar"),
        ("sha512-00", "app"),
    ],
)
def test_default_app_name_is_the_last_name_component(text: str, name: str) -> None:
    assert default_app_name(parse_reference(text)) == name


def test_sanitize_ac_name() -> None:
    assert sanitize_ac_name("80/tcp") == "80-tcp"
    assert sanitize_ac_name("--Volume/var/lib--") == "volume-var-lib"
