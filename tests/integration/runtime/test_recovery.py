"""Pods outlive the process that created them; a fresh process finds their true results.

A child Python process creates the pod and is then SIGKILLed (as Nomad may kill the plugin);
the test process, which never created the pod, loads and waits for it like RecoverTask would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from nomad_rkt_driver.runtime.pods import Pods
from nomad_rkt_driver.types import ExitResult

from .conftest import Env

REPO: Final = Path(__file__).resolve().parents[3]
CREATOR: Final = """
import json, os, signal, sys
from pathlib import Path
from nomad_rkt_driver.runtime.pods import Pods
from nomad_rkt_driver.runtime.spec import PodSpec
a = json.loads(sys.argv[1])
pods = Pods(Path(a["state"]), a["runc"], a["conmon"], cgroup_parent=a["parent"])
for pod_id, script, out, err in a["pods"]:
    pods.create(PodSpec(pod_id=pod_id, args=("sh", "-c", script)), [Path(p) for p in a["layers"]], out, err)
print("created", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def create_in_doomed_process(env: Env, pods: list[tuple[str, str]]) -> None:
    """Create ``pods`` (id, script) in a child process that then kills itself with SIGKILL.

    Each pod gets its own FIFO pair, as each Nomad task has its own logmon.
    """
    specs = []
    for pod_id, script in pods:
        out, err = env.logs(pod_id)
        specs.append((pod_id, script, str(out.path), str(err.path)))
    args = {
        "state": str(env.pods.state_dir),
        "runc": env.pods.runc.binary,
        "conmon": env.pods.conmon,
        "parent": env.cgroup_parent,
        "layers": [str(p) for p in env.layers],
        "pods": specs,
    }
    done = subprocess.run(
        [sys.executable, "-c", CREATOR, json.dumps(args)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "created\n"


def test_pods_survive_their_creator_and_report_true_results(env: Env) -> None:
    early, late, running = env.new_id("early"), env.new_id("late"), env.new_id("running")
    create_in_doomed_process(env, [(early, "exit 7"), (late, "sleep 1; exit 5"), (running, "sleep 60")])
    time.sleep(0.3)  # "early" exits while nobody watches
    fresh = Pods(env.pods.state_dir, env.pods.runc.binary, env.pods.conmon, cgroup_parent=env.cgroup_parent)
    assert sorted(fresh.list()) == sorted([early, late, running])
    assert fresh.status(early).state == "exited"
    assert fresh.wait(early, 10) == ExitResult(7)
    assert fresh.status(late).state == "running"
    assert fresh.wait(late, 10) == ExitResult(5)
    assert fresh.status(running).state == "running"
    assert fresh.stop(running, signal.SIGTERM, 0.2) == ExitResult(137, 9)


def test_twenty_pods_survive_and_are_recovered(env: Env) -> None:
    ids = [env.new_id(f"p{i}") for i in range(20)]
    began = time.monotonic()
    create_in_doomed_process(env, [(pod_id, f"sleep 0.5; exit {i}") for i, pod_id in enumerate(ids)])
    print(f"20 pods created in {time.monotonic() - began:.2f}s (including the child's start-up)")
    fresh = Pods(env.pods.state_dir, env.pods.runc.binary, env.pods.conmon, cgroup_parent=env.cgroup_parent)
    results = [fresh.wait(pod_id, 20) for pod_id in ids]
    assert results == [ExitResult(i) for i in range(20)]
