"""Sigstore payloads, keys and signature checks against signatures made by cosign and openssl (no registry)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest

from nomad_rkt_driver.images.sigstore import (
    InvalidPayload,
    InvalidPublicKey,
    decode_signature,
    load_public_key,
    parse_payload,
    verify,
)
from nomad_rkt_driver.images.trust import SigstoreTrust, name_prefixes
from tests.unit.images.test_sigstore_producer import Cosign, CosignKey, need_openssl, openssl_key, openssl_public

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/team/web@{DIGEST}"


@pytest.fixture(scope="module")
def cosign(tmp_path_factory: pytest.TempPathFactory) -> Cosign:
    return Cosign(tmp_path_factory.mktemp("cosign"))


@pytest.fixture(scope="module")
def ecdsa(cosign: Cosign) -> CosignKey:
    return cosign.generate_key_pair("ecdsa")


@pytest.fixture(scope="module")
def payload(cosign: Cosign) -> bytes:
    return cosign.payload(IMAGE)


def check(pem: bytes, data: bytes, b64: str) -> bool:
    return verify(load_public_key(pem, source="k"), data, decode_signature(b64, source="s"))


def test_cosign_payload_parses(payload: bytes) -> None:
    claims = parse_payload(payload, source="p")
    assert claims.docker_reference == "127.0.0.1:5000/team/web"
    assert claims.manifest_digest == DIGEST
    assert claims.optional == {}


def test_cosign_generated_ecdsa_p256_key(cosign: Cosign, ecdsa: CosignKey, payload: bytes) -> None:
    signature = cosign.sign_blob(ecdsa, payload)
    key = load_public_key(ecdsa.pem, source="cosign.pub")
    assert key.kind == "ECDSA secp256r1"
    assert check(ecdsa.pem, payload, signature)
    tampered = payload.replace(b"ab", b"ac", 1)
    assert not check(ecdsa.pem, tampered, signature)
    other = cosign.generate_key_pair("other")
    assert not check(other.pem, payload, signature)


@pytest.mark.parametrize(
    ("algorithm", "options", "kind"),
    [
        ("RSA", ("rsa_keygen_bits:2048",), "RSA 2048"),
        ("EC", ("ec_paramgen_curve:P-384",), "ECDSA secp384r1"),
        ("ED25519", (), "Ed25519"),
    ],
)
def test_keys_imported_into_cosign(
    cosign: Cosign, tmp_path: Path, payload: bytes, algorithm: str, options: tuple[str, ...], kind: str
) -> None:
    private = openssl_key(tmp_path / f"{algorithm}.pem", algorithm, *options)
    imported = cosign.import_key_pair(private, f"imported-{algorithm.lower()}")
    assert load_public_key(imported.pem, source="k").kind == kind
    signature = cosign.sign_blob(imported, payload)
    assert check(imported.pem, payload, signature)
    assert not check(imported.pem, payload + b" ", signature)


def _openssl_sign(private: Path, data: Path, *args: str) -> str:
    raw = subprocess.run(
        [need_openssl(), "dgst", *args, "-sign", str(private), str(data)], check=True, capture_output=True, timeout=60
    ).stdout
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("algorithm", "options", "sign_args"),
    [
        (
            "RSA",
            ("rsa_keygen_bits:3072",),
            ("-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"),
        ),
        (
            "RSA",
            ("rsa_keygen_bits:2048",),
            ("-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"),
        ),
        ("RSA", ("rsa_keygen_bits:2048",), ("-sha256",)),
        ("EC", ("ec_paramgen_curve:P-384",), ("-sha384",)),
        ("EC", ("ec_paramgen_curve:P-256",), ("-sha256",)),
    ],
)
def test_schemes_signed_by_openssl(
    tmp_path: Path, payload: bytes, algorithm: str, options: tuple[str, ...], sign_args: tuple[str, ...]
) -> None:
    private = openssl_key(tmp_path / "key.pem", algorithm, *options)
    data = tmp_path / "payload"
    data.write_bytes(payload)
    signature = _openssl_sign(private, data, *sign_args)
    pem = openssl_public(private)
    assert check(pem, payload, signature)
    data.write_bytes(payload + b"\n")
    assert not check(pem, payload, _openssl_sign(private, data, *sign_args))


def test_ecdsa_with_a_hash_other_than_sha256_or_the_curves_is_refused(tmp_path: Path, payload: bytes) -> None:
    private = openssl_key(tmp_path / "key.pem", "EC", "ec_paramgen_curve:P-256")
    data = tmp_path / "payload"
    data.write_bytes(payload)
    assert not check(openssl_public(private), payload, _openssl_sign(private, data, "-sha512"))


def test_unusable_keys_are_refused_naming_the_file(tmp_path: Path) -> None:
    weak = openssl_key(tmp_path / "weak.pem", "RSA", "rsa_keygen_bits:1024")
    with pytest.raises(InvalidPublicKey, match=re.escape("weak.pub: RSA key of 1024 bits is too weak")):
        load_public_key(openssl_public(weak), source="weak.pub")
    ed448 = openssl_key(tmp_path / "ed448.pem", "ED448")
    with pytest.raises(InvalidPublicKey, match="Ed448PublicKey keys are not accepted"):
        load_public_key(openssl_public(ed448), source="ed448.pub")
    with pytest.raises(InvalidPublicKey, match=re.escape("junk.pub is not a PEM public key")):
        load_public_key(b"not a key", source="junk.pub")
    private_pem = openssl_key(tmp_path / "p.pem", "EC", "ec_paramgen_curve:P-256").read_bytes()
    with pytest.raises(InvalidPublicKey, match="BEGIN PUBLIC KEY"):
        load_public_key(private_pem, source="private.pub")


def test_garbage_signatures_do_not_verify(ecdsa: CosignKey, payload: bytes) -> None:
    key = load_public_key(ecdsa.pem, source="k")
    for junk in (b"", b"\x30\x00", b"x" * 64, b"\x00" * 72):
        assert not verify(key, payload, junk)
    with pytest.raises(InvalidPayload, match="not base64"):
        decode_signature("%%%", source="s")


def _doc(**critical_changes: object) -> dict[str, object]:
    critical: dict[str, object] = {
        "identity": {"docker-reference": "h/r"},
        "image": {"docker-manifest-digest": DIGEST},
        "type": "cosign container image signature",
    }
    critical.update(critical_changes)
    return {"critical": critical, "optional": None}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (_doc(type="atomic container signature"), "critical.type"),
        (_doc(extra=1), "unknown fields \\['extra'\\]"),
        (_doc(image={"docker-manifest-digest": DIGEST, "x": 1}), "critical.image has unknown fields"),
        (_doc(image={}), "docker-manifest-digest is missing"),
        (_doc(identity={"docker-reference": 5}), "docker-reference is missing"),
        (_doc(identity=None), "critical.identity is missing"),
        ({"optional": None}, "critical is missing"),
        ({**_doc(), "optional": [1]}, "optional must be an object"),
        ([], "the payload is missing or not a JSON object"),
    ],
)
def test_payloads_are_parsed_strictly(doc: object, problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        parse_payload(json.dumps(doc).encode(), source="sig")


def test_payload_that_is_not_json_or_too_big() -> None:
    with pytest.raises(InvalidPayload, match="not JSON"):
        parse_payload(b"\xff{", source="sig")
    with pytest.raises(InvalidPayload, match="more than"):
        parse_payload(b" " * 70000, source="sig")


# --- trust directory -------------------------------------------------------------------------


def test_name_prefixes() -> None:
    assert name_prefixes("127.0.0.1:5000/team/web") == [
        "127.0.0.1:5000",
        "127.0.0.1:5000/team",
        "127.0.0.1:5000/team/web",
    ]


def _put(path: Path, pem: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


def test_keys_for_walks_root_and_name_prefixes(tmp_path: Path, cosign: Cosign, ecdsa: CosignKey) -> None:
    pem = ecdsa.pem
    root = _put(tmp_path / "root.d" / "ops.pub", pem)
    host = _put(tmp_path / "prefix.d" / "127.0.0.1:5000" / "host.pub", pem)
    team = _put(tmp_path / "prefix.d" / "127.0.0.1:5000" / "team" / "team.pub", pem)
    _put(tmp_path / "prefix.d" / "127.0.0.1:5000" / "other" / "other.pub", pem)
    _put(tmp_path / "prefix.d" / "127.0.0.1:5000" / "team" / "webber" / "near.pub", pem)
    _put(tmp_path / "prefix.d" / "127.0.0.1:5000" / "team" / "masked.pub", b"\n")
    _put(tmp_path / "prefix.d" / "127.0.0.1:5000" / "team" / "0123456789abcdef0123456789abcdef01234567", b"gpg")
    trust = SigstoreTrust(tmp_path)
    keys = trust.keys_for("127.0.0.1:5000/team/web")
    assert [(k.path, k.prefix) for k in keys] == [
        (root, None),
        (host, "127.0.0.1:5000"),
        (team, "127.0.0.1:5000/team"),
    ]
    assert keys[0].scope == "every image (root.d)"
    assert keys[2].scope == 'prefix "127.0.0.1:5000/team"'
    assert {k.prefix for k in trust.all_keys()} == {
        None,
        "127.0.0.1:5000",
        "127.0.0.1:5000/team",
        "127.0.0.1:5000/other",
        "127.0.0.1:5000/team/webber",
    }
    assert SigstoreTrust(tmp_path / "missing").keys_for("a/b") == []


def test_a_broken_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = _put(tmp_path / "prefix.d" / "example.com" / "bad.pub", b"-----BEGIN PUBLIC KEY-----\nxx\n")
    with pytest.raises(InvalidPublicKey, match=re.escape(f"trusted key file {bad} is not a PEM public key")):
        SigstoreTrust(tmp_path).keys_for("example.com/app")
    assert SigstoreTrust(tmp_path).keys_for("other.com/app") == []
    assert SigstoreTrust(tmp_path).all_keys() == []
