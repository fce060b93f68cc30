"""Cosign signatures in a registry: fetch ``sha256-<hex>.sig`` and decide whether an image may run.

cosign stores the signatures of the manifest with digest ``sha256:H`` in the same repository
under the tag ``sha256-H.sig``: an OCI manifest whose layers are simple-signing payloads
(media type ``application/vnd.dev.cosign.simplesigning.v1+json``), each with its base64
signature in the ``dev.cosignproject.cosign/signature`` annotation. Keyless certificates and
transparency-log bundles are not used: keys come from the trust directory only.

An image is accepted when at least one payload (a) hashes to its layer digest, (b) carries a
signature that verifies with a key trusted for the image's name, (c) names the digest the
registry serves for the reference and (d) names the image's repository. Otherwise the refusal
says which of these failed, naming the image, the digest and the fix.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from nomad_rkt_driver.errors import InvalidArgument

from .manifest import ACCEPTED_MANIFEST_TYPES, DOCKER_MANIFEST, OCI_MANIFEST, digest_of
from .reference import DockerReference, parse_docker
from .registry import RegistryClient
from .registryerrors import ImageNotFound
from .sigstore import (
    PAYLOAD_MAX_BYTES,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    ImageUnsigned,
    InvalidPayload,
    NoTrustedKeys,
    SignatureMismatch,
    UntrustedSignature,
    decode_signature,
    parse_payload,
    verify,
)
from .trust import SigstoreTrust, TrustedKey

log = logging.getLogger(__name__)

MAX_SIGNATURES: Final = 32
OPT_OUT: Final = 'insecure_options = ["image"]'


def signature_tag(digest: str) -> str:
    """``sha256:H`` → ``sha256-H.sig``, the tag cosign stores that digest's signatures under."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}.sig"


@dataclass(frozen=True)
class SignedPayload:
    """One signature layer as fetched: payload bytes (digest checked) and the raw signature."""

    layer_digest: str
    payload: bytes | None
    signature: bytes | None
    problem: str | None = None  # why this layer cannot count (payload altered, no annotation, …)


