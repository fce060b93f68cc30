"""rkt's trusted-keys store: which OpenPGP keys may sign images of a given name.

Layout (rkt's, under each configured directory)::

    root.d/<fingerprint>                 trusted for every image
    prefix.d/<name prefix>/<fingerprint>  trusted for images whose name starts with that path prefix

A key file is named by the key's lowercase 40-hex fingerprint and holds the armored public key; a
name that does not match the content is an error. Directories are read in order (admin first);
an *empty* file in an earlier directory masks the key of that fingerprint in later ones.
The keyring for ``example.com/app/web`` is root.d plus prefix.d/example.com,
prefix.d/example.com/app and prefix.d/example.com/app/web.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images import gpg

FINGERPRINT: Final = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class TrustedKey:
    fingerprint: str
    armored: bytes
    path: Path


def _prefixes(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def check_prefix(prefix: str) -> str:
    cleaned = prefix.strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise InvalidArgument(f'"{prefix}" is not an image name prefix; write e.g. "example.com/app"')
    return cleaned


class Keystore:
    """Trusted keys from one or more rkt-style key directories."""

    def __init__(self, dirs: list[Path]) -> None:
        self._dirs = dirs

    def keys_for(self, name: str) -> list[TrustedKey]:
        """Every key trusted to sign images called ``name`` (masked keys left out)."""
        masked: set[str] = set()
        found: dict[str, TrustedKey] = {}
        subdirs = [Path("root.d")] + [Path("prefix.d") / p for p in _prefixes(name)]
        for base in self._dirs:
            for sub in subdirs:
                for path in sorted((base / sub).glob("*")) if (base / sub).is_dir() else []:
                    self._consider(path, masked, found)
        return [key for fpr, key in sorted(found.items()) if fpr not in masked]

    @staticmethod
    def _consider(path: Path, masked: set[str], found: dict[str, TrustedKey]) -> None:
        if not path.is_file() or not FINGERPRINT.match(path.name):
            return
        armored = path.read_bytes()
        if not armored.strip():
            masked.add(path.name)
            return
        if path.name in found or path.name in masked:
            return
        actual = gpg.fingerprint_of(armored)
        if actual != path.name:
            raise InvalidArgument(
                f"trusted key file {path} holds key {actual}; a key file must be named by its "
                "fingerprint (remove it and add the key again with `nomad-rkt-driver trust add`)"
            )
        found[path.name] = TrustedKey(path.name, armored, path)

    def add(self, armored: bytes, prefix: str | None) -> Path:
        """Trust ``armored`` for ``prefix`` (or every image when None), in the first directory."""
        fingerprint = gpg.fingerprint_of(armored)
        target_dir = self._dirs[0] / ("root.d" if prefix is None else Path("prefix.d") / check_prefix(prefix))
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / fingerprint
        temp = target_dir / f".{fingerprint}.tmp"
        temp.write_bytes(armored)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
        return target
