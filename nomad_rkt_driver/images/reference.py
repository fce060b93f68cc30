"""Image references: every string form a task's ``image`` may take, parsed and normalised.

Forms (rkt.md §2.1; anchors.md row 5):

=================================  =====================================================
``docker://[REG[:PORT]/]REPO[:TAG][@DIGEST]``  Docker registry image (also ``docker:``)
``oci:PATH[:TAG]``                 an OCI image layout directory
``oci-archive:PATH[:TAG]``         a tar of an OCI image layout
``docker-archive:PATH[:REF]``      a ``docker save`` tar; REF is ``name[:tag]`` or ``@N``
``https://HOST/…/x.aci``           an ACI archive by URL (``http://`` too; ``file://``)
``/abs/x.aci``, ``./x.aci``, ``x.aci``  a local ACI file
``NAME[:VERSION][,LABEL=VALUE…]``  an appc name, found by discovery (rkt.md §3)
``appc:NAME[:VERSION][,…]``        the same, said explicitly (needed when there is no label)
``sha512-HEX``                     an ACI image ID already in the store
=================================  =====================================================

A string with no transport is a Docker reference unless ``default_transport="appc"`` says it
is an appc name (rkt's own rule). Strings that can only be a path (absolute, containing
``./``, ending ``.aci``), an image ID, or carry appc labels (``,k=v``) are recognised whatever
the default. rkt also treated any existing file as a path; we do not, because the driver's
working directory is not the task's and the answer would depend on it.

Docker Hub defaults follow docker/distribution's normaliser: a first component without a
``.`` or ``:`` that is not ``localhost`` is part of the repository, the registry is then
``docker.io`` (API host ``registry-1.docker.io``), single-component names get ``library/``,
and the tag defaults to ``latest`` unless a digest is given.

Every parsed reference has a canonical ``str()`` that parses back to an equal object.
"""

from __future__ import annotations

import os.path
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nomad_rkt_driver.config.plugin import IMAGE_TRANSPORTS as TRANSPORTS
from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images.platform import host_platform

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
#: Every form an image string may take, for error messages.
ACCEPTED_FORMS = (
    "[docker://]REGISTRY[:PORT]/REPO[:TAG][@DIGEST]",
    "oci:PATH[:TAG]",
    "oci-archive:PATH[:TAG]",
    "docker-archive:PATH[:NAME:TAG|:@INDEX]",
    "https://HOST/PATH.aci",
    "/PATH/FILE.aci",
    "[appc:]APPC-NAME[:VERSION][,LABEL=VALUE...]",
)

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
_OCI_REF_NAME_RE = re.compile(r"^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*$")
_AC_IDENTIFIER_RE = re.compile(r"^[a-z0-9]+(?:[-._~/][a-z0-9]+)*$")
_IMAGE_ID_RE = re.compile(r"^sha512-[0-9a-f]{1,128}$")
_MAX_NAME_LEN = 255