@dataclass(frozen=True)
class Evidence:
    """The signature that verified a digest, kept with the stored image to check it again offline."""

    digest: str
    layer_digest: str
    payload: bytes
    signature: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "digest": self.digest,
                "layer": self.layer_digest,
                "payload": base64.b64encode(self.payload).decode(),
                "signature": base64.b64encode(self.signature).decode(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Evidence | None:
        """None for text that is not evidence (a damaged record is verified online again)."""
        try:
            doc = json.loads(text)
            return cls(
                str(doc["digest"]),
                str(doc["layer"]),
                base64.b64decode(doc["payload"], validate=True),
                base64.b64decode(doc["signature"], validate=True),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Verified:
    """An accepted image: the digest the reference resolved to, the key that vouched for it, and how."""

    digest: str
    signer: TrustedKey
    evidence: Evidence


def fetch_signatures(client: RegistryClient, repository: str, digest: str) -> list[SignedPayload] | None:
    """The signature layers stored for ``digest`` in ``repository``; None when there is no ``.sig`` tag."""
    tag = signature_tag(digest)
    try:
        raw = client.get_manifest(repository, tag, (OCI_MANIFEST, DOCKER_MANIFEST))
    except ImageNotFound:
        return None
    try:
        doc: Any = json.loads(raw.data)
        layers = doc["layers"]
        if not isinstance(layers, list):
            raise TypeError("layers is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureMismatch(
            f"signature manifest {repository}:{tag} in registry {client.registry} is not a cosign signature "
            f"manifest ({exc}); delete it and sign the image again"
        ) from exc
    found = []
    for layer in layers[:MAX_SIGNATURES]:
        if isinstance(layer, dict) and layer.get("mediaType") == SIMPLE_SIGNING_MEDIA_TYPE:
            found.append(_fetch_one(client, repository, tag, layer))
    return found


def _fetch_one(client: RegistryClient, repository: str, tag: str, layer: dict[str, Any]) -> SignedPayload:
    digest = str(layer.get("digest", ""))
    where = f"signature layer {digest} of {repository}:{tag}"
    annotations = layer.get("annotations")
    text = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str):
        return SignedPayload(digest, None, None, f"{where} has no {SIGNATURE_ANNOTATION} annotation")
    try:
        signature = decode_signature(text, source=where)
    except InvalidPayload as exc:
        return SignedPayload(digest, None, None, exc.message)
    data = bytearray()

    def write(chunk: bytes) -> None:
        data.extend(chunk)
        if len(data) > PAYLOAD_MAX_BYTES:
            raise InvalidPayload(f"{where}: payload larger than {PAYLOAD_MAX_BYTES} bytes")

    try:
        client.fetch_blob(repository, digest, write)
        actual = digest_of(bytes(data), digest.partition(":")[0])
    except (InvalidPayload, ImageNotFound) as exc:
        return SignedPayload(digest, None, None, exc.message)
    except InvalidArgument as exc:  # a malformed digest in the signature manifest
        return SignedPayload(digest, None, None, f"{where}: {exc.message}")
    if actual != digest:
        return SignedPayload(
            digest, None, None, f"{where}: the payload in the registry was altered (its bytes hash to {actual})"
        )
    return SignedPayload(digest, bytes(data), signature)


def resolve_digest(client: RegistryClient, ref: DockerReference) -> str:
    """The digest of the manifest (or list) ``ref`` names in the registry, as cosign signs it."""
    return client.get_manifest(ref.repository, ref.reference, ACCEPTED_MANIFEST_TYPES).digest


def verify_image(client: RegistryClient, ref: DockerReference, trust: SigstoreTrust) -> Verified:
    """Resolve ``ref`` to a digest and check its cosign signatures against ``trust``.

    With no key trusted for the image's name nothing is fetched: the image cannot be verified.
    Raises ImageUnsigned, NoTrustedKeys, UntrustedSignature or SignatureMismatch (all
    SignatureRefused), InvalidPublicKey for a broken key file, or the registry client's errors.
    """
    keys = _trusted_keys(ref, trust)
    digest = resolve_digest(client, ref)
    return _Check(ref, digest, trust).run(fetch_signatures(client, ref.repository, digest), keys)


def verify_evidence(ref: DockerReference, evidence: Evidence, trust: SigstoreTrust) -> Verified:
    """Check a stored image's kept signature again against today's keys, without the registry.

    The same decision as :func:`verify_image` for the digest the signature was accepted for
    (a key removed from the trust dir since then refuses the image); raises the same errors.
    """
    signed = [SignedPayload(evidence.layer_digest, evidence.payload, evidence.signature)]
    if digest_of(evidence.payload, evidence.layer_digest.partition(":")[0]) != evidence.layer_digest:
        signed = [SignedPayload(evidence.layer_digest, None, None, "the kept signature payload was altered")]
    return _Check(ref, evidence.digest, trust).run(signed, _trusted_keys(ref, trust))


def _trusted_keys(ref: DockerReference, trust: SigstoreTrust) -> list[TrustedKey]:
    keys = trust.keys_for(ref.name)
    if not keys:
        raise NoTrustedKeys(
            f"image {ref}: no sigstore public keys are trusted for {ref.name} (looked in "
            f"{', '.join(str(p) for p in trust.searched(ref.name))}), so its signature cannot be verified; "
            f"sign it with cosign and put the public key at {trust.where_to_put(ref.name)}/<name>.pub (or under "
            f"a parent prefix, or root.d), or run it unverified with {OPT_OUT}"
        )
    return keys


class _Check:
    """The decision for one image digest and its fetched signatures."""

    def __init__(self, ref: DockerReference, digest: str, trust: SigstoreTrust) -> None:
        self.ref = ref
        self.digest = digest
        self.trust = trust
        self.image = f"{ref} ({digest})"
        self.trust_hint = (
            f"trust the signer's public key by putting it at {trust.where_to_put(ref.name)}/<name>.pub "
            f"(or under a parent prefix, or root.d), or run it unverified with {OPT_OUT}"
        )

    def run(self, signed: list[SignedPayload] | None, keys: list[TrustedKey]) -> Verified:
        if not signed:
            raise ImageUnsigned(
                f"image {self.image} is not signed: registry {self.ref.registry} has no cosign signature "
                f"{self.ref.repository}:{signature_tag(self.digest)}; sign it (cosign sign --key KEY "
                f"{self.ref.name}@{self.digest}) or run it unverified with {OPT_OUT}"
            )
        mismatches: list[str] = []
        for item in signed:
            if item.payload is None or item.signature is None:
                continue
            for key in keys:
                if verify(key.key, item.payload, item.signature):
                    problem = self._claims_problem(item)
                    if problem is None:
                        log.debug("image %s: signature verified with %s (%s)", self.image, key.path, key.scope)
                        return Verified(
                            self.digest, key, Evidence(self.digest, item.layer_digest, item.payload, item.signature)
                        )
                    mismatches.append(f"{problem} (signed by {key.path})")
        if mismatches:
            raise SignatureMismatch(
                f"image {self.image}: refusing it: {'; '.join(mismatches)}. The tag was moved to another image "
                "or the signature was copied after signing; sign the image it names now, or run it "
                f"unverified with {OPT_OUT}"
            )
        altered = [item.problem for item in signed if item.problem]
        if altered and not any(item.payload is not None for item in signed):
            raise SignatureMismatch(
                f"image {self.image}: no usable signature: {'; '.join(altered)}; sign the image again, or run it "
                f"unverified with {OPT_OUT}"
            )
        raise UntrustedSignature(self._untrusted_message(signed, keys, altered))

    def _claims_problem(self, item: SignedPayload) -> str | None:
        assert item.payload is not None
        try:
            claims = parse_payload(item.payload, source=f"signature payload {item.layer_digest}")
        except InvalidPayload as exc:
            return exc.message
        if claims.manifest_digest != self.digest:
            return (
                f"the signature is for manifest {claims.manifest_digest}, not {self.digest} which "
                f"{self.ref.name}:{self.ref.reference} now names"
            )
        try:
            signed_ref = parse_docker(claims.docker_reference)
        except InvalidArgument:
            signed_ref = None
        if signed_ref is None or (signed_ref.registry, signed_ref.repository) != (
            self.ref.registry,
            self.ref.repository,
        ):
            return f"the signature is for repository {claims.docker_reference!r}, not {self.ref.name}"
        return None

    def _untrusted_message(self, signed: list[SignedPayload], keys: list[TrustedKey], altered: list[str]) -> str:
        count = sum(1 for item in signed if item.payload is not None)
        message = (
            f"image {self.image}: signature made by an untrusted key: none of its {count} signature(s) verifies "
            f"with the {len(keys)} key(s) trusted for {self.ref.name} "
            f"({', '.join(f'{k.path} for {k.scope}' for k in keys)})"
        )
        elsewhere = self._verifying_elsewhere(signed, keys)
        if elsewhere:
            message += "; it verifies with " + ", ".join(
                f"{k.path}, which is trusted only for {k.scope}" for k in elsewhere
            )
        else:
            message += "; it was signed by another key, or its payload was altered"
        if altered:
            message += f" ({'; '.join(altered)})"
        return f"{message}; {self.trust_hint}"

    def _verifying_elsewhere(self, signed: list[SignedPayload], keys: list[TrustedKey]) -> list[TrustedKey]:
        used = {k.path for k in keys}
        return [
            other
            for other in self.trust.all_keys()
            if other.path not in used
            and any(
                item.payload is not None
                and item.signature is not None
                and verify(other.key, item.payload, item.signature)
                for item in signed
            )
        ]
