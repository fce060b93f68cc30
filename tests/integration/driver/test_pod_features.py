"""Issue 4's pod features through the real plugin, runc and conmon: host volumes, devices, Nomad's
mounts with propagation, the cgroup Nomad names, and resource values read back from the live
cgroup and /proc. The ``data_dir`` fixture checks that nothing is left behind after each test."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from nomad_rkt_driver.protocol.gen import driver_pb2
from nomad_rkt_driver.runtime import cgroups
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.protocol.plugin import Plugin

from .conftest import CGROUP_PARENT, make_alloc, set_config, task_config
from .test_lifecycle import destroy, start, wait

CPUSET = Path("/sys/fs/cgroup/cpuset")
SETTLE_S = 10.0


def start_error(plugin: Plugin, config: driver_pb2.TaskConfig) -> str:
    with pytest.raises(grpc.RpcError) as info:
        start(plugin, config)
    return str(info.value.details())


def own_cgroups(config: driver_pb2.TaskConfig) -> list[Path]:
    return cgroups.existing_dirs(f"{CGROUP_PARENT}/{pod_id_for(config.id)}")


def pods_pids(config: driver_pb2.TaskConfig) -> list[int]:
    """The pod's processes, from its own memory cgroup, once it has one."""
    procs = cgroups.v1_dir("memory", f"{CGROUP_PARENT}/{pod_id_for(config.id)}") / "cgroup.procs"
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            pids = [int(p) for p in procs.read_text().split()]
            if pids:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"no process in {procs}")


def test_host_volumes_read_write_and_read_only(plugin: Plugin, data_dir: Path, image: str, tmp_path: Path) -> None:
    set_config(plugin, data_dir, volumes={"enabled": True})
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "seed").write_text("seeded\n")
    alloc = make_alloc(tmp_path)
    (alloc.dir / "web" / "local" / "app.conf").write_text("conf\n")
    for writable in (rw, ro, alloc.dir / "web" / "local"):  # the image's user is 1000: only "ro" may refuse
        writable.chmod(0o777)
    script = (
        "echo written > /data/out; cat /ro/seed /ro2/seed /conf/app.conf; "
        "echo x > /ro/new 2>/dev/null && echo WROTE-RO; echo x > /ro2/new 2>/dev/null && echo WROTE-RO2; "
        "echo x > /conf/new 2>/dev/null && echo WROTE-CONF; exit 0"
    )
    volumes = [f"{rw}:/data", f"{ro}:/ro:ro", f"{ro}:/ro2:readOnly", "local:/conf:ro"]
    config = task_config(alloc, image, command="/bin/sh", args=["-c", script], volumes=volumes)
    start(plugin, config)
    assert wait(plugin, config.id).result.exit_code == 0
    assert alloc.stdout.text() == "seeded\nseeded\nconf\n"  # no WROTE-*: read-only is read-only
    assert (rw / "out").read_text() == "written\n"
    assert sorted(p.name for p in ro.iterdir()) == ["seed"]
    destroy(plugin, config.id)


def test_volumes_disabled_and_missing_sources_leave_nothing(
    plugin: Plugin, data_dir: Path, image: str, tmp_path: Path
) -> None:
    outside = tmp_path / "srv"
    outside.mkdir()
    config = task_config(make_alloc(tmp_path), image, volumes=[f"{outside}:/data"])
    details = start_error(plugin, config)
    assert "volumes[0]" in details and "volumes { enabled = true }" in details, details
    assert own_cgroups(config) == []
    config = task_config(make_alloc(tmp_path), image, volumes=["local:/ok", "local/missing:/data"])
    details = start_error(plugin, config)
    assert "volumes[1]" in details and '"local/missing:/data"' in details and "does not exist" in details, details
    set_config(plugin, data_dir, volumes={"enabled": True})
    config = task_config(make_alloc(tmp_path), image, volumes=[f"{tmp_path}/nope:/data"])
    assert f"{tmp_path}/nope does not exist" in start_error(plugin, config)
    config = task_config(make_alloc(tmp_path), image, volumes=["/srv:data"])
    details = start_error(plugin, config)
    assert "volumes" in details and "must be an absolute path" in details, details
    config = task_config(make_alloc(tmp_path), image)  # Nomad's own mounts are checked too
    config.mounts.append(driver_pb2.Mount(task_path="/vol", host_path=f"{tmp_path}/no-volume"))
    assert f"mount source {tmp_path}/no-volume (for /vol) does not exist" in start_error(plugin, config)
    assert own_cgroups(config) == []


