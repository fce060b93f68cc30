"""The plugin's tls_ca_file reaches the registry client: a registry whose certificate comes from a private
CA (made by openssl) is pulled from through Images.prepare only when that CA is given, or with the
task's insecure_options "tls"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.imaging import Images
from nomad_rkt_driver.errors import DriverError
from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.store import Store
from tests.imagebuild import busybox_image
from tests.registryserver import PASSWORD, USERNAME, RegistryServer


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry", "tls-basic").start()
    try:
        built = busybox_image(tmp_path / "layout", tag="v1")
        server.push(f"oci:{built.layout}:v1", "team/hello:v1")
        yield server
    finally:
        server.close()


def test_registry_tls_trusts_the_plugins_ca_file(registry: RegistryServer, tmp_path: Path) -> None:
    image = f"{registry.host}/team/hello:v1"

    def prepare(*options: str, ca: bool) -> object:
        task = decode(
            TaskConfig,
            {
                "image": image,
                "insecure_options": ["image", *options],
                "auth": {"username": USERNAME, "password": PASSWORD},
            },
            "task config",
        )
        values = {"data_dir": str(tmp_path / "data"), **({"tls_ca_file": str(registry.ca)} if ca else {})}
        with Store(tmp_path / "data" / "images", durable=False) as store:
            return Images(store, Puller(store)).prepare(task, decode(PluginConfig, values, "p"), "task config")

    with pytest.raises(DriverError, match="tls_ca_file"):
        prepare(ca=False)
    assert prepare(ca=True) is not None
    assert prepare("tls", ca=False) is not None
