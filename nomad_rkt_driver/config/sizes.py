"""Byte sizes ("10GiB", "500MB"), written the way Nomad users write them.

Nomad's own size settings (e.g. the client's ``artifact { decompression_size_limit = "100GB" }``)
take a number and a unit, SI (kB, MB, GB, TB: powers of 1000) or IEC (KiB, MiB, GiB, TiB: powers
of 1024), in any case, with or without a space. We read the same forms, except that a unit is
required: a bare "10" is more likely a forgotten "GB" than ten bytes.
"""

from __future__ import annotations

import re
from typing import Final

_SI: Final = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_IEC: Final = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_SIZE: Final = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)$", re.IGNORECASE)
_HINT: Final = 'write a number and a unit, e.g. "10GiB", "500MB" or "1.5TB"'


def parse_size(text: str) -> int:
    """The number of bytes ``text`` says; ValueError with a hint when it is not a size."""
    body = text.strip()
    match = _SIZE.match(body)
    if match is None:
        raise ValueError(f'"{text}" is not a size; {_HINT}')
    number, prefix, binary, byte = match.groups()
    prefix = prefix.lower()
    if binary and not prefix:
        raise ValueError(f'"{text}" is not a size; {_HINT}')
    if not prefix and not byte:
        raise ValueError(f'"{text}" has no unit; {_HINT}')
    if not prefix:
        factor = 1
    elif binary:
        factor = _IEC[prefix]
    else:
        factor = _SI[prefix]
    return int(float(number) * factor)


def format_size(n: int | float) -> str:
    """A short human form in IEC units (what ``parse_size`` reads back approximately)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