class InvalidReference(InvalidArgument):
    """An image string that does not parse; the message quotes it and says which form was expected."""

    def __init__(self, text: str, problem: str, expected: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(
            f"invalid image reference {text!r}: {problem}; expected {expected} "
            f"(accepted forms: {', '.join(ACCEPTED_FORMS)})"
        )


_DOCKER_FORM = "docker://[REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:HEX]"


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (lowercase), else raise.

    Raises:
        InvalidArgument: the digest is malformed or uses another algorithm.
    """
    algorithm, sep, hexpart = digest.partition(":")
    want = _DIGEST_HEX.get(algorithm)
    if not sep or want is None:
        raise InvalidArgument(f"invalid digest {digest!r}: expected sha256:<64 hex> or sha512:<128 hex>")
    if len(hexpart) != want or not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidArgument(f"invalid digest {digest!r}: {algorithm} needs {want} lowercase hex digits")
    return digest


@dataclass(frozen=True)
class DockerReference:
    """An image in a Docker / OCI distribution registry."""

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    transport = "docker"

    @property
    def api_host(self) -> str:
        """The host (and port) the registry API is reached at: Docker Hub's is not ``docker.io``."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/redis``."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to put in ``/v2/<repo>/manifests/<reference>``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"docker://{self.name}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class OCILayoutReference:
    """An image in an OCI image layout directory (``oci:PATH[:TAG]``)."""

    path: str
    tag: str | None = None

    transport = "oci"

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class OCIArchiveReference:
    """An image in a tar of an OCI image layout (``oci-archive:PATH[:TAG]``)."""

    path: str
    tag: str | None = None

    transport = "oci-archive"

    def __str__(self) -> str:
        return f"oci-archive:{self.path}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class DockerArchiveReference:
    """An image in a ``docker save`` tar.

    ``reference`` picks the image: a normalised Docker name ``REG/REPO:TAG`` (matched against
    the archive's ``RepoTags``), ``@N`` (the N-th image, from 0), or None for the only one.
    """

    path: str
    reference: str | None = None

    transport = "docker-archive"

    @property
    def index(self) -> int | None:
        """The image's position when chosen by ``@N``."""
        return int(self.reference[1:]) if self.reference and self.reference.startswith("@") else None

    @property
    def docker_name(self) -> DockerReference | None:
        """The image's Docker name when chosen by name."""
        if self.reference is None or self.reference.startswith("@"):
            return None
        return parse_docker(self.reference)

    def __str__(self) -> str:
        return f"docker-archive:{self.path}" + (f":{self.reference}" if self.reference else "")


@dataclass(frozen=True)
class ACIURLReference:
    """An ACI archive fetched by URL (``https://…/x.aci``, ``http://…``, ``file:///…``)."""

    url: str

    transport = "aci-url"

    @property
    def signature_url(self) -> str:
        """Where rkt looks for the detached signature: ``.aci`` replaced by ``.aci.asc``."""
        parts = urlsplit(self.url)
        return parts._replace(path=parts.path + ".asc").geturl()

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class ACIFileReference:
    """A local ACI file."""

    path: str

    transport = "aci-file"

    @property
    def signature_path(self) -> str:
        """``x.aci.asc`` next to ``x.aci`` (rkt's default signature location)."""
        return self.path + ".asc"

    def __str__(self) -> str:
        # A relative path keeps its "./" so the string still reads as a path when parsed again.
        if os.path.isabs(self.path) or "./" in self.path or self.path.endswith(".aci"):
            return self.path
        return "./" + self.path


@dataclass(frozen=True)
class AppcNameReference:
    """An appc image name with labels, resolved by meta discovery (rkt.md §3).

    ``labels`` always holds ``os`` and ``arch`` (defaulted to the host) and ``version`` when given.
    """

    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)

    transport = "appc"

    @property
    def version(self) -> str | None:
        return self.labels.get("version")

    def __str__(self) -> str:
        text = self.name
        if self.version is not None:
            text += f":{self.version}"
        rest = sorted((k, v) for k, v in self.labels.items() if k != "version")
        return text + "".join(f",{k}={v}" for k, v in rest)


@dataclass(frozen=True)
class ImageIDReference:
    """An ACI image ID (``sha512-`` and a hex prefix) looked up in the store only."""

    image_id: str

    transport = "image-id"

    def __str__(self) -> str:
        return self.image_id


Reference = (
    DockerReference
    | OCILayoutReference
    | OCIArchiveReference
    | DockerArchiveReference
    | ACIURLReference
    | ACIFileReference
    | AppcNameReference
    | ImageIDReference
)
ImageReference = Reference


