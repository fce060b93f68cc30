"""StartTask through the real plugin process with ACI images: a gpg-signed local ACI runs without the
``image`` opt-out and exits with its own code; an unsigned one is refused until the task opts out; an
ACI's capabilities retain-set and supplementaryGIDs are what the pod's process holds (read from its
/proc/self/status), and a retained capability the plugin does not allow refuses the start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from nomad_rkt_driver.images.keystore import Keystore
from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime.security import caps_from_mask
from tests.acibuild import Signer, aci_manifest, build_aci, make_signer
from tests.integration.driver.conftest import make_alloc, set_config, task_config
from tests.protocol.plugin import Plugin


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[Signer]:
    made = make_signer(tmp_path, "publisher")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def plugin(plugin: Plugin, data_dir: Path, tmp_path: Path, signer: Signer) -> Plugin:
    """The shared running plugin, trusting the signer's key for example.com."""
    trust_dir = tmp_path / "trustedkeys"
    Keystore([trust_dir]).add(signer.armored, "example.com")
    set_config(plugin, data_dir, trust_dir=str(trust_dir))
    return plugin


def test_signed_aci_runs_and_exits_with_its_code(plugin: Plugin, signer: Signer, tmp_path: Path) -> None:
    manifest = aci_manifest()
    manifest["app"]["exec"] = ["/bin/sh", "-c", "echo $GREETING from $(pwd); exit 3"]
    manifest["app"]["workingDirectory"] = "/tmp"
    built = build_aci(tmp_path / "images" / "busybox.aci", manifest)
    signer.sign(built.path)
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, str(built.path), insecure_options=[])
    response = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    try:
        assert response.handle.state == driver_pb2.RUNNING
        result = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
        assert result.result.exit_code == 3
        assert alloc.stdout.text() == "hello-aci from /tmp\n"
    finally:
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)


def test_unsigned_aci_is_refused_until_the_task_opts_out(plugin: Plugin, tmp_path: Path, data_dir: Path) -> None:
    built = build_aci(tmp_path / "images" / "unsigned.aci", aci_manifest())
    alloc = make_alloc(tmp_path, "unsigned")
    config = task_config(alloc, str(built.path), insecure_options=[])
    with pytest.raises(grpc.RpcError) as info:
        plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "error opening signature file" in details and 'insecure_options = ["image"]' in details, details
    records = data_dir / "images" / "records"
    assert not records.is_dir() or list(records.iterdir()) == [], "a refused image was stored"

    alloc = make_alloc(tmp_path, "optout")
    config = task_config(alloc, str(built.path), insecure_options=["image"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    try:
        result = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
        assert result.result.exit_code == 0
        assert alloc.stdout.text() == "hello from the aci\n"
    finally:
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)


RETAIN = "os/linux/capabilities-retain-set"


def test_aci_isolators_set_the_pods_capabilities_and_groups(plugin: Plugin, signer: Signer, tmp_path: Path) -> None:
    manifest = aci_manifest()
    manifest["app"]["exec"] = ["/bin/sh", "-c", "grep -E '^(CapEff|CapBnd|Groups):' /proc/self/status"]
    manifest["app"]["supplementaryGIDs"] = [10, 27]
    manifest["app"]["isolators"] = [
        {"name": RETAIN, "value": {"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"]}},
        {"name": "resource/memory", "value": {"request": "8M", "limit": "8M"}},  # Nomad's resources win
        {"name": "os/linux/apparmor-profile", "value": {"name": "unconfined"}},  # accepted, not applied
    ]
    built = build_aci(tmp_path / "images" / "caps.aci", manifest)
    signer.sign(built.path)
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, str(built.path), insecure_options=[], cap_drop=["KILL"])
    plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    try:
        result = plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=config.id), timeout=60)
        assert result.result.exit_code == 0, alloc.stdout.text()
        status = dict(line.split(":", 1) for line in alloc.stdout.text().splitlines())
    finally:
        plugin.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=config.id, force=True), timeout=60)
    # the image's retain-set, less the task's cap_drop
    assert caps_from_mask(status["CapEff"].strip()) == {"CAP_NET_BIND_SERVICE", "CAP_CHOWN"}
    assert caps_from_mask(status["CapBnd"].strip()) == {"CAP_NET_BIND_SERVICE", "CAP_CHOWN"}
    assert status["Groups"].split() == ["10", "27"]


def test_aci_retaining_a_capability_the_plugin_does_not_allow_is_refused(
    plugin: Plugin, signer: Signer, tmp_path: Path
) -> None:
    manifest = aci_manifest()
    manifest["app"]["isolators"] = [{"name": RETAIN, "value": {"set": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}}]
    built = build_aci(tmp_path / "images" / "admin.aci", manifest)
    signer.sign(built.path)
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, str(built.path), insecure_options=[])
    with pytest.raises(grpc.RpcError) as info:
        plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=120)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    for needle in (str(built.path), RETAIN, "CAP_SYS_ADMIN", "allow_caps", 'cap_drop = ["SYS_ADMIN"]'):
        assert needle in details, details
