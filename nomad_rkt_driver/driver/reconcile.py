"""Reconciling the data dir with the tasks: dangling pods and orphan networks (docker's dangling_containers).

A pod is *dangling* when no task of this plugin process claims it (StartTask or RecoverTask), no
other live process owns it (a running ``nomad-rkt-driver run``, or another plugin instance), it
is older than ``creation_grace`` and this plugin has been up at least that long, so Nomad has had
its chance to recover the task after an agent restart. Running, exited and lost pods alike: a
pod nobody claims is never waited for or destroyed by Nomad. A pod network is an *orphan* when
its state has no pod (a crash between network setup and pod creation, or between pod removal and
network teardown). Both are removed through the very teardown DestroyTask uses. A *removal
leftover* is a ``.deleting-*`` tree a crash left halfway through a pod's removal (runtime/aside.py);
it is deleted once older than ``creation_grace``, never while this process is deleting it.

The same judgement, minus what only a plugin knows (its claimed tasks), serves the operator's
``nomad-rkt-driver gc``: it keeps running pods of the Nomad agent unless told ``--force``. Only ``gc``
also judges the *group networks* the local runner makes (network/group.py): they are the runner's,
not the agent's, so the plugin's pass leaves them alone; ``gc`` tears down those whose runner
process (pid and start time) is gone, with the runner's own teardown.

The plugin's timer lives in reconciler.py; this module loads with its first pass.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nomad_rkt_driver.runtime import owners
from nomad_rkt_driver.runtime.owners import Owner

if TYPE_CHECKING:
    from nomad_rkt_driver.network.attach import PodNetworks
    from nomad_rkt_driver.network.group import GroupNetworks, GroupState
    from nomad_rkt_driver.runtime.pods import Pods


@dataclass(frozen=True)
class Found:
    """One pod on disk: its state (running, exited, gone, unknown), age and owner mark."""

    pod_id: str
    state: str
    age_s: float
    owner: Owner | None


@dataclass(frozen=True)
class Decision:
    what: str  # "pod", "network", "group network" or "leftover"
    pod_id: str  # the pod id; a group network's name; a leftover's path
    remove: bool
    reason: str


def _age(now: float, *paths: Path) -> float | None:
    times = []
    for path in paths:
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return now - max(times) if times else None


def survey(pods: Pods, now: float | None = None) -> list[Found]:
    """Every pod under the pods' state dir (records, bare dirs, runc containers) with state, age and owner."""
    from nomad_rkt_driver.errors import DriverError

    now = time.time() if now is None else now
    found = []
    for pod_id in pods.list():
        pod_dir = pods.pod_dir(pod_id)
        try:
            status = pods.status(pod_id)
            state, age = status.state, now - status.started_at
        except DriverError:  # no or a damaged record: a crash during create, or a bare runc container
            state, age = "unknown", _age(now, pod_dir, pods.runc.root / pod_id) or 0.0
        found.append(Found(pod_id, state, age, owners.read(pod_dir)))
    return found


def orphan_networks(networks: PodNetworks, pod_ids: Iterable[str], now: float | None = None) -> list[tuple[str, float]]:
    """Pod networks whose pod is not among ``pod_ids``, with the age of their state."""
    now = time.time() if now is None else now
    present = set(pod_ids)
    orphans = []
    for pod_id in networks.pods():
        if pod_id not in present:
            directory = networks.pod_dir(pod_id)
            orphans.append((pod_id, _age(now, directory, directory / "state.json") or 0.0))
    return orphans


def judge_for_plugin(found: Found, me: Owner, claimed: set[str], grace_s: float) -> Decision:
    """The plugin's verdict: remove what no task of it claims and no other live process owns."""
    owner = found.owner
    if found.pod_id in claimed:
        return Decision("pod", found.pod_id, False, "a task of this plugin claims it")
    if owner is not None and not owner.same_process(me) and owner.alive():
        return Decision("pod", found.pod_id, False, f"it belongs to {owner.describe()}, which is running")
    if found.age_s < grace_s:
        return Decision("pod", found.pod_id, False, "younger than creation_grace")
    gone = f", {owner.describe()} is gone" if owner is not None and not owner.same_process(me) else ""
    return Decision("pod", found.pod_id, True, f"{found.state} and no task claims it{gone}")


