"""An ACI's named port on a real CNI network: the manifest declares ``http`` (8080/tcp), the task maps
Nomad's dynamic host port onto it with ``port_map { http = "http" }``, and a page is fetched through the
host port and through the pod's own address."""

from __future__ import annotations

from pathlib import Path

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.acibuild import aci_manifest, build_aci
from tests.imagebuild import busybox_layer
from tests.integration.driver.conftest import make_alloc
from tests.protocol.plugin import Plugin

from .conftest import fetch, free_port, task_config


def test_port_map_names_an_aci_port(plugin: Plugin, tmp_path: Path) -> None:
    manifest = aci_manifest("example.com/web")
    manifest["app"]["exec"] = ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
    manifest["app"]["ports"] = [{"name": "http", "protocol": "tcp", "port": 8080}]
    rootfs = busybox_layer().dir("www").file("www/index.html", b"hello from an aci port\n")
    built = build_aci(tmp_path / "web.aci", manifest, rootfs)

    host_port = free_port()
    ports = (driver_pb2.PortMapping(label="web", value=host_port, host_ip="127.0.0.1"),)
    config = task_config(make_alloc(tmp_path), str(built.path), ports, port_map={"web": "http"})
    response = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    try:
        override = response.network_override
        assert dict(override.port_map) == {"web": 8080}
        assert fetch(f"http://127.0.0.1:{host_port}/") == "hello from an aci port\n"
        assert fetch(f"http://{override.addr}:8080/") == "hello from an aci port\n"
    finally:
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=120)
