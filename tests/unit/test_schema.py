"""The hclspec we render follows Nomad's conversion rules (protocol.md §3.1)."""

from nomad_rkt_driver.config.fields import settings
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.protocol.gen import hcl_spec_pb2 as hclspec
from nomad_rkt_driver.protocol.schema import render

from .test_fields import Sample


def test_every_declared_field_is_in_the_schema() -> None:
    for cls in (PluginConfig, TaskConfig, Sample):
        spec = render(cls)
        assert spec.WhichOneof("block") == "object"
        assert set(spec.object.attributes) == {s.name for s in settings(cls)}


def test_required_attribute_is_a_required_attr() -> None:
    image = render(TaskConfig).object.attributes["image"]
    assert image.WhichOneof("block") == "Attr"
    assert image.Attr == hclspec.Attr(name="image", type="string", required=True)


def test_defaults_wrap_a_named_attr_and_a_literal() -> None:
    runtime = render(PluginConfig).object.attributes["runtime"]
    assert runtime.WhichOneof("block") == "default"
    # Inside Default no name is implied: the Attr must carry its own or Nomad fails to convert.
    assert runtime.default.primary.Attr == hclspec.Attr(name="runtime", type="string")
    assert runtime.default.default.literal.value == '"runc"'
    cni = render(PluginConfig).object.attributes["cni_path"]
    assert cni.default.primary.Attr.type == "list(string)"
    assert cni.default.default.literal.value == '["/usr/lib/cni", "/opt/cni/bin"]'


def test_optional_without_default_is_a_plain_attr() -> None:
    command = render(TaskConfig).object.attributes["command"]
    assert command.Attr == hclspec.Attr(name="command", type="string")


def test_blocks_nest_objects() -> None:
    inner = render(Sample).object.attributes["inner"]
    assert inner.WhichOneof("block") == "block_value"
    assert inner.block_value.name == "inner"
    assert set(inner.block_value.nested.object.attributes) == {"enabled"}


def test_every_attr_has_a_type() -> None:
    def walk(spec: hclspec.Spec) -> list[hclspec.Attr]:
        kind = spec.WhichOneof("block")
        if kind == "Attr":
            return [spec.Attr]
        if kind == "object":
            return [a for child in spec.object.attributes.values() for a in walk(child)]
        if kind == "default":
            return walk(spec.default.primary)
        if kind == "block_value":
            return walk(spec.block_value.nested)
        return []

    for cls in (PluginConfig, TaskConfig, Sample):
        attrs = walk(render(cls))
        assert attrs and all(a.type and a.name for a in attrs)


def test_maps_written_as_blocks_are_block_attrs() -> None:
    port_map = render(TaskConfig).object.attributes["port_map"]
    assert port_map.WhichOneof("block") == "block_attrs"
    assert port_map.block_attrs == hclspec.BlockAttrs(name="port_map", type="string")
