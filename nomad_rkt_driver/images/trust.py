"""Which sigstore public keys may sign Docker/OCI images of a given name (rkt's trusted-keys layout).

Under the plugin's ``trust_dir``::

    root.d/<anything>.pub                    trusted for every image
    prefix.d/<name prefix>/<anything>.pub    trusted for images whose name starts with that path prefix

A docker image's name is ``registry/repository`` (``127.0.0.1:5000/team/web``,
``docker.io/library/redis``); the keys for ``127.0.0.1:5000/team/web`` are root.d plus
prefix.d/127.0.0.1:5000, prefix.d/127.0.0.1:5000/team and prefix.d/127.0.0.1:5000/team/web.
Each ``.pub`` file holds one PEM public key (cosign.pub). Empty files are ignored; a file that
is not a usable key is an error naming the file, never silently skipped. OpenPGP keys for ACI
images (files named by fingerprint, see ``keystore.py``) live in the same tree and are not read
here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .sigstore import InvalidPublicKey, PublicKey, load_public_key

KEY_SUFFIX: Final = ".pub"


@dataclass(frozen=True)
class TrustedKey:
    """A public key with the file it came from and the name prefix it is trusted for (None: all)."""

    key: PublicKey
    path: Path
    prefix: str | None

    @property
    def scope(self) -> str:
        """``every image`` or ``prefix "P"`` for messages."""
        return "every image (root.d)" if self.prefix is None else f'prefix "{self.prefix}"'


def name_prefixes(name: str) -> list[str]:
    """``a/b/c`` → ``["a", "a/b", "a/b/c"]``."""
    parts = [p for p in name.split("/") if p]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class SigstoreTrust:
    """The sigstore keys of one trust directory; files are read on every call (no stale trust)."""

    def __init__(self, trust_dir: Path) -> None:
        self.trust_dir = trust_dir

    def keys_for(self, name: str) -> list[TrustedKey]:
        """Every key trusted to sign images called ``name``: root.d, then each prefix, shortest first."""
        found = self._read(self.trust_dir / "root.d", None)
        for prefix in name_prefixes(name):
            if any(part in (".", "..") for part in prefix.split("/")):
                continue
            found += self._read(self.trust_dir / "prefix.d" / prefix, prefix)
        return found

    def all_keys(self) -> list[TrustedKey]:
        """Every key in the directory, whatever it is trusted for (for diagnostics only)."""
        found = self._read(self.trust_dir / "root.d", None)
        prefix_root = self.trust_dir / "prefix.d"
        if prefix_root.is_dir():
            for path in sorted(prefix_root.rglob(f"*{KEY_SUFFIX}")):
                if not path.is_file() or path.stat().st_size == 0:
                    continue
                try:
                    key = load_public_key(path.read_bytes(), source=f"trusted key file {path}")
                except InvalidPublicKey:
                    continue  # only a diagnostic: a broken file elsewhere is reported when its prefix is used
                found.append(TrustedKey(key, path, str(path.parent.relative_to(prefix_root))))
        return found

    def where_to_put(self, name: str) -> Path:
        """The directory a key trusted for exactly ``name`` belongs in."""
        return self.trust_dir / "prefix.d" / name

    def searched(self, name: str) -> list[Path]:
        """The directories ``keys_for(name)`` reads, for messages."""
        return [self.trust_dir / "root.d"] + [self.trust_dir / "prefix.d" / p for p in name_prefixes(name)]

    @staticmethod
    def _read(directory: Path, prefix: str | None) -> list[TrustedKey]:
        if not directory.is_dir():
            return []
        keys = []
        for path in sorted(directory.glob(f"*{KEY_SUFFIX}")):
            if not path.is_file():
                continue
            pem = path.read_bytes()
            if not pem.strip():
                continue
            keys.append(TrustedKey(load_public_key(pem, source=f"trusted key file {path}"), path, prefix))
        return keys
