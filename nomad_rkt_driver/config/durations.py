"""Go-style durations ("1m30s", "500ms"), as Nomad users write them."""

from __future__ import annotations

import re
from typing import Final

_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class Duration(float):
    """Seconds, written and read the way Go's time.ParseDuration does."""

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``text``; raise ValueError with a hint when it is not a Go duration."""
        body = text.strip()
        sign = 1.0
        if body[:1] in "+-" and body:
            sign = -1.0 if body[0] == "-" else 1.0
            body = body[1:]
        if body == "0":
            return cls(0.0)
        pos, total = 0, 0.0
        while pos < len(body):
            match = _PART.match(body, pos)
            if match is None:
                raise ValueError(f'"{text}" is not a duration; write a number with a unit, e.g. "30s", "5m" or "1h30m"')
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not body:
            raise ValueError('an empty string is not a duration; write e.g. "30s"')
        return cls(sign * total)

    def go_string(self) -> str:
        """Render as a Go duration string (the inverse of :meth:`parse` for whole units)."""
        value = float(self)
        if value == 0:
            return "0s"
        sign = "-" if value < 0 else ""
        rest = abs(value)
        parts = []
        for unit, size in (("h", 3600.0), ("m", 60.0)):
            whole = int(rest // size)
            if whole:
                parts.append(f"{whole}{unit}")
                rest -= whole * size
        if rest or not parts:
            if rest < 1 and not parts:
                parts.append(f"{round(rest * 1000, 6):g}ms")
            else:
                parts.append(f"{round(rest, 9):g}s")
        return sign + "".join(parts)
