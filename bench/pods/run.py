"""Pod benchmark: StartTask through the real plugin process against ``runc run -d`` of the same bundle by hand.

Through one plugin process (launched as Nomad does, SetConfig with a temp data_dir and a private cgroup
parent), with a busybox OCI layout (tests/imagebuild.py) that a warm-up task has already imported and unpacked:

  start        StartTask RPC round trip (client perf_counter), against the floor, measured in the same run and
               interleaved run by run: mkdir bundle/{rootfs,upper,work}, overlay mount of the *same* unpacked layer
               dirs, write the config.json the warm-up pod got (root path and cgroupsPath changed), `runc run -d`.
               Each is torn down untimed-for-the-ratio afterwards (DestroyTask / `runc delete -f` + umount + rm).
  monitor      conmon VmRSS and Pss per task (50 sleeping pods)
  stats CPU    plugin CPU time (utime+stime, /proc/PID/stat) over a window with the 50 pods: idle, with 50
               TaskStats streams at 1 s (the goal's number), with those plus the 50 WaitTask calls Nomad keeps
               open, and with the WaitTask calls alone
  plugin RSS   plugin VmRSS / Pss before any task and with 50 tasks (and 50 + 50 open streams)

Results are reported, never asserted: the exit status is non-zero only when something fails (an RPC, runc, or
something left behind: runc container, conmon, overlay mount, netns, cgroup dir).

    .venv/bin/python bench/pods/run.py [--runs N] [--tasks N] [--window S] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from google.protobuf.duration_pb2 import Duration  # noqa: E402

from bench.common import (  # noqa: E402
    BenchFailed,
    first_line,
    interrupt_on_sigterm,
    machine,
    summary,
    write_result,
)
from bench.podbench import (  # noqa: E402
    Bench,
    attempt,
    force_clean,
    leftovers,
    mounts_under,
    netns_names,
    remove_cgroup_parent,
    running_plugin,
)
from nomad_rkt_driver.protocol.gen import driver_pb2  # noqa: E402
from tests.imagebuild import busybox_image  # noqa: E402

RESULT: Final = REPO / "bench" / "results" / "pods.json"
GOAL_START_RATIO: Final = 1.3  # issue goal: StartTask of a stored image within 1.3x `runc run -d`
GOAL_STATS_CPU_PCT: Final = 3.0  # issue goal: 50 TaskStats streams at 1 s cost at most 3 % of one core
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


# -- helpers ------------------------------------------------------------------------------------


def proc_kib(pid: int, path: str, key: str) -> float | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/{path}") as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5), after "pid (comm)"


# -- phases -------------------------------------------------------------------------------------


def start_latency(bench: Bench, runs: int, failures: list[str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        "plugin_start_s": [],
        "bare_start_s": [],
        "bare2_start_s": [],
        "bare2_create_s": [],
        "bare2_runc_start_s": [],
        "plugin_destroy_s": [],
        "bare_delete_s": [],
    }

    def plugin_run() -> None:
        config = bench.task(command="/bin/sleep", args=["3600"])
        try:
            samples["plugin_start_s"].append(bench.start_task(config))
        finally:
            samples["plugin_destroy_s"].append(bench.destroy_task(config.id))

    def bare_run(i: int) -> None:
        elapsed, bundle = bench.bare_start(str(i))
        samples["bare_start_s"].append(elapsed)
        samples["bare_delete_s"].append(bench.bare_delete(str(i), bundle))

    def bare2_run(i: int) -> None:  # not the floor: shows what runc's two steps (as conmon needs) cost
        elapsed, bundle = bench.bare_start(f"{i}-2", two_step=True)
        samples["bare2_start_s"].append(elapsed)
        samples["bare2_create_s"].append(bench.step_times["create"])
        samples["bare2_runc_start_s"].append(bench.step_times["start"])
        bench.bare_delete(f"{i}-2", bundle)

    for i in range(runs):
        order: list[Callable[[], None]] = [plugin_run, functools.partial(bare_run, i), functools.partial(bare2_run, i)]
        for work in order if i % 2 == 0 else reversed(order):
            attempt(work, failures)
        print(f"start run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    return samples


class Streams:
    """Open server streams/calls consumed by daemon threads; counts messages, cancels on close."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.messages = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def consume(self, call: Any) -> None:
        self.calls.append(call)

        def pump() -> None:
            try:
                for _ in call:
                    with self._lock:
                        self.messages += 1
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.CANCELLED:
                    self.errors.append(f"{exc.code()} {exc.details()}")

        threading.Thread(target=pump, daemon=True).start()

    def close(self) -> None:
        for call in self.calls:
            call.cancel()


