"""Sigstore/cosign keyed signatures: the simple-signing payload, public keys, signature checks.

A cosign signature of an image is a small JSON document (the "simple signing" payload) naming
the image's repository and manifest digest, plus a signature over the payload's exact bytes
made with a private key. This module only deals with bytes: it parses payloads, loads PEM
public keys (SubjectPublicKeyInfo) and checks signatures. Fetching signatures from a registry
is ``signatures.py``; choosing the trusted keys is ``trust.py``.

Accepted keys and schemes:

* ECDSA on P-256, P-384 or P-521, DER-encoded signatures, over SHA-256 (what cosign uses for
  every curve) or the curve's own hash (SHA-384 / SHA-512);
* RSA of at least 2048 bits, PKCS#1 v1.5 or PSS, over SHA-256;
* Ed25519 (pure, over the payload).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from nomad_rkt_driver.errors import InvalidArgument

#: Media type of a layer of a cosign signature manifest that holds one simple-signing payload.
SIMPLE_SIGNING_MEDIA_TYPE: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
#: Annotation of such a layer holding the base64 signature over the payload.
SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
#: The ``critical.type`` every container image signature payload carries.
PAYLOAD_TYPE: Final = "cosign container image signature"
PAYLOAD_MAX_BYTES: Final = 64 * 1024
SIGNATURE_MAX_BYTES: Final = 8 * 1024
MIN_RSA_BITS: Final = 2048

_CURVE_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


class SignatureRefused(InvalidArgument):
    """An image's signatures do not let it run; the message says why and how to fix or opt out."""


class ImageUnsigned(SignatureRefused):
    """The registry holds no signature for the image's digest."""


class NoTrustedKeys(SignatureRefused):
    """No public key in the trust directory is trusted for the image's name."""


class UntrustedSignature(SignatureRefused):
    """No signature verifies with a key trusted for the image's name."""


class SignatureMismatch(SignatureRefused):
    """A signature (or its payload) does not belong to this image: altered, moved or copied."""


class InvalidPayload(InvalidArgument):
    """A signature payload is not a cosign simple-signing document."""


class InvalidPublicKey(InvalidArgument):
    """A trusted-key file does not hold a usable PEM public key."""


@dataclass(frozen=True)
class SimpleSigningPayload:
    """What a signature vouches for: a repository (``docker-reference``) and a manifest digest."""

    docker_reference: str
    manifest_digest: str
    optional: dict[str, Any] = field(default_factory=dict)


def parse_payload(data: bytes, *, source: str) -> SimpleSigningPayload:
    """Parse a simple-signing payload strictly: unknown ``critical`` fields are refused.

    Raises InvalidPayload naming ``source``.
    """
    if len(data) > PAYLOAD_MAX_BYTES:
        raise InvalidPayload(f"{source}: payload is {len(data)} bytes, more than {PAYLOAD_MAX_BYTES}")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"{source}: payload is not JSON ({exc})") from exc
    doc = _object(doc, "the payload", source)
    critical = _object(doc.get("critical"), "critical", source)
    _only(critical, {"identity", "image", "type"}, "critical", source)
    if critical.get("type") != PAYLOAD_TYPE:
        raise InvalidPayload(f"{source}: critical.type is {critical.get('type')!r}, not {PAYLOAD_TYPE!r}")
    identity = _object(critical.get("identity"), "critical.identity", source)
    _only(identity, {"docker-reference"}, "critical.identity", source)
    image = _object(critical.get("image"), "critical.image", source)
    _only(image, {"docker-manifest-digest"}, "critical.image", source)
    reference, digest = identity.get("docker-reference"), image.get("docker-manifest-digest")
    if not isinstance(reference, str) or not reference:
        raise InvalidPayload(f"{source}: critical.identity.docker-reference is missing or not a string")
    if not isinstance(digest, str) or not digest:
        raise InvalidPayload(f"{source}: critical.image.docker-manifest-digest is missing or not a string")
    optional = doc.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise InvalidPayload(f"{source}: optional must be an object or null")
    return SimpleSigningPayload(reference, digest, optional or {})


def _object(value: Any, what: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPayload(f"{source}: {what} is missing or not a JSON object")
    return value


def _only(doc: dict[str, Any], allowed: set[str], what: str, source: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidPayload(f"{source}: {what} has unknown fields {unknown}; refusing a payload we do not understand")


def decode_signature(text: str, *, source: str) -> bytes:
    """The raw signature bytes of the base64 ``dev.cosignproject.cosign/signature`` annotation."""
    if len(text) > SIGNATURE_MAX_BYTES * 2:
        raise InvalidPayload(f"{source}: signature annotation is {len(text)} characters; too long")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidPayload(f"{source}: signature annotation is not base64 ({exc})") from exc


PublicKeyTypes = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class PublicKey:
    """A verification key and where it came from (named in messages)."""

    source: str
    key: PublicKeyTypes

    @property
    def kind(self) -> str:
        """A short description, e.g. ``ECDSA P-256``, ``RSA 4096``, ``Ed25519``."""
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            return f"ECDSA {self.key.curve.name}"
        if isinstance(self.key, rsa.RSAPublicKey):
            return f"RSA {self.key.key_size}"
        return "Ed25519"


def load_public_key(pem: bytes, *, source: str) -> PublicKey:
    """Load a PEM ``PUBLIC KEY`` (as ``cosign generate-key-pair`` writes in cosign.pub).

    Raises InvalidPublicKey naming ``source`` for anything else, weak RSA or unknown curves.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidPublicKey(
            f"{source} is not a PEM public key ({exc}); it must hold a '-----BEGIN PUBLIC KEY-----' block "
            "such as cosign.pub from `cosign generate-key-pair`"
        ) from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVE_HASHES:
            raise InvalidPublicKey(f"{source}: ECDSA curve {key.curve.name} is not accepted (use P-256, P-384, P-521)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidPublicKey(f"{source}: RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidPublicKey(
            f"{source}: {type(key).__name__} keys are not accepted; use ECDSA (P-256/P-384/P-521), RSA or Ed25519"
        )
    return PublicKey(source, key)


def verify(key: PublicKey, payload: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``payload`` verifies with ``key`` under an accepted scheme."""
    public = key.key
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, payload)
            return True
    except (InvalidSignature, ValueError):
        return False
    for attempt in _schemes(public):
        try:
            attempt(signature, payload)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def _schemes(public: PublicKeyTypes) -> list[Any]:
    """Callables ``(signature, payload) -> None`` that raise InvalidSignature, one per accepted scheme."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        algorithms = [hashes.SHA256, _CURVE_HASHES[public.curve.name]]
        unique = list(dict.fromkeys(algorithms))
        return [lambda s, p, h=h: public.verify(s, p, ec.ECDSA(h())) for h in unique]
    if isinstance(public, rsa.RSAPublicKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        return [
            lambda s, p: public.verify(s, p, padding.PKCS1v15(), hashes.SHA256()),
            lambda s, p: public.verify(s, p, pss, hashes.SHA256()),
        ]
    return []
