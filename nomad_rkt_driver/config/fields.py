"""Declaring a configuration once: dataclass fields that carry their HCL type, default and doc.

A configuration class is a frozen dataclass whose fields are made with :func:`setting` (an
attribute) or :func:`block` (a nested block of another such class). Everything else is derived:
the hclspec Nomad decodes with (``protocol/schema.py``), the msgpack decoder (``decode.py``), the
docs reference and the ``plugin.hcl`` example.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from nomad_rkt_driver.config.durations import Duration

META_KEY: Final = "nomad_rkt_driver"

Validator = Callable[[Any], None]
"""Raises ValueError with a sentence that says what is wrong and how to fix it."""


@dataclass(frozen=True)
class _Meta:
    doc: str
    required: bool
    validate: Validator | None
    is_block: bool
    block_attrs: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Setting:
    """One declared configuration attribute or block, as seen by renderers and decoders."""

    name: str
    python_type: Any
    hcl_type: str  # an HCL type expression; "" for a block
    doc: str
    required: bool
    default: Any  # the Python default (None for an optional value without one)
    validate: Validator | None
    block: type | None  # the nested configuration class of a block
    block_attrs: bool = False  # a map written as a block: port_map { http = "8080-tcp" }
    repeated: bool = False  # a block that may appear many times (a tuple of ``block``)

    @property
    def has_default(self) -> bool:
        return self.default is not None and not self.required


def setting(
    default: Any = None,
    doc: str = "",
    *,
    required: bool = False,
    validate: Validator | None = None,
    block_attrs: bool = False,
) -> Any:
    """Declare an attribute. Mutable defaults (lists, dicts) are copied per instance.

    ``block_attrs`` declares a map that jobs write as a block of attributes (rkt's and docker's
    ``port_map { http = "8080-tcp" }``) instead of ``port_map = { ... }``.
    """
    meta = {META_KEY: _Meta(doc=doc, required=required, validate=validate, is_block=False, block_attrs=block_attrs)}
    if isinstance(default, list | dict):
        frozen = tuple(default) if isinstance(default, list) else dict(default)
        return dataclasses.field(
            default_factory=lambda: frozen if isinstance(frozen, tuple) else dict(frozen), metadata=meta
        )
    return dataclasses.field(default=default, metadata=meta)


def block(cls: type, doc: str = "") -> Any:
    """Declare a nested block whose attributes are those of ``cls``; absent means ``cls()``."""
    meta = {META_KEY: _Meta(doc=doc, required=False, validate=None, is_block=True)}
    return dataclasses.field(default_factory=cls, metadata=meta)


def blocks(doc: str = "") -> Any:
    """Declare a block that may be repeated (annotate ``tuple[Cls, ...]``); absent means ``()``."""
    meta = {META_KEY: _Meta(doc=doc, required=False, validate=None, is_block=True, repeated=True)}
    return dataclasses.field(default_factory=tuple, metadata=meta)


_SCALARS: Final[dict[Any, str]] = {str: "string", bool: "bool", int: "number", float: "number", Duration: "string"}


def hcl_type_of(python_type: Any) -> str:
    """The HCL type expression for a supported Python annotation."""
    origin = typing.get_origin(python_type)
    args = typing.get_args(python_type)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return hcl_type_of(inner[0])
    if python_type in _SCALARS:
        return _SCALARS[python_type]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list({hcl_type_of(args[0])})"
    if origin is dict and len(args) == 2 and args[0] is str:
        return f"map({hcl_type_of(args[1])})"
    raise TypeError(f"unsupported configuration type {python_type!r}")


def settings(cls: type) -> Iterator[Setting]:
    """The declared settings of a configuration class, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(META_KEY)
        if not isinstance(meta, _Meta):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting() or block()")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        python_type = hints[f.name]
        element = None
        if meta.repeated:
            args = typing.get_args(python_type)
            if typing.get_origin(python_type) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"{cls.__name__}.{f.name}: blocks() needs a tuple[Cls, ...] annotation")
            element = args[0]
        if meta.block_attrs and typing.get_origin(python_type) is not dict:
            raise TypeError(f"{cls.__name__}.{f.name}: block_attrs needs a dict[str, X] annotation")
        yield Setting(
            name=f.name,
            python_type=python_type,
            hcl_type="" if meta.is_block else hcl_type_of(python_type),
            doc=meta.doc,
            required=meta.required,
            default=default,
            validate=meta.validate,
            block=element or (python_type if meta.is_block else None),
            block_attrs=meta.block_attrs,
            repeated=meta.repeated,
        )


def _hcl_string(text: str) -> str:
    # JSON string syntax is HCL string syntax, except that ${ and %{ start templates in HCL.
    return json.dumps(text, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def hcl_literal(value: Any) -> str:
    """Render a Python default as an HCL expression (what hclspec Literal values hold)."""
    if isinstance(value, Duration):
        return _hcl_string(value.go_string())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _hcl_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(hcl_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_hcl_string(k)} = {hcl_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no HCL literal for {value!r}")