def cpu_window(pid: int, seconds: float) -> dict[str, float]:
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "pct_of_core": 100.0 * (cpu1 - cpu0) / (t1 - t0)}


def memory(pid: int) -> dict[str, float]:
    rss, pss = proc_kib(pid, "status", "VmRSS"), proc_kib(pid, "smaps_rollup", "Pss")
    return {"rss_mib": (rss or 0) / 1024, "pss_mib": (pss or 0) / 1024}


def many_tasks(bench: Bench, tasks: int, window_s: float, failures: list[str]) -> dict[str, Any]:
    pid = bench.plugin.proc.pid
    out: dict[str, Any] = {"tasks": tasks, "window_s": window_s, "plugin_memory_before": memory(pid)}
    ids: list[str] = []
    waits: list[Any] = []
    stats = Streams()
    try:
        for _ in range(tasks):
            config = bench.task(command="/bin/sleep", args=["3600"])
            bench.start_task(config)
            ids.append(config.id)
        print(f"{tasks} pods running", file=sys.stderr, flush=True)
        monitors: list[dict[str, float]] = []
        for task_id in ids:
            conmon_pid = int((bench.pod_dir(task_id) / "conmon.pid").read_text().strip())
            monitors.append(memory(conmon_pid))
        out["conmon_rss_mib"] = summary([m["rss_mib"] for m in monitors])
        out["conmon_pss_mib"] = summary([m["pss_mib"] for m in monitors])
        time.sleep(1.0)  # let start-up work settle
        out["plugin_memory_tasks"] = memory(pid)
        out["cpu_idle"] = cpu_window(pid, window_s)
        interval = Duration(seconds=1)
        for task_id in ids:
            stats.consume(
                bench.plugin.driver.TaskStats(
                    driver_pb2.TaskStatsRequest(task_id=task_id, collection_interval=interval)
                )
            )
        time.sleep(2.0)  # every stream has sent its first sample
        before = stats.messages
        out["cpu_stats"] = cpu_window(pid, 2 * window_s)
        out["stats_messages_per_s"] = (stats.messages - before) / out["cpu_stats"]["wall_s"]
        out["plugin_memory_streams"] = memory(pid)
        for task_id in ids:  # what Nomad adds: a WaitTask open for every task
            waits.append(bench.plugin.driver.WaitTask.future(driver_pb2.WaitTaskRequest(task_id=task_id)))
        time.sleep(1.0)
        out["cpu_stats_waits"] = cpu_window(pid, window_s)
        stats.close()  # what the 50 open WaitTask calls cost alone
        time.sleep(1.0)
        out["cpu_waits"] = cpu_window(pid, window_s)
        ended = [w for w in waits if w.done()]
        if stats.errors or ended:
            raise BenchFailed(f"stream errors: {stats.errors[:3]}; {len(ended)} WaitTask calls ended early")
    except (BenchFailed, grpc.RpcError, OSError, ValueError) as exc:
        failures.append(f"{len(ids)}-task phase: {exc}")
        print(f"FAILURE: {exc}", file=sys.stderr)
    finally:
        stats.close()
        for call in waits:
            call.cancel()
        for task_id in ids:
            attempt(functools.partial(bench.destroy_task, task_id), failures)
    return out