def test_devices_are_usable_with_their_permissions(plugin: Plugin, data_dir: Path, image: str, tmp_path: Path) -> None:
    # Nodes made by the test: a /dev/null twin, and a /dev/loop-control twin (not among runc's default
    # devices, so only its own rule decides; opened, it refuses reads and writes with EINVAL).
    null, ctl = tmp_path / "nrd-null", tmp_path / "nrd-loop-control"
    os.mknod(null, stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(ctl, stat.S_IFCHR, os.makedev(10, 237))
    for node in (null, ctl):
        node.chmod(0o666)  # the image's user is 1000
    alloc = make_alloc(tmp_path)
    script = (
        "echo data > /dev/sink && echo wrote-sink; ls -l /dev/sink /dev/nomad-ctl | tr -s ' ' | cut -d' ' -f1,5,6; "
        "cat /dev/nomad-ctl; echo x > /dev/nomad-ctl; exit 0"
    )
    devices = [{"host_path": str(null), "container_path": "/dev/sink", "cgroup_permissions": "rw"}]
    config = task_config(alloc, image, command="/bin/sh", args=["-c", script], devices=devices)
    config.devices.append(driver_pb2.Device(task_path="/dev/nomad-ctl", host_path=str(ctl), cgroup_permissions="r"))
    assert "allow_devices = true" in start_error(plugin, config)
    set_config(plugin, data_dir, allow_devices=True)
    start(plugin, config)
    assert wait(plugin, config.id).result.exit_code == 0
    assert alloc.stdout.text().splitlines() == ["wrote-sink", "crw-rw-rw- 10, 237", "crw-rw-rw- 1, 3"]
    errors = alloc.stderr.text()
    assert "read error: Invalid argument" in errors  # read: opened (allowed), then the device says no
    assert "can't create /dev/nomad-ctl: Operation not permitted" in errors  # write: the cgroup refuses
    destroy(plugin, config.id)
    config = task_config(make_alloc(tmp_path), image, devices=[{"host_path": f"{tmp_path}/gone"}])
    details = start_error(plugin, config)
    assert "devices[0].host_path" in details and f'"{tmp_path}/gone" does not exist' in details, details
    config = task_config(make_alloc(tmp_path), image)
    config.devices.append(driver_pb2.Device(task_path="/dev/gpu0", host_path="/dev/nrd-no-such-gpu"))
    assert "device /dev/nrd-no-such-gpu" in start_error(plugin, config)
    assert own_cgroups(config) == []


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A host dir that is a shared mount, as a Nomad host volume on a systemd host is."""
    path = tmp_path / "hostvol"
    (path / "sub").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-rshared", str(path)], check=True)
    try:
        yield path
    finally:
        for target in (path / "sub", path):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def test_nomad_mount_host_to_task_propagation(plugin: Plugin, image: str, tmp_path: Path, shared_dir: Path) -> None:
    alloc = make_alloc(tmp_path)
    wait_for = "for i in $(seq 100); do [ -f $1/sub/marker ] && { echo seen $1; exit 0; }; sleep 0.1; done; echo not $1"
    script = f"see() {{ {wait_for}; }}; see /slave & see /private; wait"
    config = task_config(alloc, image, command="/bin/sh", args=["-c", script])
    config.mounts.append(
        driver_pb2.Mount(task_path="/slave", host_path=str(shared_dir), propagation_mode="host-to-task")
    )
    config.mounts.append(driver_pb2.Mount(task_path="/private", host_path=str(shared_dir), readonly=True))
    start(plugin, config)
    time.sleep(0.5)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared_dir / "sub")], check=True)
    (shared_dir / "sub" / "marker").write_text("x")
    assert wait(plugin, config.id).result.exit_code == 0
    assert sorted(alloc.stdout.text().splitlines()) == ["not /private", "seen /slave"]
    destroy(plugin, config.id)


@pytest.fixture
def nomad_cpusets() -> Iterator[Path]:
    """What Nomad's client makes on a cgroup v1 host: <parent>/share and <parent>/reserve/<alloc>.<task>."""
    parent = CPUSET / f"nrd-nomad-{os.getpid()}"
    made = [parent, parent / "share", parent / "reserve"]
    try:
        for group in made:
            group.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):
                (group / name).write_text((group.parent / name).read_text())
        yield parent
    finally:
        # Runs before data_dir's clean-up: a pod a failed test left running is moved out first (it
        # is destroyed afterwards), so these groups can go.
        groups = [*sorted((g for g in parent.rglob("*") if g.is_dir()), reverse=True), parent]
        for group in groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    (CPUSET / "cgroup.procs").write_text(pid)
            group.rmdir()


