"""The plugin with perf_counter / thread CPU timers around the steps of StartTask and of a TaskStats sample.

Used by ``bench/pods/run.py --breakdown`` in place of the plugin executable (the driver's code is unchanged: the
timers are wrappers set on its modules before the plugin starts). Every call of a wrapped function adds its wall
time and its thread's CPU time (CLOCK_THREAD_CPUTIME_ID: user + kernel of the calling thread) to a table that is
written as JSON to ``$RKT_BENCH_TIMINGS`` after each StartTask and every 100 stats samples. Nested steps are
listed with their parents, so columns do not add up across levels. The wrappers cost ~2 µs per call.

    RKT_BENCH_TIMINGS=out.json python bench/pods/timed_plugin.py   (with Nomad's handshake environment)
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from nomad_rkt_driver import procs
from nomad_rkt_driver.cli.main import main as plugin_main
from nomad_rkt_driver.config import decode
from nomad_rkt_driver.driver import driver, imaging, podspec, sampler, stats, tasks
from nomad_rkt_driver.images import store
from nomad_rkt_driver.protocol import convert
from nomad_rkt_driver.runtime import bundle, cgroupmove, cgroups, monitor, pods, runc

TIMES: dict[str, list[tuple[float, float]]] = defaultdict(list)
_LOCK = threading.Lock()
_OUT = os.environ.get("RKT_BENCH_TIMINGS", "")


def dump() -> None:
    if _OUT:
        with _LOCK:  # one writer at a time (dumps come from worker threads and the event loop)
            tmp = f"{_OUT}.tmp"
            with open(tmp, "w") as f:
                json.dump(TIMES, f)
            os.replace(tmp, _OUT)


def _record(label: str, wall: float, cpu: float) -> None:
    with _LOCK:
        TIMES[label].append((wall, cpu))


def timed(owner: Any, attr: str, label: str, *, dump_after: int = 0) -> None:
    """Replace ``owner.attr`` with a timing wrapper (sync, coroutine or async-generator function)."""
    fn: Callable[..., Any] = getattr(owner, attr)
    if inspect.isasyncgenfunction(fn):
        raise TypeError(f"{label}: async generators are timed per item through their callees")
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                _record(label, time.perf_counter() - began, float("nan"))  # CPU of a coroutine spans threads
                if dump_after:
                    dump()

        setattr(owner, attr, async_wrapper)
        return

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(label, time.perf_counter() - began, time.thread_time() - cpu)
            if dump_after and len(TIMES[label]) % dump_after == 0:
                dump()

    setattr(owner, attr, wrapper)


def install() -> None:
    # StartTask, outermost first
    timed(driver.RktDriver, "start_task", "StartTask: RktDriver.start_task", dump_after=1)
    timed(decode, "decode_msgpack", "  decode task config (msgpack)")
    timed(driver.RktDriver, "fingerprint", "  fingerprint probe (every StartTask)")
    timed(tasks.TaskManager, "start", "  TaskManager.start")
    timed(imaging.Images, "prepare", "    Images.prepare")
    timed(imaging, "import_image", "      import_image (oci: layout, re-read + record)")
    timed(store.Store, "save_image", "        Store.save_image (record write)")
    timed(imaging, "image_defaults", "      image_defaults (config parse)")
    timed(store.Store, "unpacked_layer", "      Store.unpacked_layer (x layers)")
    timed(podspec, "build", "    podspec.build")
    timed(pods.Pods, "create", "    Pods.create")
    timed(pods, "build_config", "      build_config")
    timed(pods, "host_limits", "      host_limits")
    timed(pods, "create_bundle", "      create_bundle")
    timed(bundle, "mount_overlay", "        mount_overlay")
    timed(bundle, "write_config", "        write_config")
    timed(pods, "spawn_monitor", "      spawn_monitor (conmon, held at its start pipe)")
    timed(monitor, "open_log_fd", "        open_log_fd (x2)")
    timed(cgroupmove, "move", "      cgroupmove.move (conmon out of the plugin's cgroup)")
    timed(monitor.Monitor, "detached", "      Monitor.detached (conmon parent exits)")
    timed(monitor.Monitor, "created", "      Monitor.created (wait for runc create)")
    timed(pods.Pods, "_record", "      Pods._record (pidfiles, /proc)")
    timed(pods, "write_atomic", "      write_atomic pod.json")
    timed(runc.Runc, "start", "      runc start (exec.fifo)")
    # one TaskStats sample
    timed(sampler, "read_pod", "stats: sampler.read_pod (worker thread)", dump_after=100)
    timed(cgroups.CgroupReader, "sample", "stats:   CgroupReader.sample (kept fds)")
    timed(procs, "usage", "stats:   procs.usage (/proc/PID/stat, per pid)")
    timed(stats.TaskUsage, "next", "stats: TaskUsage.next (rates, per pid, event loop)")
    timed(convert, "stats_to_proto", "stats: convert.stats_to_proto (event loop)", dump_after=100)
    timed(pods.Pods, "status", "wait: Pods.status (exit watcher, destroy)", dump_after=1000)
    timed(driver.RktDriver, "destroy_task", "destroy: RktDriver.destroy_task", dump_after=1)


if __name__ == "__main__":
    install()
    plugin_main()
