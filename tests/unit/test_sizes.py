"""Byte sizes as Nomad users write them, and the image store budget that takes one."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import WHERE, PluginConfig
from nomad_rkt_driver.config.sizes import format_size, parse_size
from nomad_rkt_driver.errors import InvalidConfig


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GiB", 10 * 2**30),
        ("10gib", 10 * 2**30),
        ("10Gi", 10 * 2**30),
        ("500MB", 500 * 10**6),
        ("500 MB", 500 * 10**6),
        ("500M", 500 * 10**6),
        ("1.5TB", 1_500_000_000_000),
        ("1.5 TiB", int(1.5 * 2**40)),
        ("64kB", 64_000),
        ("64KiB", 65_536),
        ("4096B", 4096),
        (" 2GB ", 2 * 10**9),
    ],
)
def test_sizes_nomad_users_write(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("10", "no unit"),
        ("GB", "not a size"),
        ("10 XB", "not a size"),
        ("-1GB", "not a size"),
        ("10i", "not a size"),
        ("", "not a size"),
    ],
)
def test_not_sizes_are_refused_with_a_hint(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint) as info:
        parse_size(text)
    assert '"10GiB"' in str(info.value)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(10 * 2**30) == "10.0 GiB"


def test_budget_is_off_by_default_and_parsed_when_set() -> None:
    assert PluginConfig().gc.image_store_max_bytes is None
    config = decode(PluginConfig, {"gc": {"image_store_max": "20GiB"}}, WHERE)
    assert config.gc.image_store_max == "20GiB"
    assert config.gc.image_store_max_bytes == 20 * 2**30


@pytest.mark.parametrize(("value", "problem"), [("20 gigs", "not a size"), ("0GB", "no room"), ("100", "no unit")])
def test_bad_budget_names_the_field(value: str, problem: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        decode(PluginConfig, {"gc": {"image_store_max": value}}, WHERE)
    message = str(info.value)
    assert "gc.image_store_max" in message and problem in message and "GiB" in message