def parse_reference(text: str, default_transport: str = "docker") -> Reference:
    """Parse an image string of any supported form (see the module docstring).

    ``default_transport`` is what a string without a transport means: ``docker`` or ``appc``.

    Raises:
        InvalidReference: the string does not parse; the message names the expected form.
        InvalidArgument: ``default_transport`` is not one of :data:`TRANSPORTS`.
    """
    if default_transport not in TRANSPORTS:
        raise InvalidArgument(f"unknown default image transport {default_transport!r}: use one of {TRANSPORTS}")
    if not text or text != text.strip():
        raise InvalidReference(text, "empty or surrounded by whitespace", "an image name such as busybox:latest")
    if text.startswith("docker://"):
        return parse_docker(text.removeprefix("docker://"), original=text)
    scheme, sep, rest = text.partition(":")
    if sep:
        if scheme == "docker":
            return parse_docker(rest, original=text)
        if scheme in ("oci", "oci-archive"):
            return _parse_layout(scheme, rest, text)
        if scheme == "docker-archive":
            return _parse_docker_archive(rest, text)
        if scheme in ("http", "https", "file") and rest.startswith("//"):
            return _parse_aci_url(text)
        if scheme == "appc":
            return parse_appc_name(rest)
    if os.path.isabs(text) or "./" in text or text.endswith(".aci"):
        return ACIFileReference(os.path.normpath(text) if os.path.isabs(text) else text)
    if _IMAGE_ID_RE.match(text):
        return ImageIDReference(text)
    if "," in text or default_transport == "appc":
        return parse_appc_name(text)
    return parse_docker(text, original=text)


def parse_docker(text: str, *, original: str | None = None) -> DockerReference:
    """Parse ``[REG[:PORT]/]REPO[:TAG][@DIGEST]`` with Docker Hub defaults.

    Raises:
        InvalidReference: the name, tag or digest is malformed.
    """
    original = original if original is not None else text
    name, at, digest = text.partition("@")
    if at:
        try:
            validate_digest(digest)
        except InvalidArgument as exc:
            raise InvalidReference(original, exc.message, _DOCKER_FORM) from None
    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(original, f"bad tag {tag!r}", "a tag of letters, digits, '_', '.', '-' (<= 128)")
    registry, repository = _split_domain(name, original)
    for component in repository.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            problem = (
                "repository names must be lowercase"
                if component.lower() != component
                else f"bad repository component {component!r}"
            )
            raise InvalidReference(original, problem, _DOCKER_FORM)
    if len(registry) + 1 + len(repository) > _MAX_NAME_LEN:
        raise InvalidReference(original, f"name longer than {_MAX_NAME_LEN} characters", _DOCKER_FORM)
    if tag is None and not at:
        tag = DEFAULT_TAG
    return DockerReference(registry=registry, repository=repository, tag=tag, digest=digest if at else None)


def _split_domain(name: str, original: str) -> tuple[str, str]:
    if not name:
        raise InvalidReference(original, "no repository name", _DOCKER_FORM)
    first, slash, remainder = name.partition("/")
    is_domain = bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first or first.startswith("[")
    )
    if not is_domain:
        registry, repository = DOCKER_HUB, name
    else:
        if not _DOMAIN_RE.match(first):
            raise InvalidReference(original, f"bad registry host {first!r}", _DOCKER_FORM)
        registry, repository = first, remainder
        if registry in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
    if not repository:
        raise InvalidReference(original, "no repository name after the registry", _DOCKER_FORM)
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _parse_layout(scheme: str, rest: str, original: str) -> OCILayoutReference | OCIArchiveReference:
    # containers/image splits at the first colon: the path cannot contain one, the tag can.
    path, _sep, tag = rest.partition(":")
    form = f"{scheme}:PATH[:TAG]"
    if not path:
        raise InvalidReference(original, "no path", form)
    if tag and not _OCI_REF_NAME_RE.match(tag):
        raise InvalidReference(original, f"bad tag {tag!r}", form)
    path = os.path.normpath(path)
    if scheme == "oci":
        return OCILayoutReference(path=path, tag=tag or None)
    return OCIArchiveReference(path=path, tag=tag or None)


