"""Decoding configuration values (cty msgpack from Nomad, or plain dicts) into declared classes.

Nomad sends every schema key, with ``None`` for what the user left unset; defaults are then
applied here from the same declaration that rendered the schema. Every refusal is an
:class:`~nomad_rkt_driver.errors.InvalidConfig` naming the attribute path and the fix.
"""

from __future__ import annotations

import typing
from typing import Any, TypeVar

import msgpack

from nomad_rkt_driver.config.durations import Duration
from nomad_rkt_driver.config.fields import Setting, hcl_type_of, settings
from nomad_rkt_driver.errors import InvalidConfig

T = TypeVar("T")


def unpack(data: bytes, where: str) -> dict[str, Any] | None:
    """Unpack cty msgpack bytes; empty bytes (a plugin without a schema) mean ``None``."""
    if not data:
        return None
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        reason = str(exc) or type(exc).__name__
        raise InvalidConfig(
            where,
            "",
            f"the msgpack bytes could not be decoded ({reason}); "
            "they must be Nomad's cty msgpack encoding of the config block",
        ) from exc
    if value is not None and not isinstance(value, dict):
        raise InvalidConfig(where, "", f"expected a map of attributes, got {_describe(value)}")
    return value


def decode_msgpack(cls: type[T], data: bytes, where: str) -> T:
    """Decode msgpack bytes into ``cls``; empty bytes give ``cls()`` with every default."""
    return decode(cls, unpack(data, where), where)


def decode(cls: type[T], raw: dict[str, Any] | None, where: str, prefix: str = "") -> T:
    """Build ``cls`` from a dict of attribute values, applying defaults and validators."""
    declared = {s.name: s for s in settings(cls)}
    raw = raw or {}
    for key in raw:
        if key not in declared:
            raise InvalidConfig(where, prefix + str(key), _unknown_hint(str(key), list(declared)))
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        path = prefix + name
        value = raw.get(name)
        if value is None:
            if spec.required:
                raise InvalidConfig(where, path, f"is required; set {name} = <{spec.hcl_type}>")
            if spec.block is not None:
                values[name] = spec.default
            continue
        if spec.block is not None and spec.repeated:
            if not isinstance(value, list | tuple):
                raise InvalidConfig(where, path, f"must be repeated blocks, got {_describe(value)}")
            items: list[object] = []
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise InvalidConfig(where, f"{path}[{i}]", f"must be a block, got {_describe(item)}")
                items.append(decode(spec.block, item, where, f"{path}[{i}]."))
            values[name] = tuple(items)
            continue
        if spec.block is not None:
            if not isinstance(value, dict):
                raise InvalidConfig(where, path, f"must be a block, got {_describe(value)}")
            values[name] = decode(spec.block, value, where, path + ".")
            continue
        converted = _convert(value, spec, where, path)
        if spec.validate is not None:
            try:
                spec.validate(converted)
            except ValueError as exc:
                raise InvalidConfig(where, path, str(exc)) from exc
        values[name] = converted
    return cls(**values)


def _unknown_hint(key: str, known: list[str]) -> str:
    import difflib  # only on this error path: keeps plugin start-up light

    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"is not a known attribute; {hint}known attributes are: {', '.join(sorted(known))}"


def _describe(value: Any) -> str:
    kind = {bool: "bool", int: "number", float: "number", str: "string", list: "list", dict: "map", bytes: "bytes"}.get(
        type(value), type(value).__name__
    )
    shown = repr(value)
    return f"{kind} {shown[:60]}"


def _convert(value: Any, spec: Setting, where: str, path: str) -> Any:
    try:
        return _convert_type(value, _without_none(spec.python_type))
    except ValueError as exc:
        raise InvalidConfig(where, path, str(exc)) from exc


def _without_none(python_type: Any) -> Any:
    args = [a for a in typing.get_args(python_type) if a is not type(None)]
    if type(None) in typing.get_args(python_type) and len(args) == 1:
        return args[0]
    return python_type


def _convert_type(value: Any, python_type: Any) -> Any:
    expected = hcl_type_of(python_type)
    if python_type is Duration:
        if not isinstance(value, str):
            raise ValueError(f'expected a duration string such as "30s", got {_describe(value)}')
        return Duration.parse(value)
    if python_type is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_describe(value)}")
        return value
    if python_type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_describe(value)}")
        return value
    if python_type in (int, float):
        number = _number(value)
        if python_type is int:
            if number != int(number):
                raise ValueError(f"expected a whole number, got {number}")
            return int(number)
        return float(number)
    origin = typing.get_origin(python_type)
    args = typing.get_args(python_type)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected {expected}, got {_describe(value)}")
        return tuple(_convert_type(v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected {expected}, got {_describe(value)}")
        return {str(k): _convert_type(v, args[1]) for k, v in value.items()}
    raise ValueError(f"unsupported type {python_type!r}")


def _number(value: Any) -> float:
    # cty encodes numbers as int, float, or (beyond float64) a decimal string.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {_describe(value)}")
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"expected a number, got {_describe(value)}") from exc
