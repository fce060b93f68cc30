"""rkt's ``insecure_options`` as the set of protections a task switched off (rkt/flag/secflags.go)."""

from __future__ import annotations

from typing import Final

_GROUPS: Final = {
    "all-fetch": frozenset({"image", "tls", "http", "pubkey"}),
    "all-run": frozenset({"capabilities", "paths", "seccomp"}),
}
_GROUPS_ALL: Final = _GROUPS["all-fetch"] | _GROUPS["all-run"]


def expand(options: tuple[str, ...]) -> frozenset[str]:
    """The single protections named by ``options`` (groups expanded; ``none`` adds nothing)."""
    result: set[str] = set()
    for option in options:
        if option == "all":
            result |= _GROUPS_ALL
        elif option in _GROUPS:
            result |= _GROUPS[option]
        elif option != "none":
            result.add(option)
    return frozenset(result)