def judge_for_operator(found: Found, grace_s: float, force: bool) -> Decision:
    """``gc`` cannot see which tasks an agent will recover: it keeps running agent pods unless forced."""
    owner = found.owner
    if owner is not None and owner.alive():
        return Decision("pod", found.pod_id, False, f"it belongs to {owner.describe()}, which is running")
    if found.age_s < grace_s:
        return Decision("pod", found.pod_id, False, "younger than creation_grace")
    if owner is not None and owner.kind == "runner":
        return Decision("pod", found.pod_id, True, f"{found.state}, {owner.describe()} is gone")
    if found.state != "running":
        return Decision("pod", found.pod_id, True, f"{found.state} and no running process claims it")
    if force:
        return Decision("pod", found.pod_id, True, "running, the Nomad agent's pod (--force)")
    return Decision(
        "pod",
        found.pod_id,
        False,
        "running, the Nomad agent's pod: its agent may still recover it (--force removes it)",
    )


def judge_group_network(state: GroupState, grace_s: float) -> Decision:
    """``gc``'s verdict on a runner's group network: kept while its runner runs (pid and start time)."""
    what = "group network"
    if state.pid <= 0:  # an unreadable state file (its network is still torn down as far as it can be)
        if state.age_s < grace_s:
            return Decision(what, state.name, False, "its state names no owner, younger than creation_grace")
        return Decision(what, state.name, True, "its state names no owner")
    owner = Owner("runner", state.pid, state.started)
    if owner.alive():
        return Decision(what, state.name, False, f"it belongs to {owner.describe()}, which is running")
    return Decision(what, state.name, True, f"{owner.describe()} is gone")


def judge_leftover(path: Path, age_s: float, mounts: list[str], grace_s: float) -> Decision:
    """A ``.deleting-*`` tree: deleted once older than the grace, never across a mount."""
    if mounts:
        return Decision("leftover", str(path), False, f"still has mounts {mounts}: unmount them first")
    if age_s < grace_s:
        return Decision("leftover", str(path), False, "younger than creation_grace (a removal may be under way)")
    return Decision("leftover", str(path), True, "an unfinished pod removal (a crash)")


def plan(
    pods: Pods,
    networks: PodNetworks,
    judge: Callable[[Found], Decision],
    grace_s: float,
    skip_networks: set[str] | None = None,
    groups: GroupNetworks | None = None,
) -> list[Decision]:
    """Decisions for every pod, orphan network and removal leftover, and with ``groups`` (``gc`` only)
    every group network of the runner (blocking: reads the state dirs)."""
    from nomad_rkt_driver.runtime import aside
    from nomad_rkt_driver.runtime.bundle import mounts_under

    found = survey(pods)
    decisions = [judge(f) for f in found]
    for pod_id, age in orphan_networks(networks, (f.pod_id for f in found)):
        if skip_networks and pod_id in skip_networks:
            decisions.append(Decision("network", pod_id, False, "a task of this plugin is starting with it"))
        elif age < grace_s:
            decisions.append(Decision("network", pod_id, False, "younger than creation_grace"))
        else:
            decisions.append(Decision("network", pod_id, True, "its pod does not exist"))
    if groups is not None:
        decisions += [judge_group_network(state, grace_s) for state in groups.states()]
    for path, age in aside.leftovers([pods.state_dir / "pods"]):
        decisions.append(judge_leftover(path, age, mounts_under(path), grace_s))
    return decisions


def remove(pods: Pods, networks: PodNetworks, decision: Decision, groups: GroupNetworks | None = None) -> None:
    """Carry out a removal: a pod with DestroyTask's teardown (pod first, then its network), a group
    network with the runner's teardown, a leftover with :func:`aside.collect`."""
    from nomad_rkt_driver.driver.tasks import remove_pod
    from nomad_rkt_driver.runtime import aside

    if decision.what == "pod":
        remove_pod(pods, networks, decision.pod_id)
    elif decision.what == "network":
        networks.teardown(decision.pod_id)
    elif decision.what == "group network":
        if groups is None:
            raise ValueError("a group network is removed only with the runner's GroupNetworks")
        groups.destroy(decision.pod_id)
    elif decision.what == "leftover":
        aside.collect(Path(decision.pod_id))
    else:
        raise ValueError(f"unknown kind of removal {decision.what!r}")
