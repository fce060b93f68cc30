"""ACI-style trust: rkt's keystore layout and detached OpenPGP signatures made by a real gpg."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images.gpg import SignatureError, fingerprint_of, verify_detached
from nomad_rkt_driver.images.keystore import Keystore
from tests.acibuild import Signer, make_signer


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Signer, Signer]]:
    base = tmp_path_factory.mktemp("signers")
    made = make_signer(base, "trusted"), make_signer(base, "stranger")
    try:
        yield made
    finally:
        for signer in made:  # key generation and signing start a gpg-agent per home
            signer.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "app.aci"
    path.write_bytes(os.urandom(4096))
    return path


def test_fingerprint_of_an_armored_key(signers: tuple[Signer, Signer]) -> None:
    trusted, _ = signers
    assert fingerprint_of(trusted.armored) == trusted.fingerprint
    with pytest.raises(InvalidArgument, match="exactly one armored OpenPGP public key"):
        fingerprint_of(b"not a key")


def test_signature_matrix(signers: tuple[Signer, Signer], image: Path, tmp_path: Path) -> None:
    trusted, stranger = signers
    store = Keystore([tmp_path / "keys"])
    store.add(trusted.armored, "example.com/app")
    keys = [k.armored for k in store.keys_for("example.com/app")]

    # signed by a trusted key: accepted, and the signer is named
    assert verify_detached(image, trusted.sign(image).read_bytes(), keys, "example.com/app") == trusted.fingerprint
    # signed by a key nobody trusted
    with pytest.raises(SignatureError, match="signature made by unknown entity"):
        verify_detached(image, stranger.sign(image).read_bytes(), keys, "example.com/app")
    # tampered after signing
    signature = trusted.sign(image).read_bytes()
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    with pytest.raises(SignatureError, match="does not match its signature"):
        verify_detached(image, signature, keys, "example.com/app")
    # a "signature" file that holds no signature
    with pytest.raises(SignatureError, match="no valid signatures found"):
        verify_detached(
            image, b"-----BEGIN PGP SIGNATURE-----\nbroken\n-----END PGP SIGNATURE-----\n", keys, "example.com/app"
        )
    # no trusted keys at all
    with pytest.raises(SignatureError, match='insecure_options = \\["image"\\]'):
        verify_detached(image, trusted.sign(image).read_bytes(), [], "example.com/app")


def test_prefix_walk_and_root_keys(signers: tuple[Signer, Signer], tmp_path: Path) -> None:
    trusted, stranger = signers
    store = Keystore([tmp_path / "keys"])
    store.add(trusted.armored, "example.com")
    assert [k.fingerprint for k in store.keys_for("example.com/app/web")] == [trusted.fingerprint]
    assert store.keys_for("example.org/app") == []
    store.add(stranger.armored, None)  # root.d: trusted for everything
    assert {k.fingerprint for k in store.keys_for("example.org/app")} == {stranger.fingerprint}
    assert (tmp_path / "keys" / "prefix.d" / "example.com" / trusted.fingerprint).is_file()


def test_empty_file_in_admin_dir_masks_a_system_key(signers: tuple[Signer, Signer], tmp_path: Path) -> None:
    trusted, _ = signers
    admin, system = tmp_path / "etc", tmp_path / "lib"
    Keystore([system]).add(trusted.armored, None)
    (admin / "root.d").mkdir(parents=True)
    (admin / "root.d" / trusted.fingerprint).write_bytes(b"")
    assert Keystore([admin, system]).keys_for("anything") == []
    assert len(Keystore([system]).keys_for("anything")) == 1


def test_misnamed_key_file_is_refused(signers: tuple[Signer, Signer], tmp_path: Path) -> None:
    trusted, stranger = signers
    (tmp_path / "keys" / "root.d").mkdir(parents=True)
    (tmp_path / "keys" / "root.d" / stranger.fingerprint).write_bytes(trusted.armored)
    with pytest.raises(InvalidArgument, match="must be named by its fingerprint"):
        Keystore([tmp_path / "keys"]).keys_for("x")


@pytest.mark.parametrize("prefix", ["", "/", "a/../b", "./x"])
def test_bad_prefixes_are_refused(signers: tuple[Signer, Signer], tmp_path: Path, prefix: str) -> None:
    with pytest.raises(InvalidArgument, match="not an image name prefix"):
        Keystore([tmp_path / "keys"]).add(signers[0].armored, prefix)
