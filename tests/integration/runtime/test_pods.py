"""Real pods on runc + conmon: exit codes, signals, OOM, stop, logs, destroy, rollback, stats.

Every test runs against a fresh data dir and cgroup parent; the ``env`` fixture destroys all
pods afterwards and asserts that no mount, container, conmon, cgroup or state dir is left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, NotFound
from nomad_rkt_driver.runtime import bundle
from nomad_rkt_driver.runtime.monitor import CreateFailed
from nomad_rkt_driver.runtime.pods import PodLost
from nomad_rkt_driver.runtime.records import CorruptRecord, PodRecord
from nomad_rkt_driver.runtime.spec import Bind, PodSpec, Resources
from nomad_rkt_driver.types import ExitResult

from .conftest import Env, leftovers

MIB = 1024 * 1024
MONITOR_RSS_GOAL_BYTES = 3 * MIB


def start(env: Env, script: str, name: str = "task", **fields: object) -> tuple[PodRecord, tuple[str, str]]:
    out, err = env.logs(name)
    spec = PodSpec(pod_id=env.new_id(), args=("sh", "-c", script), **fields)  # type: ignore[arg-type]
    record = env.pods.create(spec, env.layers, str(out.path), str(err.path))
    return record, (str(out.path), str(err.path))


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_is_reported(env: Env, code: int) -> None:
    record, _ = start(env, f"exit {code}")
    assert env.pods.wait(record.pod_id, 10) == ExitResult(code, 0, False)
    assert env.pods.status(record.pod_id).state == "exited"


def test_stdout_and_stderr_are_separate_and_in_order(env: Env) -> None:
    out, err = env.logs("logs")
    script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; cat /etc/hostname /srv/hello.txt"
    spec = PodSpec(pod_id=env.new_id(), args=("sh", "-c", script))
    record = env.pods.create(spec, env.layers, str(out.path), str(err.path))
    assert env.pods.wait(record.pod_id, 10) == ExitResult(0)
    # the upper layer's /etc/hostname wins over the base layer's
    assert out.text() == "out1\nout2\nout3\nupper\nhello from the upper layer\n"
    assert err.text() == "err1\nerr2\nerr3\n"


def test_death_by_signal_is_128_plus_signo(env: Env) -> None:
    record, _ = start(env, "sleep 60")
    os.kill(record.container_pid, signal.SIGKILL)
    assert env.pods.wait(record.pod_id, 10) == ExitResult(137, 9, False)


def test_oom_kill_is_detected(env: Env) -> None:
    script = "x=0123456789abcdef; while :; do x=$x$x; done"
    record, _ = start(env, script, resources=Resources(memory_limit_bytes=16 * MIB))
    result = env.pods.wait(record.pod_id, 30)
    assert result is not None and result.oom_killed and result.exit_code == 137 and result.signal == 9
    assert Path(record.persist_dir, "oom").exists()  # conmon's own OOM note, kept in the pod's dir


def test_stop_with_a_custom_signal(env: Env) -> None:
    record, _ = start(env, "trap 'echo bye; exit 4' USR1; echo ready; while :; do sleep 0.05; done")
    began = time.monotonic()
    assert env.pods.stop(record.pod_id, signal.SIGUSR1, timeout_s=10) == ExitResult(4)
    assert time.monotonic() - began < 5


def test_stop_escalates_to_sigkill_after_the_timeout(env: Env) -> None:
    record, _ = start(env, "trap '' TERM; while :; do sleep 0.05; done")
    time.sleep(0.2)  # let the shell install its trap
    began = time.monotonic()
    assert env.pods.stop(record.pod_id, signal.SIGTERM, timeout_s=0.5) == ExitResult(137, 9, False)
    assert 0.5 <= time.monotonic() - began < 5


def test_signal_reaches_the_task_and_errors_are_clear(env: Env) -> None:
    record, _ = start(env, "trap 'exit 9' HUP; while :; do sleep 0.05; done")
    time.sleep(0.2)
    env.pods.signal(record.pod_id, signal.SIGHUP)
    assert env.pods.wait(record.pod_id, 10) == ExitResult(9)
    with pytest.raises(FailedPrecondition, match="not running"):
        env.pods.signal(record.pod_id, signal.SIGHUP)
    with pytest.raises(NotFound):
        env.pods.signal("no-such-pod", signal.SIGHUP)
    assert env.pods.stop("no-such-pod", signal.SIGTERM, 1) is None
    assert env.pods.stop(record.pod_id, signal.SIGTERM, 1) == ExitResult(9)


def test_many_threads_wait_for_the_same_pod(env: Env) -> None:
    record, _ = start(env, "sleep 0.3; exit 6")
    results: list[ExitResult | None] = []
    threads = [threading.Thread(target=lambda: results.append(env.pods.wait(record.pod_id, 10))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [ExitResult(6)] * 16
    assert env.pods.wait(record.pod_id, 0) == ExitResult(6)


def test_wait_times_out_with_none(env: Env) -> None:
    record, _ = start(env, "sleep 60")
    assert env.pods.wait(record.pod_id, 0.1) is None
    with pytest.raises(NotFound):
        env.pods.wait("no-such-pod", 1)


def test_destroy_running_exited_unknown_and_twice(env: Env) -> None:
    running, _ = start(env, "sleep 60", name="a")
    exited, _ = start(env, "exit 0", name="b")
    assert env.pods.wait(exited.pod_id, 10) == ExitResult(0)
    for pod_id in (running.pod_id, exited.pod_id, "never-existed", running.pod_id):
        env.pods.destroy(pod_id)
    assert env.pods.list() == []
    assert leftovers(env) == []
    with pytest.raises(NotFound):
        env.pods.status(running.pod_id)


def test_missing_command_rolls_everything_back(env: Env) -> None:
    out, err = env.logs()
    spec = PodSpec(pod_id=env.new_id(), args=("/no/such/program",))
    with pytest.raises(CreateFailed, match="no such file"):
        env.pods.create(spec, env.layers, str(out.path), str(err.path))
    assert env.pods.list() == []
    assert leftovers(env) == []


def test_runc_create_failure_rolls_everything_back(env: Env) -> None:
    out, err = env.logs()
    spec = PodSpec(pod_id=env.new_id(), args=("true",), resources=Resources(cpuset_cpus="4095"))
    with pytest.raises(CreateFailed, match="cpuset"):
        env.pods.create(spec, env.layers, str(out.path), str(err.path))
    assert leftovers(env) == []


def test_bad_input_is_refused_before_anything_is_created(env: Env) -> None:
    out, err = env.logs()
    bad_mount = PodSpec(pod_id=env.new_id(), args=("true",), binds=(Bind("/no/such/dir", "/data"),))
    with pytest.raises(InvalidArgument, match="/no/such/dir"):
        env.pods.create(bad_mount, env.layers, str(out.path), str(err.path))
    with pytest.raises(InvalidArgument, match="not safe"):
        env.pods.create(PodSpec(pod_id="../x", args=("true",)), env.layers, str(out.path), str(err.path))
    assert leftovers(env) == []


def test_duplicate_id_is_refused(env: Env) -> None:
    record, (out, err) = start(env, "sleep 60")
    with pytest.raises(FailedPrecondition, match="already exists"):
        env.pods.create(PodSpec(pod_id=record.pod_id, args=("true",)), env.layers, out, err)
    assert env.pods.status(record.pod_id).state == "running"


def test_spec_is_applied_user_binds_readonly_rootfs(env: Env, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host\n")
    out, err = env.logs()
    script = (
        "id -u; id -g; hostname; cat /data/in.txt; touch /data/x 2>/dev/null || echo data-ro; touch /y || echo root-ro"
    )
    spec = PodSpec(
        pod_id=env.new_id(),
        args=("sh", "-c", script),
        uid=65534,
        gid=65534,
        hostname="pod-host",
        readonly_rootfs=True,
        binds=(Bind(str(shared), "/data", readonly=True),),
    )
    record = env.pods.create(spec, env.layers, str(out.path), str(err.path))
    assert env.pods.wait(record.pod_id, 10) == ExitResult(0)
    assert out.text() == "65534\n65534\npod-host\nfrom the host\ndata-ro\nroot-ro\n"


def test_seccomp_and_capabilities_by_default_and_insecure(env: Env) -> None:
    script = "grep CapEff /proc/self/status; grep Seccomp: /proc/self/status"
    secure, _ = start(env, script, name="secure")
    insecure, _ = start(env, script, name="insecure", insecure_options=("capabilities", "seccomp"))
    assert env.pods.wait(secure.pod_id, 10) == ExitResult(0)
    assert env.pods.wait(insecure.pod_id, 10) == ExitResult(0)
    secure_text, insecure_text = (f.text() for f in env.fifos if f.path.name.endswith("stdout.fifo"))
    assert "Seccomp:\t2" in secure_text and "CapEff:\t00000000a80425fb" in secure_text
    assert "Seccomp:\t0" in insecure_text and "a80425fb" not in insecure_text


def test_no_overlay_copies_the_layers(env: Env) -> None:
    out, err = env.logs()
    spec = PodSpec(pod_id=env.new_id(), args=("cat", "/etc/hostname"))
    record = env.pods.create(spec, env.layers, str(out.path), str(err.path), no_overlay=True)
    assert env.pods.wait(record.pod_id, 10) == ExitResult(0)
    assert out.text() == "upper\n"
    assert bundle.mounts_under(env.data_dir) == []


def test_stats_from_the_live_cgroup(env: Env) -> None:
    record, _ = start(env, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 60")
    time.sleep(0.5)
    stats = env.pods.stats(record.pod_id)
    assert stats.cpu.total_ns > 0 and stats.cpu.user_ns + stats.cpu.system_ns > 0
    assert stats.memory.usage > 0 and stats.memory.rss > 0 and "RSS" in stats.memory.measured
    assert record.container_pid in stats.pids


def test_monitor_rss_is_small(env: Env) -> None:
    record, _ = start(env, "sleep 60")
    rss = env.pods.monitor_rss_bytes(record.pod_id)
    print(f"conmon RSS: {rss / MIB:.2f} MiB")
    assert 0 < rss <= MONITOR_RSS_GOAL_BYTES


def test_corrupt_record_is_a_clear_error_and_destroy_still_cleans(env: Env) -> None:
    record, _ = start(env, "sleep 60")
    (env.pods.pod_dir(record.pod_id) / "pod.json").write_text("{not json")
    with pytest.raises(CorruptRecord, match=r"pod\.json is corrupt"):
        env.pods.load(record.pod_id)
    env.pods.destroy(record.pod_id)
    assert leftovers(env) == []


def test_a_killed_monitor_makes_the_pod_lost_not_hung(env: Env) -> None:
    record, _ = start(env, "sleep 60")
    os.kill(record.conmon_pid, signal.SIGKILL)
    time.sleep(0.1)
    assert env.pods.status(record.pod_id).state == "running"  # the container itself still runs
    os.kill(record.container_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while env.pods.status(record.pod_id).state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.pods.status(record.pod_id).state == "gone"
    with pytest.raises(PodLost, match="monitor is gone"):
        env.pods.wait(record.pod_id, 1)
    assert env.pods.stop(record.pod_id, signal.SIGTERM, 0.1) is None