# -- the run ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="StartTask / runc run -d pairs (default 30)")
    parser.add_argument("--tasks", type=int, default=50, help="sleeping pods for the memory and stats phase")
    parser.add_argument("--window", type=float, default=10.0, help="CPU window (s); the stats window is twice this")
    parser.add_argument("--quick", action="store_true", help="3 runs, 10 tasks, 2 s windows: a CI smoke test")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="run bench/pods/timed_plugin.py (the plugin with timers around its steps) and print where the time goes",
    )
    parser.add_argument("--output", type=Path, default=RESULT, help=f"JSON result (default {RESULT.relative_to(REPO)})")
    opts = parser.parse_args()
    runs, tasks, window = (3, 10, 2.0) if opts.quick else (opts.runs, opts.tasks, opts.window)
    if os.geteuid() != 0:
        print("the pods benchmark needs root (runc, overlay mounts, cgroups)", file=sys.stderr)
        return 1
    interrupt_on_sigterm()  # clean up on SIGTERM too
    load_at_start = os.getloadavg()
    netns_before = netns_names()
    failures: list[str] = []
    result: dict[str, Any] = {"runs": runs, "loadavg_at_start": load_at_start}
    work = Path(tempfile.mkdtemp(prefix="rkt-bench-pods-"))
    try:
        image = f"oci:{busybox_image(work / 'layout', tag='v1').layout}:v1"
        data_dir = work / "data"
        timings = work / "timings.json" if opts.breakdown else None
        with running_plugin(data_dir, timings) as plugin:
            bench = Bench(plugin, work, data_dir, image)
            warm = bench.task(command="/bin/sleep", args=["3600"])
            result["warmup_start_s"] = bench.start_task(warm)  # imports and unpacks the image
            try:
                bench.learn_bundle(warm.id)
            finally:
                bench.destroy_task(warm.id)
            _, bundle = bench.bare_start("warmup")  # the floor's warm-up
            bench.bare_delete("warmup", bundle)
            result["start"] = start_latency(bench, runs, failures)
            start_times = json.loads(timings.read_text()) if timings is not None and timings.exists() else {}
            result["many"] = many_tasks(bench, tasks, window, failures)
            result["plugin_memory_after"] = memory(plugin.proc.pid)
        if timings is not None and timings.exists():
            final = json.loads(timings.read_text())
            later = {k: v for k, v in final.items() if k.startswith(("stats", "wait", "destroy"))}
            start = {k: v for k, v in start_times.items() if not k.startswith(("stats", "wait", "destroy"))}
            result["breakdown"] = breakdown({**start, **later})
    except (BenchFailed, grpc.RpcError, OSError, AssertionError) as exc:
        failures.append(f"set-up: {exc}")
        print(f"FAILURE: {exc}", file=sys.stderr)
    finally:
        remove_cgroup_parent()
        left = leftovers(work, netns_before)
        if left:
            failures.append(f"left behind: {left}")
            print(f"FAILURE: left behind {left}; cleaning up", file=sys.stderr)
            force_clean(work)
        if not mounts_under(work):
            shutil.rmtree(work, ignore_errors=True)
    result["machine"] = machine(runc=first_line("runc", "--version"), conmon=first_line("conmon", "--version"))
    result["failures"] = failures
    report(result)
    write_result(result, opts.output)
    return 1 if failures else 0


