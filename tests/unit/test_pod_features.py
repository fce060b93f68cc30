"""Issue 4's pod features without a pod: volume and device parsing, the podspec decisions
(volumes allowed or not, devices read from real host nodes, resources), the OCI entries they
become, and where a pod's cgroup goes when Nomad names one (on cgroup trees the test builds)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig, split_device, split_volume
from nomad_rkt_driver.driver import podspec
from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, InvalidConfig
from nomad_rkt_driver.images.imageconfig import ImageDefaults
from nomad_rkt_driver.network.attach import Attachment
from nomad_rkt_driver.runtime import cgroups
from nomad_rkt_driver.runtime.spec import (
    Bind,
    Device,
    HostLimits,
    PodSpec,
    bind_mount,
    build_config,
    host_device,
)
from nomad_rkt_driver.runtime.spec import Resources as SpecResources
from nomad_rkt_driver.types import Device as NomadDevice
from nomad_rkt_driver.types import Mount, Resources, TaskRequest

WHERE = "rkt task config"
IMAGE = ImageDefaults(entrypoint=("/bin/sh",))
NET = Attachment(netns="", ip="", resolv_conf="/etc/resolv.conf", hosts="/etc/hosts")
HOST = HostLimits(hard_rlimits={"RLIMIT_NOFILE": 4096}, caps=frozenset({"CAP_CHOWN"}))


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("/srv/data:/data", ("/srv/data", "/data", False)),
        ("/srv/data:/data:ro", ("/srv/data", "/data", True)),
        ("/srv/data:/data:rw", ("/srv/data", "/data", False)),
        ("/srv/data:/data:readOnly", ("/srv/data", "/data", True)),  # the old rkt driver's spelling
        ("local/conf:/etc/app", ("local/conf", "/etc/app", False)),
    ],
)
def test_volume_syntax(entry: str, parsed: tuple[str, str, bool]) -> None:
    assert split_volume(entry) == parsed


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("/srv/data", 'is not "host_path:container_path[:ro]"'),
        ("/a:/b:ro:extra", 'is not "host_path:container_path[:ro]"'),
        (":/data", "is not"),
        ("/srv:data", 'container path "data" must be an absolute path'),
        ("/srv:/", 'other than "/"'),
        ("/srv:/data:readonly", '"readonly" is not a volume mode; use ro, rw or readOnly'),
    ],
)
def test_bad_volume_is_refused_with_the_form(entry: str, needle: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        decode(TaskConfig, {"image": "x", "volumes": ["/ok:/ok", entry]}, WHERE)
    assert info.value.attribute == "volumes" and needle in info.value.problem


def test_device_syntax_defaults_and_refusals() -> None:
    assert split_device({"host_path": "/dev/fuse"}) == ("/dev/fuse", "/dev/fuse", "rwm")
    assert split_device({"host_path": "/dev/sda", "container_path": "/dev/xvdc", "cgroup_permissions": "r"}) == (
        "/dev/sda",
        "/dev/xvdc",
        "r",
    )
    for entry, needle in [
        ({"host_path": "dev/fuse"}, "must be an absolute path on the host"),
        ({"container_path": "/dev/x"}, 'host_path ""'),
        ({"host_path": "/dev/fuse", "cgroup_permissions": "rwx"}, 'letters of "rwm"'),
        ({"host_path": "/dev/fuse", "path": "/x"}, "path: not a device key"),
    ]:
        with pytest.raises(InvalidConfig) as info:
            decode(TaskConfig, {"image": "x", "devices": [{"host_path": "/dev/null"}, entry]}, WHERE)
        assert info.value.attribute == "devices" and info.value.problem.startswith("[1]: ")
        assert needle in info.value.problem, info.value.problem


@pytest.mark.parametrize(
    ("values", "attribute"),
    [
        ({"pids_limit": -1}, "pids_limit"),
        ({"oom_score_adj": -5}, "oom_score_adj"),
        ({"oom_score_adj": 1001}, "oom_score_adj"),
    ],
)
def test_resource_settings_are_bounded(values: dict[str, Any], attribute: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        decode(TaskConfig, {"image": "x", **values}, WHERE)
    assert info.value.attribute == attribute


# -- podspec -------------------------------------------------------------------------------


def alloc(tmp_path: Path, task: str = "web") -> Path:
    alloc_dir = tmp_path / "alloc-1"
    for sub in ("alloc", f"{task}/local", f"{task}/secrets"):
        (alloc_dir / sub).mkdir(parents=True)
    return alloc_dir


def build(tmp_path: Path, cfg: dict[str, Any], plugin: dict[str, Any] | None = None, **task: Any) -> PodSpec:
    request = TaskRequest(
        **{"id": "a1/web/x", "name": "web", "alloc_id": "a1", "driver_config": b"", "alloc_dir": str(alloc(tmp_path))}
        | task
    )
    return podspec.build(
        request,
        decode(TaskConfig, {"image": "x", **cfg}, WHERE),
        IMAGE,
        (),
        decode(PluginConfig, plugin or {}, "plugin"),
        WHERE,
        NET,
    )


def test_volumes_need_the_plugin_switch_outside_the_alloc_dir(tmp_path: Path) -> None:
    outside = tmp_path / "srv"
    outside.mkdir()
    with pytest.raises(InvalidConfig) as info:
        build(tmp_path, {"volumes": [f"{outside}:/data"]})
    assert info.value.attribute == "volumes[0]"
    assert "volumes { enabled = true }" in info.value.problem and str(outside) in info.value.problem
    spec = build(
        tmp_path / "b", {"volumes": [f"{outside}:/data", f"{outside}:/ro:readOnly"]}, {"volumes": {"enabled": True}}
    )
    assert Bind(str(outside), "/data", False) in spec.binds and Bind(str(outside), "/ro", True) in spec.binds


def test_relative_volumes_are_in_the_task_dir_and_need_no_switch(tmp_path: Path) -> None:
    spec = build(tmp_path, {"volumes": ["local:/conf:ro", "../alloc:/shared"]})
    alloc_dir = tmp_path / "alloc-1"
    assert Bind(str(alloc_dir / "web" / "local"), "/conf", True) in spec.binds
    assert Bind(str(alloc_dir / "alloc"), "/shared", False) in spec.binds


def test_a_symlink_out_of_the_alloc_dir_is_not_a_way_around_the_switch(tmp_path: Path) -> None:
    alloc_dir = alloc(tmp_path / "s")
    (alloc_dir / "web" / "local" / "escape").symlink_to("/etc")
    with pytest.raises(InvalidConfig, match="host volumes are disabled"):
        build(tmp_path / "s2", {"volumes": ["local/escape:/x"]}, alloc_dir=str(alloc_dir))


def test_missing_volume_source_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as info:
        build(tmp_path, {"volumes": ["local:/ok", "local/nope:/data"]})
    assert info.value.attribute == "volumes[1]"
    assert '"local/nope:/data"' in info.value.problem and "does not exist" in info.value.problem


def test_nomad_mounts_keep_readonly_and_propagation(tmp_path: Path) -> None:
    mounts = (
        Mount("/a", "/srv/a", True, "host-to-task"),
        Mount("/b", "/srv/b", False, ""),
        Mount("/c", "/srv/c", False, "bidirectional"),
    )
    spec = build(tmp_path, {}, mounts=mounts)
    assert Bind("/srv/a", "/a", True, "rslave") in spec.binds
    assert Bind("/srv/b", "/b", False, "rprivate") in spec.binds
    assert Bind("/srv/c", "/c", False, "rshared") in spec.binds
    config = build_config(spec, "rootfs", HOST)
    assert config["linux"]["rootfsPropagation"] == "rshared"
    with pytest.raises(InvalidArgument, match="propagation_mode 'sideways'"):
        build(tmp_path / "p", {}, mounts=(Mount("/a", "/srv/a", False, "sideways"),))


def test_job_devices_need_allow_devices_and_are_read_from_the_host(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as info:
        build(tmp_path, {"devices": [{"host_path": "/dev/null"}]})
    assert info.value.attribute == "devices" and "allow_devices = true" in info.value.problem
    allowed = {"allow_devices": True}
    spec = build(
        tmp_path / "b",
        {"devices": [{"host_path": "/dev/null", "container_path": "/dev/sink", "cgroup_permissions": "rw"}]},
        allowed,
    )
    null = os.stat("/dev/null")
    assert spec.devices == (
        Device("/dev/sink", "c", os.major(null.st_rdev), os.minor(null.st_rdev), 0o666, 0, 0, "rw"),
    )
    with pytest.raises(InvalidConfig) as info:
        build(tmp_path / "c", {"devices": [{"host_path": "/dev/nrd-missing"}]}, allowed)
    assert info.value.attribute == "devices[0].host_path" and '"/dev/nrd-missing" does not exist' in info.value.problem
    with pytest.raises(InvalidConfig, match="is not a character or block device"):
        build(tmp_path / "d", {"devices": [{"host_path": "/etc/hostname"}]}, allowed)


def test_nomad_devices_need_no_switch_and_a_missing_one_is_named(tmp_path: Path) -> None:
    spec = build(tmp_path, {}, devices=(NomadDevice("", "/dev/zero", "r"),))
    assert [(d.path, d.kind, d.access) for d in spec.devices] == [("/dev/zero", "c", "r")]
    with pytest.raises(InvalidArgument, match=r"device /dev/nrd-gpu9 .*does not exist"):
        build(tmp_path / "b", {}, devices=(NomadDevice("/dev/gpu", "/dev/nrd-gpu9", "rwm"),))


def test_resources_pids_and_oom_score_adj(tmp_path: Path) -> None:
    res = Resources(
        memory_mb=100,
        memory_max_mb=300,
        memory_limit_bytes=300 << 20,
        cpu_shares=250,
        cpuset_cpus="1",
        cpuset_cgroup="/sys/fs/cgroup/cpuset/nomad/share",
    )
    spec = build(tmp_path, {}, resources=res)
    r = spec.resources
    assert (r.memory_limit_bytes, r.memory_reservation_bytes, r.cpu_shares, r.cpuset_cpus) == (
        300 << 20,
        100 << 20,
        250,
        "1",
    )
    assert (r.pids_limit, r.oom_score_adj) == (0, 0)  # 0 is explicit: never the agent's own value
    assert spec.nomad_cgroup == "/sys/fs/cgroup/cpuset/nomad/share"
    assert build(tmp_path / "b", {"oom_score_adj": 500}, {"pids_limit": 64}).resources.pids_limit == 64
    assert (
        build(tmp_path / "c", {"oom_score_adj": 500, "pids_limit": 10}, {"pids_limit": 64}).resources.oom_score_adj
        == 500
    )
    with pytest.raises(InvalidConfig, match="ceiling of 64"):
        build(tmp_path / "d", {"pids_limit": 100}, {"pids_limit": 64})


# -- OCI entries ---------------------------------------------------------------------------


def test_devices_become_nodes_and_allow_rules(tmp_path: Path) -> None:
    node = tmp_path / "blk"
    os.mknod(node, stat.S_IFBLK | 0o640, os.makedev(7, 200))
    dev = host_device(str(node), "r")
    assert (dev.kind, dev.major, dev.minor, dev.file_mode) == ("b", 7, 200, 0o640)
    spec = PodSpec(pod_id="p", args=("sh",), devices=(Device("/dev/xvdc", "b", 7, 200, 0o640, 0, 6, "r"),))
    linux = build_config(spec, "rootfs", HOST)["linux"]
    assert linux["devices"] == [
        {"path": "/dev/xvdc", "type": "b", "major": 7, "minor": 200, "fileMode": 0o640, "uid": 0, "gid": 6}
    ]
    assert linux["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "b", "major": 7, "minor": 200, "access": "r"},
    ]
    assert "rootfsPropagation" not in linux
    explicit = PodSpec(pod_id="p", args=("sh",), resources=SpecResources(oom_score_adj=0))
    assert build_config(explicit, "rootfs", HOST)["process"]["oomScoreAdj"] == 0


def test_bind_propagation_is_checked() -> None:
    assert bind_mount(Bind("/a", "/b", True, "rslave"))["options"] == ["rbind", "rslave", "ro"]
    with pytest.raises(InvalidArgument, match="propagation 'shared'"):
        bind_mount(Bind("/a", "/b", False, "shared"))


# -- cgroup placement ----------------------------------------------------------------------


def v1_tree(tmp_path: Path) -> Path:
    root = tmp_path / "v1"
    (root / "cpuset" / "nomad" / "share").mkdir(parents=True)
    (root / "memory").mkdir()
    return root


def test_placement_without_nomad_is_our_own_parent(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    assert cgroups.placement("p1", "/nomad-rkt", "", str(root)) == cgroups.Placement("/nomad-rkt/p1")
    assert cgroups.placement("p1", "/", "", str(root)).cgroups_path == "/p1"


def test_placement_v1_joins_nomads_cpuset_and_keeps_our_cgroup(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    share = root / "cpuset" / "nomad" / "share"
    for given in (str(share), "/nomad/share", "nomad/share"):
        assert cgroups.placement("p1", "/nomad-rkt", given, str(root)) == cgroups.Placement("/nomad-rkt/p1", share)
    with pytest.raises(FailedPrecondition, match="does not exist on this host"):
        cgroups.placement("p1", "/nomad-rkt", str(root / "cpuset" / "nomad" / "reserve" / "a.web"), str(root))
    with pytest.raises(FailedPrecondition, match="not in the"):
        cgroups.placement("p1", "/nomad-rkt", str(root / "memory" / "nomad"), str(root))
    with pytest.raises(FailedPrecondition, match="must not contain"):
        cgroups.placement("p1", "/nomad-rkt", "/nomad/../etc", str(root))


def test_placement_v2_is_a_child_of_nomads_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    scope = root / "nomad.slice" / "share.slice" / "a1.web.scope"
    scope.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    placed = cgroups.placement("p1", "/nomad-rkt", str(scope), str(root))
    assert placed == cgroups.Placement("/nomad.slice/share.slice/a1.web.scope/p1")
    # Removal takes only the pod's own child; the scope Nomad made stays.
    (scope / "p1").mkdir()
    assert cgroups.remove(placed.cgroups_path, str(root)) == []
    assert scope.is_dir() and not (scope / "p1").exists()
    with pytest.raises(FailedPrecondition, match="Nomad creates it"):
        cgroups.placement("p1", "/nomad-rkt", str(root / "nomad.slice" / "gone.scope"), str(root))
