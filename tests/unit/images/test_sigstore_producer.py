"""The independent producer of sigstore test signatures: cosign v2.4.1 built by scripts/build-cosign.sh.

Other sigstore tests import :class:`Cosign` and :func:`cosign_binary` from here. A missing cosign
fails (never skips) with the command that builds it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[3]
COSIGN: Final = ROOT / ".tools" / "bin" / "cosign"
COSIGN_VERSION: Final = "v2.4.1"
PASSWORD: Final = "test-key-password"


def cosign_binary() -> Path:
    """The cosign the tests use; fails with a build hint when it is missing."""
    if not os.access(COSIGN, os.X_OK):
        raise AssertionError(
            f"cosign is not built: run scripts/build-cosign.sh (builds cosign {COSIGN_VERSION} into {COSIGN} "
            "with /usr/local/go/bin/go; scripts/setup.sh should call it)"
        )
    return COSIGN


def need_openssl() -> str:
    from tests.registryserver import need

    return need("openssl", "openssl")


@dataclass(frozen=True)
class CosignKey:
    """A cosign key pair on disk: ``private`` (encrypted cosign.key) and ``public`` (PEM cosign.pub)."""

    private: Path
    public: Path

    @property
    def pem(self) -> bytes:
        return self.public.read_bytes()


class Cosign:
    """Runs the real cosign in ``workdir``; never contacts anything but 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.binary = cosign_binary()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),  # cosign's ~/.sigstore and ~/.docker stay in the test's dir
            "COSIGN_PASSWORD": PASSWORD,
            "COSIGN_EXPERIMENTAL": "0",
            "TUF_ROOT": str(workdir / "tuf"),
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"cosign {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
        return done

    def generate_key_pair(self, name: str) -> CosignKey:
        """``cosign generate-key-pair`` (ECDSA P-256) into ``<name>.key`` / ``<name>.pub``."""
        self.run("generate-key-pair", "--output-key-prefix", name)
        return CosignKey(self.workdir / f"{name}.key", self.workdir / f"{name}.pub")

    def import_key_pair(self, pem_private_key: Path, name: str) -> CosignKey:
        """``cosign import-key-pair`` of an openssl-made RSA / ECDSA / Ed25519 private key."""
        self.run("import-key-pair", "--key", str(pem_private_key), "--output-key-prefix", name)
        return CosignKey(self.workdir / f"{name}.key", self.workdir / f"{name}.pub")

    def sign_blob(self, key: CosignKey, data: bytes) -> str:
        """The base64 signature ``cosign sign-blob`` makes over ``data`` (no transparency log)."""
        blob = self.workdir / "blob-to-sign"
        blob.write_bytes(data)
        return self.run(
            "sign-blob", "--key", str(key.private), "--tlog-upload=false", "--yes", str(blob)
        ).stdout.strip()

    def payload(self, image_with_digest: str) -> bytes:
        """The simple-signing payload ``cosign generate`` makes for ``host/repo@sha256:…`` (offline)."""
        return self.run("generate", image_with_digest).stdout.strip().encode()

    def sign_image(self, key: CosignKey, image_with_digest: str) -> None:
        """``cosign sign`` an image in a plain-HTTP registry on 127.0.0.1: pushes ``sha256-<hex>.sig``."""
        assert image_with_digest.startswith("127.0.0.1:"), image_with_digest
        self.run(
            "sign", "--key", str(key.private), "--tlog-upload=false", "--allow-http-registry",
            "--allow-insecure-registry", "--yes", image_with_digest,
        )  # fmt: skip


def openssl_key(path: Path, algorithm: str, *options: str) -> Path:
    """An unencrypted PEM private key made by openssl (``RSA``, ``EC``, ``ED25519``, ``ED448``)."""
    opts = [arg for option in options for arg in ("-pkeyopt", option)]
    subprocess.run(
        [need_openssl(), "genpkey", "-algorithm", algorithm, *opts, "-out", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def openssl_public(private: Path) -> bytes:
    return subprocess.run(
        [need_openssl(), "pkey", "-in", str(private), "-pubout"], check=True, capture_output=True, timeout=60
    ).stdout


def test_cosign_is_the_pinned_version() -> None:
    done = subprocess.run([str(cosign_binary()), "version"], capture_output=True, text=True, timeout=60, check=True)
    assert COSIGN_VERSION in done.stdout + done.stderr
