"""Decoding plugin and task configs: the golden full config, defaults, and every refusal."""

import msgpack
import pytest

from nomad_rkt_driver.config.decode import decode, decode_msgpack
from nomad_rkt_driver.config.fields import settings
from nomad_rkt_driver.config.plugin import WHERE, PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.errors import InvalidConfig


def nomad_encoding(cls: type, **values: object) -> bytes:
    """What Nomad sends: every schema key, None where unset."""
    body: dict[str, object] = {s.name: None for s in settings(cls)}
    body.update(values)
    return msgpack.packb(body)


def test_golden_plugin_config_sets_every_field() -> None:
    data = nomad_encoding(
        PluginConfig,
        runtime="/usr/sbin/runc",
        conmon="/usr/bin/conmon",
        cni_path=["/opt/cni/bin"],
        data_dir="/srv/rkt",
        fingerprint_period="1m",
    )
    assert decode_msgpack(PluginConfig, data, WHERE) == PluginConfig(
        runtime="/usr/sbin/runc",
        conmon="/usr/bin/conmon",
        cni_path=("/opt/cni/bin",),
        data_dir="/srv/rkt",
        fingerprint_period=60.0,
    )


def test_golden_task_config_sets_every_field() -> None:
    data = nomad_encoding(
        TaskConfig,
        image="docker://127.0.0.1:5000/web:1",
        command="/bin/httpd",
        args=["-f", "-p", "8080"],
        port_map={"http": "8080-tcp"},
        ports=["http"],
        net=["default", "backend"],
        insecure_options=["image", "http"],
        trust_prefix="example.com",
    )
    assert decode_msgpack(TaskConfig, data, "task") == TaskConfig(
        image="docker://127.0.0.1:5000/web:1",
        command="/bin/httpd",
        args=("-f", "-p", "8080"),
        port_map={"http": "8080-tcp"},
        ports=("http",),
        net=("default", "backend"),
        insecure_options=("image", "http"),
        trust_prefix="example.com",
    )


def test_unset_values_take_declared_defaults() -> None:
    assert decode_msgpack(PluginConfig, nomad_encoding(PluginConfig), WHERE) == PluginConfig()
    task = decode_msgpack(TaskConfig, nomad_encoding(TaskConfig, image="busybox"), "task")
    assert task.net == ("default",) and task.command is None and task.port_map == {}


def test_empty_bytes_mean_no_config() -> None:
    assert decode_msgpack(PluginConfig, b"", WHERE) == PluginConfig()


def refusal(cls: type, data: bytes) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as info:
        decode_msgpack(cls, data, "the config")
    return info.value


def test_unknown_key_is_named_with_a_suggestion() -> None:
    err = refusal(PluginConfig, nomad_encoding(PluginConfig, runtme="runc"))
    assert err.attribute == "runtme"
    assert 'did you mean "runtime"' in str(err)


def test_wrong_type_names_attribute_and_expectation() -> None:
    err = refusal(PluginConfig, nomad_encoding(PluginConfig, cni_path="/usr/lib/cni"))
    assert err.attribute == "cni_path"
    assert "expected list(string)" in str(err)
    assert refusal(PluginConfig, nomad_encoding(PluginConfig, runtime=5)).attribute == "runtime"


def test_missing_required_attribute_is_named() -> None:
    err = refusal(TaskConfig, nomad_encoding(TaskConfig))
    assert err.attribute == "image" and "required" in str(err)


def test_negative_duration_is_refused_with_the_fix() -> None:
    err = refusal(PluginConfig, nomad_encoding(PluginConfig, fingerprint_period="-5s"))
    assert err.attribute == "fingerprint_period"
    assert "at least 1s" in str(err) and '"30s"' in str(err)


def test_duration_without_unit_is_refused() -> None:
    err = refusal(PluginConfig, nomad_encoding(PluginConfig, fingerprint_period="30"))
    assert "with a unit" in str(err)


def test_unknown_image_transport_is_refused_with_the_choices() -> None:
    err = refusal(PluginConfig, nomad_encoding(PluginConfig, default_image_transport="oci"))
    assert err.attribute == "default_image_transport" and '"docker" or "appc"' in str(err)


def test_corrupt_msgpack_is_refused_clearly() -> None:
    err = refusal(PluginConfig, b"\xc1\xff\x00garbage")
    assert "could not be decoded" in str(err)


def test_non_map_config_is_refused() -> None:
    assert "expected a map" in str(refusal(PluginConfig, msgpack.packb([1, 2])))


@pytest.mark.parametrize(
    ("values", "attribute", "needle"),
    [
        ({"insecure_options": ["bogus"]}, "insecure_options", "valid values are: none, image, tls"),
        ({"insecure_options": ["none", "image"]}, "insecure_options", "cannot be combined"),
        ({"net": ["host", "default"]}, "net", '"host" cannot be combined'),
        ({"net": ["bad name"]}, "net", "not a network name"),
        ({"port_map": {"http": " "}}, "port_map", "8080-tcp"),
        ({"ports": ["web-1"]}, "ports", "not a Nomad port label"),
        ({"image": " "}, "image", "must name an image"),
    ],
)
def test_task_validators_name_the_attribute(values: dict[str, object], attribute: str, needle: str) -> None:
    body = {"image": "busybox", **values}
    err = refusal(TaskConfig, nomad_encoding(TaskConfig, **body))
    assert err.attribute == attribute
    assert needle in str(err)


@pytest.mark.parametrize(
    ("values", "attribute"),
    [
        ({"runtime": ""}, "runtime"),
        ({"runtime": "bin/runc"}, "runtime"),
        ({"cni_path": []}, "cni_path"),
        ({"cni_path": ["cni"]}, "cni_path"),
        ({"data_dir": "rel/dir"}, "data_dir"),
    ],
)
def test_plugin_validators_name_the_attribute(values: dict[str, object], attribute: str) -> None:
    assert refusal(PluginConfig, nomad_encoding(PluginConfig, **values)).attribute == attribute


def test_numbers_in_cty_forms_are_accepted() -> None:
    from dataclasses import dataclass

    from nomad_rkt_driver.config.fields import setting

    @dataclass(frozen=True)
    class Numbers:
        whole: int = setting(1, "")
        real: float = setting(1.0, "")

    assert decode(Numbers, {"whole": 3.0, "real": "2.5"}, "x") == Numbers(whole=3, real=2.5)
    with pytest.raises(InvalidConfig, match="whole number"):
        decode(Numbers, {"whole": 2.5, "real": None}, "x")
    with pytest.raises(InvalidConfig, match="expected a number"):
        decode(Numbers, {"whole": True, "real": None}, "x")
