"""Pods on real CNI networks through the plugin process: Nomad ports onto named image ports, fetched
through 127.0.0.1; group netns, host and none; UDP; and bad inputs that must leave nothing behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from nomad_rkt_driver.protocol.gen import driver_pb2
from tests.integration.driver.conftest import make_alloc
from tests.protocol.plugin import Plugin

from .conftest import CNI_PATH, Env, configure, fetch, free_port, task_config

HTTPD = "mkdir -p /local/www && echo hello $NOMAD_TASK_NAME > /local/www/index.html && " + (
    "exec httpd -f -p {port} -h /local/www"
)


def start(plugin: Plugin, config: driver_pb2.TaskConfig) -> driver_pb2.StartTaskResponse:
    response: driver_pb2.StartTaskResponse = plugin.driver.StartTask(
        driver_pb2.StartTaskRequest(task=config), timeout=120
    )
    return response


def destroy(plugin: Plugin, task_id: str) -> None:
    plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=120)


def httpd(port: int) -> dict[str, Any]:
    return {"command": "/bin/sh", "args": ["-c", HTTPD.format(port=port)]}


def test_docker_style_named_port_through_localhost(plugin: Plugin, image: str, tmp_path: Path) -> None:
    host_port = free_port()
    alloc = make_alloc(tmp_path)
    ports = (driver_pb2.PortMapping(label="http", value=host_port, host_ip="127.0.0.1"),)
    config = task_config(
        alloc,
        image,
        ports,
        port_map={"http": "8080-tcp"},
        extra_hosts=["db.internal:10.0.0.5"],
        dns_servers=["192.0.2.53"],
        dns_search_domains=["svc.example"],
        **httpd(8080),
    )
    response = start(plugin, config)
    try:
        override = response.network_override
        assert dict(override.port_map) == {"http": 8080} and override.auto_advertise
        assert override.addr.startswith(plugin_subnet_prefix(tmp_path))
        assert fetch(f"http://127.0.0.1:{host_port}/") == "hello web\n"
        assert fetch(f"http://{override.addr}:8080/") == "hello web\n"  # the pod's own address too
        inspect = plugin.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=config.id))
        assert inspect.network_override.addr == override.addr
        state = json.loads(next((tmp_path / "data" / "network" / "pods").glob("*/state.json")).read_text())
        assert [n["ifname"] for n in state["networks"]] == ["eth0"]
        resolv = next((tmp_path / "data" / "network" / "pods").glob("*/resolv.conf")).read_text()
        assert resolv == "nameserver 192.0.2.53\nsearch svc.example\n"
        hosts = next((tmp_path / "data" / "network" / "pods").glob("*/hosts")).read_text()
        assert f"{override.addr}\tweb" in hosts and "10.0.0.5\tdb.internal" in hosts
    finally:
        destroy(plugin, config.id)
    destroy(plugin, config.id)  # idempotent


def plugin_subnet_prefix(tmp_path: Path) -> str:
    """The default network's subnet the env fixture chose (read back from the IPAM data dir)."""
    state = json.loads(next((tmp_path / "data" / "network" / "pods").glob("*/state.json")).read_text())
    subnet: str = state["networks"][0]["conf"]["plugins"][0]["ipam"]["subnet"]
    return subnet.rsplit(".", 1)[0] + "."


