"""OpenPGP through the system's gpg: key fingerprints and detached-signature checks.

Each operation runs gpg in a fresh, private GNUPGHOME holding only the keys passed in, so the
host's keyrings never matter and nothing is left behind. Results are read from gpg's
machine-readable status lines, never from its human messages.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument

GPG_TIMEOUT_S: Final = 30.0


class SignatureError(InvalidArgument):
    """An image signature is missing, unreadable, made by an untrusted key, or does not match."""


def _gpg() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise FailedPrecondition(
            "gpg is not installed but image signatures must be checked: apt-get install gnupg", recoverable=True
        )
    return found


def _run(home: str, args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_gpg(), "--homedir", home, "--batch", "--no-tty", "--status-fd", "1", *args],
        input=data,
        capture_output=True,
        timeout=GPG_TIMEOUT_S,
        check=False,
    )


def _status(output: bytes) -> list[list[str]]:
    return [line.split()[1:] for line in output.decode(errors="replace").splitlines() if line.startswith("[GNUPG:] ")]


def fingerprint_of(armored: bytes) -> str:
    """The primary-key fingerprint (lowercase hex) of one armored public key."""
    with tempfile.TemporaryDirectory(prefix="rkt-gpg-") as home:
        done = _run(home, ["--with-colons", "--import-options", "show-only", "--import"], armored)
        fingerprints = [
            line.split(":")[9] for line in done.stdout.decode(errors="replace").splitlines() if line.startswith("fpr:")
        ]
        primaries = [line for line in done.stdout.decode(errors="replace").splitlines() if line.startswith("pub:")]
    if len(primaries) != 1 or not fingerprints:
        raise InvalidArgument(
            "expected exactly one armored OpenPGP public key "
            f"(found {len(primaries)}); export it with `gpg --armor --export KEYID`"
        )
    return fingerprints[0].lower()


def verify_detached(data: Path, signature: bytes, keys: Iterable[bytes], image: str) -> str:
    """Check ``signature`` over the file ``data`` against ``keys``; return the signer's fingerprint.

    Raises SignatureError with rkt's wording for an unknown signer, a bad signature, or a file that
    holds no signature.
    """
    with tempfile.TemporaryDirectory(prefix="rkt-gpg-") as home:
        armored = b"\n".join(keys)
        if armored:
            _run(home, ["--import"], armored)
        sig_path = Path(home) / "image.sig"
        sig_path.write_bytes(signature)
        done = _run(home, ["--verify", str(sig_path), str(data)])
    return _verdict(_status(done.stdout), image)


def _verdict(status: list[list[str]], image: str) -> str:
    kinds = {fields[0]: fields[1:] for fields in status if fields}
    hint = f'trust the signing key for this image\'s name ({image}) or set insecure_options = ["image"]'
    if "BADSIG" in kinds:
        raise SignatureError(
            f"image {image}: openpgp: invalid signature: the image does not match its signature "
            "(was it modified after signing?)"
        )
    for bad in ("EXPKEYSIG", "REVKEYSIG", "EXPSIG"):
        if bad in kinds:
            raise SignatureError(
                f"image {image}: the signing key or signature has expired or been revoked ({bad}); {hint}"
            )
    if "VALIDSIG" in kinds and "GOODSIG" in kinds:
        fields = kinds["VALIDSIG"]
        return (fields[9] if len(fields) > 9 else fields[0]).lower()
    if "NO_PUBKEY" in kinds or ("ERRSIG" in kinds and kinds["ERRSIG"][-1:] == ["9"]):
        raise SignatureError(
            f"image {image}: openpgp: signature made by unknown entity; {hint}. If you expected "
            "the signing key to change, add the new key with `nomad-rkt-driver trust add --prefix`"
        )
    raise SignatureError(f"image {image}: keystore: no valid signatures found in signature file")
