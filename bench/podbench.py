"""The plugin-and-runc fixtures the pods and network benchmarks share.

One plugin process launched as Nomad does (optionally bench/pods/timed_plugin.py instead), configured with a temp
data_dir and a private cgroup parent; `Bench`, which starts tasks through it and runs the by-hand floor
(overlay mount of the same layers, the warm-up pod's config.json, `runc run -d`); and what the benchmarks must not
leave behind, with the safety net that removes it. Import after putting the repository on sys.path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import msgpack

from bench.common import BenchFailed
from nomad_rkt_driver.config.fields import settings
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2
from nomad_rkt_driver.runtime.records import pod_id_for
from tests.protocol.plugin import Plugin, launch, nomad_env

CGROUP_PARENT: Final = f"/nomad-rkt-bench-{os.getpid()}"
RPC_TIMEOUT_S: Final = 120.0
TIMED_PLUGIN: Final = Path(__file__).resolve().parent / "pods" / "timed_plugin.py"
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def encode(cls: type, **values: Any) -> bytes:
    body: dict[str, Any] = {s.name: None for s in settings(cls)}
    body.update(values)
    packed: bytes = msgpack.packb(body)
    return packed


def attempt(work: Callable[[], object], failures: list[str], also: tuple[type[Exception], ...] = ()) -> None:
    """Run one measured step; a failure (BenchFailed, an RPC error, OSError or one of ``also``) is recorded."""
    caught: tuple[type[Exception], ...] = (BenchFailed, grpc.RpcError, OSError, *also)
    try:
        work()
    except caught as exc:
        text = f"{exc.code()} {exc.details()}" if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call) else exc
        failures.append(str(text))
        print(f"FAILURE: {text}", file=sys.stderr)


def netns_names() -> set[str]:
    with contextlib.suppress(FileNotFoundError):
        return {p.name for p in Path("/run/netns").iterdir()}
    return set()


def mounts_under(prefix: Path) -> list[str]:
    root = os.path.realpath(prefix)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]


def mount_overlay(lower: list[str], upper: Path, work: Path, target: Path) -> None:
    data = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}".encode()
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, data) != 0:
        raise BenchFailed(f"overlay mount at {target}: {os.strerror(ctypes.get_errno())}")


def umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), 0) != 0:
        err = ctypes.get_errno()
        if _libc.umount2(str(target).encode(), 2) != 0:  # MNT_DETACH
            raise BenchFailed(f"umount {target}: {os.strerror(err)}")


# -- the two subjects ---------------------------------------------------------------------------


@dataclass
class Bench:
    plugin: Plugin
    work: Path
    data_dir: Path
    image: str
    alloc_dir: Path = field(init=False)
    bare_root: Path = field(init=False)
    bare_config: dict[str, Any] = field(default_factory=dict)
    lower_dirs: list[str] = field(default_factory=list)
    bare_files: dict[str, bytes] = field(default_factory=dict)
    step_times: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.alloc_dir = self.make_alloc()
        self.bare_root = self.work / "bare-runc"
        self.bare_root.mkdir()

    def make_alloc(self) -> Path:
        alloc_dir = self.work / f"alloc-{secrets.token_hex(4)}"
        for sub in ("alloc/logs", "alloc/data", "alloc/tmp", "task/local", "task/secrets", "task/tmp"):
            (alloc_dir / sub).mkdir(parents=True)
        return alloc_dir

    def task(self, **cfg: Any) -> driver_pb2.TaskConfig:
        alloc_id = self.alloc_dir.name.removeprefix("alloc-")
        values = {"image": self.image, "insecure_options": ["image"], "net": ["none"], **cfg}
        return driver_pb2.TaskConfig(
            id=f"{alloc_id}/task/{secrets.token_hex(4)}",
            name="task",
            alloc_id=alloc_id,
            msgpack_driver_config=encode(TaskConfig, **values),
            env={"NOMAD_TASK_NAME": "task"},
            alloc_dir=str(self.alloc_dir),
            stdout_path="/dev/null",
            stderr_path="/dev/null",
            resources=driver_pb2.Resources(
                linux_resources=driver_pb2.LinuxResources(memory_limit_bytes=64 << 20, cpu_shares=100)
            ),
        )

    def pod_dir(self, task_id: str) -> Path:
        return self.data_dir / "pods" / "pods" / pod_id_for(task_id)

    def start_task(self, config: driver_pb2.TaskConfig) -> float:
        began = time.perf_counter()
        self.plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=config), timeout=RPC_TIMEOUT_S)
        return time.perf_counter() - began

    def destroy_task(self, task_id: str) -> float:
        began = time.perf_counter()
        self.plugin.driver.DestroyTask(
            driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=RPC_TIMEOUT_S
        )
        return time.perf_counter() - began

    def learn_bundle(self, task_id: str) -> None:
        """The floor reuses the warm-up pod's config.json and its overlay lower dirs."""
        bundle = self.pod_dir(task_id) / "bundle"
        self.bare_config = json.loads((bundle / "config.json").read_text())
        # Per-pod files the driver bind-mounts (resolv.conf, hosts, ...) live in its data dir and go with the
        # pod: the floor writes its own copy of each into its bundle on every run.
        for mount in self.bare_config.get("mounts", []):
            source = Path(mount.get("source", ""))
            if source.is_file() and source.is_relative_to(self.data_dir):
                self.bare_files[source.name] = source.read_bytes()
                mount["source"] = f"@{source.name}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4] == str(bundle / "rootfs"):
                options = line.split(" - ", 1)[1].split()[2]
                lower = next(o for o in options.split(",") if o.startswith("lowerdir="))
                self.lower_dirs = lower.removeprefix("lowerdir=").split(":")
        if not self.lower_dirs:
            raise BenchFailed(f"no overlay mount found for the warm-up pod's bundle {bundle}")

    def bare_start(self, name: str, two_step: bool = False) -> tuple[float, Path]:
        """The floor: bundle dirs, overlay mount, config.json, `runc run -d` (or `runc create` + `runc start`)."""
        bundle = self.work / "bare" / name
        began = time.perf_counter()
        rootfs = bundle / "rootfs"
        for sub in (rootfs, bundle / "upper", bundle / "work"):
            sub.mkdir(parents=True)
        mount_overlay(self.lower_dirs, bundle / "upper", bundle / "work", rootfs)
        config = {**self.bare_config, "root": {**self.bare_config["root"], "path": str(rootfs)}}
        for file_name, content in self.bare_files.items():
            (bundle / file_name).write_bytes(content)
        config["mounts"] = [
            {**m, "source": str(bundle / m["source"][1:])} if m.get("source", "").startswith("@") else m
            for m in config["mounts"]
        ]
        config["linux"] = {**config["linux"], "cgroupsPath": f"{CGROUP_PARENT}/bare-{name}"}
        (bundle / "config.json").write_text(json.dumps(config))
        # The container inherits runc's stdio, so nothing may be a pipe we wait on: errors go to a file.
        runc = ["runc", "--root", str(self.bare_root)]
        steps = (
            [["create", "--bundle", str(bundle)], ["start"]] if two_step else [["run", "-d", "--bundle", str(bundle)]]
        )
        with open(self.work / "bare-runc.log", "w+b") as errors:
            for step in steps:
                step_began = time.perf_counter()
                done = subprocess.run(
                    [*runc, *step, f"bare-{name}"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    check=False,
                )
                if done.returncode != 0:
                    errors.seek(0)
                    self.bare_delete(name, bundle)
                    raise BenchFailed(f"runc {step[0]}: {errors.read().decode(errors='replace').strip()}")
                self.step_times[step[0]] = time.perf_counter() - step_began
            elapsed = time.perf_counter() - began
        return elapsed, bundle

    def bare_delete(self, name: str, bundle: Path) -> float:
        began = time.perf_counter()
        subprocess.run(
            ["runc", "--root", str(self.bare_root), "delete", "-f", f"bare-{name}"], capture_output=True, check=False
        )
        if mounts_under(bundle):
            umount(bundle / "rootfs")
        shutil.rmtree(bundle)
        return time.perf_counter() - began


# -- set-up, clean-up ---------------------------------------------------------------------------


def set_config(plugin: Plugin, data_dir: Path, **config: Any) -> None:
    """SetConfig as the Nomad agent sends it: our data_dir and cgroup parent, plus ``config`` (plugin.hcl names)."""
    cores = [base_pb2.ClientTopologyCore(core_id=i, base_speed=2000) for i in range(os.cpu_count() or 1)]
    values = {"data_dir": str(data_dir), "cgroup_parent": CGROUP_PARENT, **config}
    plugin.base.SetConfig(
        base_pb2.SetConfigRequest(
            msgpack_config=encode(PluginConfig, **values),
            plugin_api_version="v0.1.0",
            nomad_config=base_pb2.NomadConfig(
                driver=base_pb2.NomadDriverConfig(Topology=base_pb2.ClientTopology(cores=cores))
            ),
        )
    )


@contextlib.contextmanager
def running_plugin(data_dir: Path, timings: Path | None = None, **config: Any) -> Iterator[Plugin]:
    """The plugin process, configured; with ``timings``, bench/pods/timed_plugin.py writing its step times there."""
    if timings is None:
        plugin = launch(nomad_env(NOMAD_RKT_LOG_LEVEL="info"))
    else:  # the same plugin with timers around its steps
        env = nomad_env(NOMAD_RKT_LOG_LEVEL="info", RKT_BENCH_TIMINGS=str(timings))
        plugin = launch(env, [sys.executable, str(TIMED_PLUGIN)])
    try:
        set_config(plugin, data_dir, **config)
        yield plugin
    finally:
        try:
            plugin.shutdown()
        finally:
            plugin.kill()


def leftovers(work: Path, netns_before: set[str]) -> list[str]:
    """What the benchmark must not leave: containers, monitors, mounts, netns, cgroup dirs."""
    found = [f"mount {m}" for m in mounts_under(work)]
    for root in (work / "data" / "pods" / "runc", work / "bare-runc"):
        if root.is_dir():
            listed = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
            found += [f"runc container {c} in {root}" for c in listed.stdout.split()]
    monitors = subprocess.run(["pgrep", "-f", f"conmon.*{work}"], capture_output=True, text=True)
    found += [f"conmon pid {p}" for p in monitors.stdout.split()]
    found += [f"netns {n}" for n in sorted(netns_names() - netns_before)]
    found += [f"cgroup {d}" for d in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT}") if d.is_dir()]
    return found


def force_clean(work: Path) -> None:
    """Safety net after a failure: delete our containers (runc kills conmon's child), unmount, then cgroups."""
    for root in (work / "data" / "pods" / "runc", work / "bare-runc"):
        if root.is_dir():
            listed = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
            for container in listed.stdout.split():
                subprocess.run(["runc", "--root", str(root), "delete", "-f", container], capture_output=True)
    time.sleep(0.5)  # conmon exits after its container
    for point in sorted(mounts_under(work), reverse=True):
        with contextlib.suppress(BenchFailed):
            umount(Path(point))
    remove_cgroup_parent()


def remove_cgroup_parent() -> None:
    for directory in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT}"):
        if directory.is_dir():
            for child in sorted(directory.iterdir(), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()