def test_the_cgroup_nomad_names_is_used_and_kept(
    plugin: Plugin, image: str, tmp_path: Path, nomad_cpusets: Path
) -> None:
    share = nomad_cpusets / "share"
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "exec sleep 60"])
    config.resources.linux_resources.cpuset_cgroup = str(share)
    start(plugin, config)
    [pid] = pods_pids(config)
    assert (share / "cgroup.procs").read_text().split() == [str(pid)]  # in Nomad's cpuset cgroup...
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert f"cpuset:/{share.relative_to(CPUSET)}" in [line.split(":", 1)[1] for line in lines]
    memory = next(line for line in lines if ":memory:" in line)
    assert memory.endswith(f"{CGROUP_PARENT}/{pod_id_for(config.id)}")  # ...and in its own for the rest
    stream = plugin.driver.TaskStats(
        driver_pb2.TaskStatsRequest(task_id=config.id, collection_interval=Duration(nanos=200_000_000))
    )
    sample = next(stream).stats.agg_resource_usage.memory
    stream.cancel()
    assert sample.usage > 0 and driver_pb2.MemoryUsage.USAGE in sample.measured_fields  # the pod's own cgroup
    destroy(plugin, config.id)
    assert share.is_dir() and (share / "cgroup.procs").read_text() == ""  # Nomad's stays, empty
    assert own_cgroups(config) == []

    # Reserved cores: Nomad's per-task cpuset cgroup gets the cores, as Nomad's executor writes them.
    reserve = nomad_cpusets / "reserve" / f"{alloc.id}.web"
    reserve.mkdir()
    for name in ("cpuset.cpus", "cpuset.mems"):
        (reserve / name).write_text((CPUSET / name).read_text())
    alloc = make_alloc(tmp_path, "pinned")
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "grep Cpus_allowed_list /proc/self/status"])
    config.resources.linux_resources.cpuset_cgroup = str(reserve)
    config.resources.linux_resources.cpuset_cpus = "1"
    start(plugin, config)
    assert wait(plugin, config.id).result.exit_code == 0
    assert alloc.stdout.text().split() == ["Cpus_allowed_list:", "1"]
    assert (reserve / "cpuset.cpus").read_text().strip() == "1"
    destroy(plugin, config.id)
    assert reserve.is_dir()

    # A cgroup Nomad names but did not make is an error, and nothing is made in its place.
    config = task_config(make_alloc(tmp_path), image)
    config.resources.linux_resources.cpuset_cgroup = str(nomad_cpusets / "reserve" / "gone.web")
    assert "does not exist on this host" in start_error(plugin, config)
    assert not (nomad_cpusets / "reserve" / "gone.web").exists() and own_cgroups(config) == []


def test_resources_are_applied(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(
        alloc, image, command="/bin/sh", args=["-c", "exec sleep 60"], pids_limit=50, oom_score_adj=300
    )
    linux = config.resources.linux_resources
    linux.memory_limit_bytes, linux.cpu_shares, linux.cpu_quota, linux.cpu_period = 96 << 20, 300, 50000, 100000
    linux.cpuset_cpus = "0"
    config.resources.allocated_resources.memory.memory_mb = 32
    config.resources.allocated_resources.memory.memory_max_mb = 96
    start(plugin, config)
    [pid] = pods_pids(config)
    path = f"{CGROUP_PARENT}/{pod_id_for(config.id)}"

    def read(controller: str, name: str) -> str:
        return (cgroups.v1_dir(controller, path) / name).read_text().strip()

    assert read("memory", "memory.limit_in_bytes") == str(96 << 20)  # memory_max: the hard limit
    assert read("memory", "memory.soft_limit_in_bytes") == str(32 << 20)  # memory: the reservation
    assert (read("cpu", "cpu.shares"), read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")) == (
        "300",
        "50000",
        "100000",
    )
    assert read("cpuset", "cpuset.cpus") == "0" and read("pids", "pids.max") == "50"
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "300"
    destroy(plugin, config.id)


def test_nomads_oom_score_adj_applies_when_the_job_sets_none(plugin: Plugin, image: str, tmp_path: Path) -> None:
    alloc = make_alloc(tmp_path)
    config = task_config(alloc, image, command="/bin/sh", args=["-c", "cat /proc/self/oom_score_adj"])
    config.resources.linux_resources.oom_score_adj = 200
    start(plugin, config)
    assert wait(plugin, config.id).result.exit_code == 0
    assert alloc.stdout.text() == "200\n"
    destroy(plugin, config.id)
