from dataclasses import dataclass

import pytest

from nomad_rkt_driver.config.durations import Duration
from nomad_rkt_driver.config.fields import block, hcl_literal, hcl_type_of, setting, settings


@dataclass(frozen=True)
class Inner:
    enabled: bool = setting(False, "on or off")


@dataclass(frozen=True)
class Sample:
    name: str = setting(None, "a name", required=True)
    count: int = setting(3, "how many")
    tags: tuple[str, ...] = setting(["a"], "tags")
    labels: dict[str, str] = setting({}, "labels")
    period: Duration = setting(Duration(90), "a period")
    maybe: str | None = setting(None, "optional")
    inner: Inner = block(Inner, "a block")


def test_hcl_types_follow_annotations() -> None:
    types = {s.name: s.hcl_type for s in settings(Sample)}
    assert types == {
        "name": "string",
        "count": "number",
        "tags": "list(string)",
        "labels": "map(string)",
        "period": "string",
        "maybe": "string",
        "inner": "",
    }


def test_settings_expose_defaults_and_blocks() -> None:
    by_name = {s.name: s for s in settings(Sample)}
    assert by_name["name"].required and not by_name["name"].has_default
    assert by_name["tags"].default == ("a",)
    assert not by_name["maybe"].has_default
    assert by_name["inner"].block is Inner and by_name["inner"].default == Inner()


def test_mutable_defaults_are_not_shared() -> None:
    first, second = Sample(name="x"), Sample(name="y")
    assert first.labels is not second.labels


def test_unsupported_types_are_refused() -> None:
    with pytest.raises(TypeError):
        hcl_type_of(set[str])


@pytest.mark.parametrize(
    ("value", "expr"),
    [
        (True, "true"),
        (5, "5"),
        ("runc", '"runc"'),
        (("a", "b"), '["a", "b"]'),
        ({}, "{}"),
        ({"k": "v"}, '{"k" = "v"}'),
        (Duration(30), '"30s"'),
        ("${x} %{y}", '"$${x} %%{y}"'),
        ('q"', '"q\\""'),
    ],
)
def test_literals_are_hcl_expressions(value: object, expr: str) -> None:
    assert hcl_literal(value) == expr
