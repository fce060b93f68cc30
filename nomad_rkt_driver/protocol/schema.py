"""Rendering a declared configuration class as the hclspec tree Nomad decodes HCL with.

Rules (protocol.md §3.1): the root is an Object keyed by attribute name; an optional attribute
with a default is Default{Attr(name set explicitly), Literal(HCL expression)}; a required one is
Attr{required}; a nested block is Block{Object}; a map written as a block is BlockAttrs{element type}
(absent means null, and the decoder applies the declared default).
"""

from __future__ import annotations

from nomad_rkt_driver.config.fields import Setting, hcl_literal, settings
from nomad_rkt_driver.protocol.gen import hcl_spec_pb2 as hclspec


def render(cls: type) -> hclspec.Spec:
    """The hclspec Object for configuration class ``cls``."""
    return hclspec.Spec(object=hclspec.Object(attributes={s.name: _render(s) for s in settings(cls)}))


def _render(setting: Setting) -> hclspec.Spec:
    if setting.block is not None and setting.repeated:
        return hclspec.Spec(block_list=hclspec.BlockList(name=setting.name, nested=render(setting.block)))
    if setting.block is not None:
        return hclspec.Spec(block_value=hclspec.Block(name=setting.name, nested=render(setting.block)))
    if setting.block_attrs:
        element = setting.hcl_type.removeprefix("map(").removesuffix(")")
        return hclspec.Spec(block_attrs=hclspec.BlockAttrs(name=setting.name, type=element, required=setting.required))
    attr = hclspec.Spec(Attr=hclspec.Attr(name=setting.name, type=setting.hcl_type, required=setting.required))
    if not setting.has_default:
        return attr
    literal = hclspec.Spec(literal=hclspec.Literal(value=hcl_literal(setting.default)))
    return hclspec.Spec(default=hclspec.Default(primary=attr, default=literal))
