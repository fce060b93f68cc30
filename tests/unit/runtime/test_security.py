"""Capability names, masks and the seccomp denylist."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.runtime import security


@pytest.mark.parametrize("name", ["net_admin", "NET_ADMIN", "CAP_NET_ADMIN", " cap_net_admin "])
def test_normalise_cap(name: str) -> None:
    assert security.normalise_cap(name) == "CAP_NET_ADMIN"


def test_unknown_cap_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidArgument, match="unknown capability 'FLY'"):
        security.normalise_cap("FLY")


def test_caps_from_mask() -> None:
    assert security.caps_from_mask("a80425fb") == frozenset(security.DEFAULT_CAPS)
    status = "Name:\tx\nCapBnd:\t000001fffeffffff\n"
    assert security.bounding_caps(status) == frozenset(security.ALL_CAPS) - {"CAP_SYS_RESOURCE"}


def test_drop_all_then_add() -> None:
    caps = security.capability_set(["ALL"], ["ALL"], all_caps=False, host_caps=frozenset(security.ALL_CAPS))
    assert caps == []


def test_insecure() -> None:
    assert security.insecure(["all"], "seccomp")
    assert security.insecure(["paths"], "paths")
    assert not security.insecure(["image", "tls"], "capabilities")


def test_seccomp_always_denies_keyring_and_swap() -> None:
    names = security.seccomp_profile(security.ALL_CAPS)["syscalls"][0]["names"]
    assert "keyctl" in names and "swapon" in names and "mount" not in names
