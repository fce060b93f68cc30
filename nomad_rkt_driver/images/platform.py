"""The host's platform, in the two spellings images use: OCI (Go's GOARCH) and appc (rkt's).

OCI image indexes and Docker manifest lists name platforms as ``{"os": "linux", "architecture":
"arm64", "variant": "v8"}``; appc labels use ``arch=aarch64`` for the same machine (rkt.md §2.1).
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass

#: ``platform.machine()`` → (OCI architecture, OCI variant or "", appc arch label).
_MACHINES: dict[str, tuple[str, str, str]] = {
    "x86_64": ("amd64", "", "amd64"),
    "amd64": ("amd64", "", "amd64"),
    "aarch64": ("arm64", "v8", "aarch64"),
    "arm64": ("arm64", "v8", "aarch64"),
    "i386": ("386", "", "i386"),
    "i686": ("386", "", "i386"),
    "armv7l": ("arm", "v7", "armv7l"),
    "armv6l": ("arm", "v6", "armv6l"),
    "ppc64le": ("ppc64le", "", "ppc64le"),
    "ppc64": ("ppc64", "", "ppc64"),
    "s390x": ("s390x", "", "s390x"),
}


@dataclass(frozen=True)
class Platform:
    """One platform: ``os`` and ``architecture`` as OCI spells them, plus the optional ``variant``."""

    os: str
    architecture: str
    variant: str = ""

    @property
    def appc_arch(self) -> str:
        """The appc ``arch`` label for this architecture (``arm64`` → ``aarch64``)."""
        for oci, _variant, appc in _MACHINES.values():
            if oci == self.architecture:
                return appc
        return self.architecture

    def matches(self, descriptor_platform: Mapping[str, object] | None) -> bool:
        """Whether an index entry's ``platform`` object can run here.

        A missing platform matches (single-platform indexes often leave it out). A variant is
        compared only when both sides name one, as containerd's matcher does for arm64.
        """
        if not descriptor_platform:
            return True
        if descriptor_platform.get("os", self.os) != self.os:
            return False
        if descriptor_platform.get("architecture") != self.architecture:
            return False
        variant = str(descriptor_platform.get("variant") or "")
        return not (variant and self.variant and variant != self.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    """The platform of the machine this runs on (Linux only, as the driver is)."""
    machine = _platform.machine().lower()
    oci, variant, _appc = _MACHINES.get(machine, (machine, "", machine))
    return Platform(os="linux", architecture=oci, variant=variant)


def describe(descriptor_platform: Mapping[str, object] | None) -> str:
    """``os/arch[/variant]`` for an index entry's platform object, for error messages."""
    if not descriptor_platform:
        return "(no platform)"
    parts = (descriptor_platform.get("os"), descriptor_platform.get("architecture"), descriptor_platform.get("variant"))
    return "/".join(str(p) for p in parts if p)