def breakdown(times: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    """Median wall and thread-CPU ms per call of each timed step (StartTask steps: warm-up and latency runs)."""
    starts = max(1, len(times.get("StartTask: RktDriver.start_task", [])))
    table = {}
    for label, calls in times.items():
        walls = [c[0] * 1000 for c in calls]
        cpus = [c[1] * 1000 for c in calls if c[1] == c[1]]  # NaN for coroutines
        table[label] = {
            "calls": len(calls),
            "per_start": len(calls) / starts,
            "wall_ms": statistics.median(walls),
            "wall_ms_p90": summary(walls)["p90"],
            "cpu_ms": statistics.median(cpus) if cpus else float("nan"),
        }
    return table


def print_breakdown(table: dict[str, dict[str, float]]) -> None:
    print(f"\nbreakdown (timed plugin), medians per call: {'calls':>6}{'wall ms':>9}{'p90':>8}{'cpu ms':>8}")
    for label, row in table.items():
        print(f"{label:54.54}{row['calls']:6d}{row['wall_ms']:9.2f}{row['wall_ms_p90']:8.2f}{row['cpu_ms']:8.2f}")


def report(result: dict[str, Any]) -> None:
    where = result["machine"]
    print(
        f"\n{result['runs']} runs, {where['nproc']} cores, {where['cpu']}, "
        f"load {result['loadavg_at_start'][0]:.1f} -> {where['loadavg_at_end'][0]:.1f}"
    )
    start = result.get("start")
    if start:
        stats = {k: summary(v) for k, v in start.items()}
        result["start_summary"] = stats
        print(f"{'(seconds)':26}{'median':>8}{'p90':>8}{'p95':>8}{'min':>8}")
        for key, label in (
            ("bare_start_s", "floor: mount+runc run -d"),
            ("bare2_start_s", "mount+runc create+start"),
            ("bare2_create_s", "  of which runc create"),
            ("bare2_runc_start_s", "  of which runc start"),
            ("plugin_start_s", "plugin: StartTask"),
            ("bare_delete_s", "floor: delete -f+umount"),
            ("plugin_destroy_s", "plugin: DestroyTask"),
        ):
            s = stats[key]
            if s:
                print(f"{label:26}" + "".join(f"{s[k]:8.3f}" for k in ("median", "p90", "p95", "min")))
        if stats["plugin_start_s"] and stats["bare_start_s"]:
            ratio = stats["plugin_start_s"]["median"] / stats["bare_start_s"]["median"]
            p95 = stats["plugin_start_s"]["p95"] / stats["bare_start_s"]["p95"]
            met = "met" if ratio <= GOAL_START_RATIO else "NOT met"
            result["start_ratio"] = {"median": ratio, "p95": p95, "goal": GOAL_START_RATIO, "met": ratio <= 1.3}
            print(f"StartTask / floor: {ratio:.2f}x median, {p95:.2f}x p95 (goal <= {GOAL_START_RATIO}x: {met})")
    many = result.get("many")
    if many and "cpu_stats" in many:
        print(f"\n{many['tasks']} tasks:")
        for key in ("conmon_rss_mib", "conmon_pss_mib"):
            s = many[key]
            name = key.replace("_mib", "")
            print(f"  {name} per task: median {s['median']:.2f} MiB (min {s['min']:.2f}, max {s['max']:.2f})")
        for key, label in (
            ("plugin_memory_before", "no tasks"),
            ("plugin_memory_tasks", f"{many['tasks']} tasks"),
            ("plugin_memory_streams", f"{many['tasks']} tasks + stats streams"),
        ):
            m = many[key]
            print(f"  plugin {label}: RSS {m['rss_mib']:.1f} MiB, PSS {m['pss_mib']:.1f} MiB")
        for key, label in (
            ("cpu_idle", "no RPCs"),
            ("cpu_stats", f"{many['tasks']} TaskStats @1s"),
            ("cpu_stats_waits", f"{many['tasks']} TaskStats @1s + {many['tasks']} WaitTask"),
            ("cpu_waits", f"{many['tasks']} WaitTask alone"),
        ):
            w = many[key]
            print(
                f"  plugin CPU, {label}: {w['pct_of_core']:.2f} % of a core ({w['cpu_s']:.2f} s in {w['wall_s']:.1f} s)"
            )
        print(f"  stats messages received: {many['stats_messages_per_s']:.1f}/s")
        pct = many["cpu_stats"]["pct_of_core"]
        met = pct <= GOAL_STATS_CPU_PCT
        result["stats_cpu_goal"] = {"pct_of_core": pct, "goal": GOAL_STATS_CPU_PCT, "met": met}
        print(f"  goal stats CPU <= {GOAL_STATS_CPU_PCT} % of a core: {'met' if met else 'NOT met'}")
    if "breakdown" in result:
        print_breakdown(result["breakdown"])
    if result["failures"]:
        print(f"\n{len(result['failures'])} failure(s):", *result["failures"], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