def _parse_docker_archive(rest: str, original: str) -> DockerArchiveReference:
    form = "docker-archive:PATH[:NAME[:TAG]] or docker-archive:PATH:@INDEX"
    path, _sep, ref = rest.partition(":")
    if not path:
        raise InvalidReference(original, "no path", form)
    path = os.path.normpath(path)
    if not ref:
        return DockerArchiveReference(path=path)
    if ref.startswith("@"):
        if not ref[1:].isdigit():
            raise InvalidReference(original, f"bad image index {ref!r}", form)
        return DockerArchiveReference(path=path, reference=f"@{int(ref[1:])}")
    name = parse_docker(ref, original=original)
    if name.digest is not None:
        raise InvalidReference(original, "an archive's image is named by tag, not digest", form)
    return DockerArchiveReference(path=path, reference=str(name).removeprefix("docker://"))


def _parse_aci_url(text: str) -> ACIURLReference:
    form = "https://HOST/PATH/NAME.aci"
    parts = urlsplit(text)
    if parts.scheme != "file" and not parts.hostname:
        raise InvalidReference(text, "no host in the URL", form)
    if not parts.path.endswith(".aci"):
        raise InvalidReference(text, "an image URL must name an .aci file", form)
    return ACIURLReference(text)


def parse_appc_name(text: str) -> AppcNameReference:
    """Parse ``NAME[:VERSION][,LABEL=VALUE…]`` (appc discovery/parse.go) and default ``os``/``arch``.

    Raises:
        InvalidReference: a misplaced colon, a bad name or label, or a duplicated label.
    """
    form = "NAME[:VERSION][,LABEL=VALUE...] with NAME like example.com/app"
    first_comma, first_colon = text.find(","), text.find(":")
    if text.count(":") > 1:
        raise InvalidReference(text, "a colon may appear at most once", form)
    if first_comma > -1 and first_colon > first_comma:
        raise InvalidReference(text, "a colon may appear only right after the name", form)
    head, *pairs = text.split(",")
    name, colon, version = head.partition(":")
    labels: dict[str, str] = {}
    if colon:
        if not version:
            raise InvalidReference(text, "empty version after ':'", form)
        labels["version"] = version
    if not _AC_IDENTIFIER_RE.match(name):
        raise InvalidReference(text, f"{name!r} is not an AC identifier (lowercase a-z0-9 and -._~/)", form)
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise InvalidReference(text, f"label {pair!r} is not LABEL=VALUE", form)
        if not _AC_IDENTIFIER_RE.match(key) or key == "name":
            raise InvalidReference(text, f"bad label name {key!r}", form)
        if key in labels:
            raise InvalidReference(text, f"label {key!r} given twice", form)
        labels[key] = value
    host = host_platform()
    labels.setdefault("os", host.os)
    labels.setdefault("arch", host.appc_arch)
    return AppcNameReference(name=name, labels=labels)


def sanitize_ac_name(text: str) -> str:
    """rkt's SanitizeACName: lowercase, every char outside ``[a-z0-9-]`` → ``-``, trim ``-`` at the edges."""
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def default_app_name(ref: Reference) -> str:
    """rkt's default app name: the image name's last ``/`` component, as an AC name (``app`` if empty)."""
    match ref:
        case DockerReference() | AppcNameReference():
            base = ref.name
        case OCILayoutReference() | OCIArchiveReference() | ACIFileReference():
            base = os.path.basename(ref.path).removesuffix(".aci")
        case DockerArchiveReference():
            named = ref.docker_name
            base = named.repository if named else os.path.basename(ref.path)
        case ACIURLReference():
            base = os.path.basename(urlsplit(ref.url).path).removesuffix(".aci")
        case ImageIDReference():
            base = "app"
    return sanitize_ac_name(base.rsplit("/", 1)[-1]) or "app"