def test_oci_label_port_and_to_only_mapping(plugin: Plugin, image: str, tmp_path: Path) -> None:
    admin_port, web_port = free_port(), free_port()
    alloc = make_alloc(tmp_path, "admin")
    # "admin" is the image's io.nomad.rkt.port.admin=9090/tcp label: the label alone names it.
    admin = task_config(
        alloc,
        image,
        (driver_pb2.PortMapping(label="admin", value=admin_port, host_ip="127.0.0.1"),),
        ports=["admin"],
        **httpd(9090),
    )
    alloc2 = make_alloc(tmp_path, "web")
    web = task_config(
        alloc2,
        image,
        (driver_pb2.PortMapping(label="web", value=web_port, to=8081, host_ip="127.0.0.1"),),
        ports=["web"],
        **httpd(8081),
    )
    started: list[str] = []
    try:
        for config in (admin, web):
            response = start(plugin, config)
            started.append(config.id)
        assert dict(response.network_override.port_map) == {"web": 8081}
        assert fetch(f"http://127.0.0.1:{admin_port}/") == "hello admin\n"
        assert fetch(f"http://127.0.0.1:{web_port}/") == "hello web\n"
    finally:
        for task_id in started:
            destroy(plugin, task_id)


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
s.settimeout(30)
data, peer = s.recvfrom(100)
s.sendto(b"pong " + data, peer)
"""


def test_udp_mapping(plugin: Plugin, image: str, tmp_path: Path) -> None:
    # This busybox's nc has no UDP mode, so the listener is a Python echo run inside the pod's
    # network namespace (ip netns exec); the pod itself declares 53-udp and just sleeps.
    host_port = free_port(socket.SOCK_DGRAM)
    alloc = make_alloc(tmp_path, "dns")
    config = task_config(
        alloc,
        image,
        (driver_pb2.PortMapping(label="dns", value=host_port, host_ip="127.0.0.1"),),
        port_map={"dns": "53-udp"},
        command="/bin/sleep",
        args=["60"],
    )
    response = start(plugin, config)
    try:
        assert dict(response.network_override.port_map) == {"dns": 53}
        state = json.loads(next((tmp_path / "data" / "network" / "pods").glob("*/state.json")).read_text())
        assert state["networks"][0]["runtime_config"]["portMappings"][0]["protocol"] == "udp"
        with subprocess.Popen(
            ["ip", "netns", "exec", state["netns"], sys.executable, "-c", UDP_ECHO], stdout=subprocess.PIPE, text=True
        ) as echo:
            assert echo.stdout is not None and echo.stdout.readline() == "ready\n"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.settimeout(10)
                sender.sendto(b"ping", ("127.0.0.1", host_port))
                assert sender.recvfrom(100)[0] == b"pong ping"
            assert echo.wait(10) == 0
    finally:
        destroy(plugin, config.id)


def test_two_tasks_share_a_group_netns(plugin: Plugin, image: str, tmp_path: Path) -> None:
    name = f"rkt-test-group-{tmp_path.name[-8:]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    started: list[str] = []
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        path = f"/run/netns/{name}"
        server = task_config(make_alloc(tmp_path, "server"), image, netns_path=path, port_map={"x": "y"}, **httpd(8080))
        client_alloc = make_alloc(tmp_path, "client")
        client = task_config(
            client_alloc,
            image,
            netns_path=path,
            command="/bin/sh",
            args=[
                "-c",
                "hostname > /local/host; "
                "for i in $(seq 50); do wget -q -O /local/page http://127.0.0.1:8080/ && exit 0; sleep 0.2; done",
            ],
        )
        client.network_isolation_spec.hostsConfig.hostname = "web-group"  # the group's network { hostname }
        for config in (server, client):
            response = start(plugin, config)
            started.append(config.id)
            assert not response.HasField("network_override")  # Nomad owns the group network
        result = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=client.id), timeout=60)
        assert result.result.exit_code == 0
        assert (client_alloc.dir / "client" / "local" / "page").read_text() == "hello server\n"
        assert (client_alloc.dir / "client" / "local" / "host").read_text() == "web-group\n"
    finally:
        for task_id in started:
            destroy(plugin, task_id)
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_host_network_ignores_port_map_with_an_event(plugin: Plugin, image: str, tmp_path: Path) -> None:
    port = free_port()
    events = plugin.driver.TaskEvents(driver_pb2.TaskEventsRequest())
    seen: list[str] = []

    def read() -> None:
        try:
            for event in events:
                seen.append(event.message)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    alloc = make_alloc(tmp_path)
    ports = (driver_pb2.PortMapping(label="http", value=port, host_ip="127.0.0.1"),)
    config = task_config(alloc, image, ports, net=["host"], port_map={"http": "8080-tcp"}, **httpd(port))
    response = start(plugin, config)
    try:
        assert not response.HasField("network_override")
        assert fetch(f"http://127.0.0.1:{port}/") == "hello web\n"  # the pod binds the host port itself
        deadline = time.monotonic() + 10
        while not any("ignored" in m for m in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(m.startswith("port_map/ports ignored for http: the task uses host networking") for m in seen), seen
    finally:
        events.cancel()
        destroy(plugin, config.id)


def test_none_network_has_only_loopback(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, net=["none"], command="/bin/sh", args=["-c", "cat /proc/net/dev"])
    response = start(plugin, config)
    assert not response.HasField("network_override")
    result = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
    assert result.result.exit_code == 0
    interfaces = [line.split(":")[0].strip() for line in alloc.stdout.text().splitlines()[2:]]
    assert interfaces == ["lo"]
    destroy(plugin, config.id)


def refused(plugin: Plugin, config: driver_pb2.TaskConfig) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        start(plugin, config)
    return info.value


def test_unknown_and_broken_networks(plugin: Plugin, image: str, tmp_path: Path, env: Env) -> None:
    (env.conf_dir / "lan.conflist").write_text('{"cniVersion": "1.0.0", "name": "lan", "plugins": [')
    err = refused(plugin, task_config(make_alloc(tmp_path), image, net=["wan"], command="/bin/true"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert 'network "wan" is not known; known networks: default, host, none' in str(err.details())
    err = refused(plugin, task_config(make_alloc(tmp_path), image, net=["lan"], command="/bin/true"))
    assert f"{env.conf_dir}/lan.conflist is not a usable CNI conflist: not valid JSON" in str(err.details())


def test_named_port_the_image_lacks_suggests_the_right_name(plugin: Plugin, image: str, tmp_path: Path) -> None:
    ports = (driver_pb2.PortMapping(label="http", value=free_port(), host_ip="127.0.0.1"),)
    err = refused(plugin, task_config(make_alloc(tmp_path), image, ports, port_map={"http": "8080"}))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert 'port_map.http: the image has no port named "8080"' in str(err.details())
    assert 'did you mean "8080-tcp"?' in str(err.details())


def test_missing_cni_plugin_is_recoverable(plugin: Plugin, image: str, tmp_path: Path, env: Env) -> None:
    partial = tmp_path / "cni"
    partial.mkdir()
    for name in ("ptp", "host-local", "bridge"):
        (partial / name).symlink_to(f"{CNI_PATH}/{name}")
    configure(plugin, env, cni_path=[str(partial)])
    ports = (driver_pb2.PortMapping(label="http", value=free_port(), host_ip="127.0.0.1"),)
    err = refused(plugin, task_config(make_alloc(tmp_path), image, ports, port_map={"http": "8080-tcp"}))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "portmap" in str(err.details()) and str(partial) in str(err.details())


def test_host_port_taken_by_another_process(plugin: Plugin, image: str, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = (driver_pb2.PortMapping(label="http", value=taken, host_ip="127.0.0.1"),)
        err = refused(plugin, task_config(make_alloc(tmp_path), image, ports, port_map={"http": "8080-tcp"}))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"host port 127.0.0.1:{taken}/tcp is already in use" in str(err.details())


def test_pod_that_fails_to_start_leaves_no_network(plugin: Plugin, image: str, tmp_path: Path) -> None:
    ports = (driver_pb2.PortMapping(label="http", value=free_port(), host_ip="127.0.0.1"),)
    err = refused(
        plugin, task_config(make_alloc(tmp_path), image, ports, port_map={"http": "8080-tcp"}, command="/no/such")
    )
    assert "/no/such" in str(err.details())


def test_teardown_after_a_plugin_crash(plugin: Plugin, image: str, tmp_path: Path, env: Env) -> None:
    from tests.protocol.plugin import launch, nomad_env

    host_port = free_port()
    ports = (driver_pb2.PortMapping(label="http", value=host_port, host_ip="127.0.0.1"),)
    config = task_config(make_alloc(tmp_path), image, ports, port_map={"http": "8080-tcp"}, **httpd(8080))
    handle = start(plugin, config).handle
    plugin.kill()  # SIGKILL: the fresh process must tear down from the persisted state
    fresh = launch(nomad_env())
    try:
        configure(fresh, env)
        fresh.driver.RecoverTask(driver_pb2.RecoverTaskRequest(task_id=config.id, handle=handle), timeout=60)
        assert fetch(f"http://127.0.0.1:{host_port}/") == "hello web\n"
        inspect = fresh.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=config.id))
        assert dict(inspect.network_override.port_map) == {"http": 8080}
        destroy(fresh, config.id)
    finally:
        fresh.shutdown()
        fresh.kill()
