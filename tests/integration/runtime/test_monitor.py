"""conmon's start-up as Pods.create drives it: held at its start pipe, moved out of the caller's cgroup into
<cgroup_parent>/monitors (in every hierarchy), runc's second step done through the exec fifo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.runtime import cgroupmove
from nomad_rkt_driver.runtime.bundle import create_bundle
from nomad_rkt_driver.runtime.monitor import spawn_monitor
from nomad_rkt_driver.runtime.pods import Pods
from nomad_rkt_driver.runtime.runc import ContainerNotRunning
from nomad_rkt_driver.runtime.spec import PodSpec, build_config, host_limits

from .conftest import Env, conmons_for, leftovers
from .test_pods import start


def cgroups_of(pid: int) -> set[str]:
    return {line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def monitors_dirs(env: Env) -> list[Path]:
    return [h / env.pods.monitors_cgroup.strip("/") for h, _ in cgroupmove.hierarchies() if h.exists()]


def test_conmon_lives_in_the_shared_monitors_cgroup_until_the_last_pod_goes(env: Env) -> None:
    first, _ = start(env, "sleep 60", name="a")
    second, _ = start(env, "sleep 60", name="b")
    monitors = f"{env.cgroup_parent}/monitors"
    for record in (first, second):
        assert cgroups_of(record.conmon_pid) == {monitors}, "conmon left in the caller's cgroup"
        assert cgroups_of(record.container_pid) == {record.cgroups_path}
    assert cgroups_of(os.getpid()).isdisjoint({monitors})  # the caller stays where it was
    assert len(monitors_dirs(env)) == len(cgroupmove.hierarchies())
    env.pods.destroy(first.pod_id)
    assert all(d.is_dir() for d in monitors_dirs(env)), "removed while a monitor still lives in it"
    env.pods.destroy(second.pod_id)
    assert [d for d in monitors_dirs(env) if d.exists()] == []
    assert leftovers(env) == []


def test_the_started_container_is_running_for_runc(env: Env) -> None:
    record, _ = start(env, "sleep 60")
    state = subprocess.run(
        [env.pods.runc.binary, "--root", str(env.pods.runc.root), "state", record.pod_id],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(state.stdout)["status"] == "running"
    assert not (env.pods.runc.root / record.pod_id / "exec.fifo").exists()


def test_a_failure_while_conmon_waits_kills_it_and_leaves_nothing(env: Env, tmp_path: Path) -> None:
    out, err = env.logs()
    spec = PodSpec(pod_id=env.new_id(), args=("true",))
    with pytest.raises(InvalidArgument, match="does not exist"):  # the overlay mount fails after conmon's spawn
        env.pods.create(spec, [tmp_path / "no-such-layer"], str(out.path), str(err.path))
    assert conmons_for(env.data_dir) == []
    assert leftovers(env) == []


def test_start_fails_clearly_when_the_containers_init_died(env: Env) -> None:
    out, err = env.logs()
    spec = PodSpec(pod_id=env.new_id(), args=("sleep", "60"), cgroups_path=f"{env.cgroup_parent}/x")
    pod_dir = env.pods.pod_dir(spec.pod_id)
    paths = env.pods._paths(pod_dir)
    for d in (paths.exit_dir, paths.persist_dir):
        d.mkdir(parents=True)
    create_bundle(pod_dir / "bundle", env.layers, build_config(spec, "rootfs", host_limits()))
    try:  # Pods.create's steps up to runc's second one
        monitor = spawn_monitor(
            env.pods.conmon, env.pods.runc, spec.pod_id, pod_dir / "bundle", paths, str(out.path), str(err.path)
        )
        monitor.release()
        monitor.detached()
        init = monitor.created()
        os.kill(init, signal.SIGKILL)
        with pytest.raises(ContainerNotRunning, match="init process"):
            env.pods.runc.start(spec.pod_id, init)
    finally:
        env.pods.destroy(spec.pod_id)
        cgroupmove.prune(spec.cgroups_path)


def test_another_runtime_name_gets_its_own_start_command(env: Env, tmp_path: Path) -> None:
    alias = tmp_path / "oci-runtime"  # e.g. a wrapper script or crun: the exec fifo is runc's own layout
    alias.symlink_to(env.pods.runc.binary)
    pods = Pods(env.data_dir / "alias", str(alias), env.pods.conmon, env.cgroup_parent)
    out, err = env.logs()
    record = pods.create(PodSpec(pod_id=env.new_id(), args=("sleep", "60")), env.layers, str(out.path), str(err.path))
    try:
        state = subprocess.run(
            [str(alias), "--root", str(pods.runc.root), "state", record.pod_id], capture_output=True, text=True
        )
        assert json.loads(state.stdout)["status"] == "running"
    finally:
        pods.destroy(record.pod_id)
