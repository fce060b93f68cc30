"""The OCI config builder: one test group per concern."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.runtime import security
from nomad_rkt_driver.runtime.spec import (
    Bind,
    HostLimits,
    PodSpec,
    Resources,
    Rlimit,
    bind_mount,
    build_config,
    host_limits,
    mounts_block,
    namespaces_block,
    process_block,
    resources_block,
    rlimits_block,
    security_blocks,
)

HOST = HostLimits(hard_rlimits={"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": 96364}, caps=frozenset(security.ALL_CAPS))


def spec(**fields: object) -> PodSpec:
    return PodSpec(**{"pod_id": "p1", "args": ("sh", "-c", "true"), **fields})  # type: ignore[arg-type]


def test_process_block_adds_path_and_user() -> None:
    block = process_block(spec(env=(("A", "1"),), cwd="/srv", uid=1000, gid=100, additional_gids=(5, 6)))
    assert block["terminal"] is False
    assert block["args"] == ["sh", "-c", "true"]
    assert block["env"][0].startswith("PATH=") and block["env"][1] == "A=1"
    assert block["cwd"] == "/srv"
    assert block["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5, 6]}


def test_process_block_keeps_the_tasks_path() -> None:
    assert process_block(spec(env=(("PATH", "/x"),)))["env"] == ["PATH=/x"]


@pytest.mark.parametrize(("fields", "needle"), [({"args": ()}, "no command"), ({"cwd": "rel"}, "absolute")])
def test_process_block_refuses_bad_input(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        process_block(spec(**fields))


def test_rlimits_default_nofile_and_never_above_the_host() -> None:
    assert rlimits_block((), HOST.hard_rlimits) == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 20000}]
    ok = rlimits_block((Rlimit("RLIMIT_NOFILE", 4096, 8192),), HOST.hard_rlimits)
    assert ok == [{"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 8192}]
    with pytest.raises(InvalidArgument, match=r"RLIMIT_NOFILE .*host's hard limit is 20000"):
        rlimits_block((Rlimit("RLIMIT_NOFILE", 1048576, 1048576),), HOST.hard_rlimits)
    with pytest.raises(InvalidArgument, match="unknown resource limit"):
        rlimits_block((Rlimit("RLIMIT_BOGUS", 1, 1),), HOST.hard_rlimits)


def test_rlimits_clamp_default_soft_to_a_low_host_hard_limit() -> None:
    assert rlimits_block((), {"RLIMIT_NOFILE": 512}) == [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}]


def test_mounts_standard_then_binds() -> None:
    mounts = mounts_block(spec(binds=(Bind("/host/alloc", "/alloc"), Bind("/host/secrets", "/secrets", True))))
    dests = [m["destination"] for m in mounts]
    assert dests[:7] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert mounts[-2]["options"] == ["rbind", "rprivate", "rw"]
    assert mounts[-1] == {
        "destination": "/secrets",
        "type": "bind",
        "source": "/host/secrets",
        "options": ["rbind", "rprivate", "ro"],
    }


def test_bind_mount_needs_absolute_paths() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        bind_mount(Bind("rel", "/x"))


def test_resources_only_what_is_set() -> None:
    assert resources_block(Resources(), privileged=False) == {"devices": [{"allow": False, "access": "rwm"}]}
    full = resources_block(
        Resources(
            memory_limit_bytes=256 << 20,
            memory_reservation_bytes=128 << 20,
            cpu_shares=500,
            cpu_quota_us=50000,
            cpu_period_us=100000,
            cpuset_cpus="0,1",
            pids_limit=100,
        ),
        privileged=True,
    )
    assert full == {
        "devices": [{"allow": True, "access": "rwm"}],
        "memory": {"limit": 256 << 20, "reservation": 128 << 20},
        "cpu": {"shares": 500, "quota": 50000, "period": 100000, "cpus": "0,1"},
        "pids": {"limit": 100},
    }


def test_namespaces_own_host_and_joined_network() -> None:
    base = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    assert namespaces_block("") == [*base, {"type": "network"}]
    assert namespaces_block("host") == base
    assert namespaces_block("/var/run/netns/x") == [*base, {"type": "network", "path": "/var/run/netns/x"}]
    with pytest.raises(InvalidArgument, match="network namespace"):
        namespaces_block("bridge")


def test_security_defaults() -> None:
    process, linux = security_blocks(spec(), HOST.caps)
    assert process["capabilities"]["bounding"] == sorted(security.DEFAULT_CAPS)
    assert process["noNewPrivileges"] is True
    assert linux["maskedPaths"] == list(security.MASKED_PATHS)
    assert linux["readonlyPaths"] == list(security.READONLY_PATHS)
    denied = linux["seccomp"]["syscalls"][0]["names"]
    assert "mount" in denied and "kexec_load" in denied and "read" not in denied


def test_cap_add_drop_and_seccomp_follow_the_capabilities() -> None:
    process, linux = security_blocks(spec(cap_add=("sys_admin",), cap_drop=("NET_RAW", "CAP_MKNOD")), HOST.caps)
    caps = process["capabilities"]["effective"]
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_RAW" not in caps and "CAP_MKNOD" not in caps
    assert "mount" not in linux["seccomp"]["syscalls"][0]["names"]


@pytest.mark.parametrize(
    ("fields", "caps_all", "paths", "seccomp"),
    [
        ({"privileged": True}, True, False, False),
        ({"insecure_options": ("capabilities",)}, True, True, True),
        ({"insecure_options": ("paths",)}, False, False, True),
        ({"insecure_options": ("seccomp", "image")}, False, True, False),
        ({"insecure_options": ("all-run",)}, True, False, False),
    ],
)
def test_privileged_and_insecure_options(fields: dict[str, object], caps_all: bool, paths: bool, seccomp: bool) -> None:
    process, linux = security_blocks(spec(**fields), HOST.caps)
    assert (len(process["capabilities"]["bounding"]) == len(security.ALL_CAPS)) is caps_all
    assert ("maskedPaths" in linux) is paths
    assert ("seccomp" in linux) is seccomp


def test_all_caps_never_exceed_the_hosts_bounding_set() -> None:
    host = frozenset(security.ALL_CAPS) - {"CAP_SYS_RESOURCE"}
    process, _ = security_blocks(spec(privileged=True), host)
    assert "CAP_SYS_RESOURCE" not in process["capabilities"]["bounding"]
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE"):
        security_blocks(spec(cap_add=("SYS_RESOURCE",)), host)


def test_build_config_assembles_everything() -> None:
    config = build_config(
        spec(cgroups_path="/nomad-rkt/p1", readonly_rootfs=True, resources=Resources(oom_score_adj=500)), "rootfs", HOST
    )
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["hostname"] == "p1"
    assert config["linux"]["cgroupsPath"] == "/nomad-rkt/p1"
    assert config["process"]["oomScoreAdj"] == 500
    assert config["process"]["rlimits"][0]["type"] == "RLIMIT_NOFILE"


def test_host_limits_reads_this_host() -> None:
    host = host_limits()
    assert host.hard_rlimits["RLIMIT_NOFILE"] > 0
    assert "CAP_KILL" in host.caps
