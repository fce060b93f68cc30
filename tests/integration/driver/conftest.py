"""A running plugin process, a busybox OCI image and Nomad-like alloc dirs with logmon-like FIFO readers."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from nomad_rkt_driver.config.fields import settings
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2
from nomad_rkt_driver.runtime import cgroupmove
from tests.protocol.plugin import Plugin


def encode(cls: type, **values: Any) -> bytes:
    body: dict[str, Any] = {s.name: None for s in settings(cls)}
    body.update(values)
    return msgpack.packb(body)


@dataclass
class Fifo:
    """Nomad's logmon side of a task log FIFO: created first, read continuously."""

    path: Path
    data: bytearray = field(default_factory=bytearray)
    thread: threading.Thread | None = None

    def start(self) -> None:
        os.mkfifo(self.path, 0o600)

        def pump() -> None:
            with open(self.path, "rb") as reader:  # blocks until the driver opens the writer
                while chunk := reader.read1(65536):
                    self.data.extend(chunk)

        self.thread = threading.Thread(target=pump, daemon=True)
        self.thread.start()

    def text(self, timeout_s: float = 10.0) -> str:
        """Everything written, once every writer closed (the pod exited)."""
        assert self.thread is not None
        self.thread.join(timeout_s)
        return self.data.decode()


@dataclass
class Alloc:
    dir: Path
    task: str
    stdout: Fifo
    stderr: Fifo
    id: str


def make_alloc(base: Path, task: str = "web") -> Alloc:
    alloc_id = secrets.token_hex(4)
    alloc_dir = base / f"alloc-{alloc_id}"
    for sub in ("alloc/logs", "alloc/data", "alloc/tmp", f"{task}/local", f"{task}/secrets", f"{task}/tmp"):
        (alloc_dir / sub).mkdir(parents=True)
    out = Fifo(alloc_dir / "alloc" / "logs" / f".{task}.stdout.fifo")
    err = Fifo(alloc_dir / "alloc" / "logs" / f".{task}.stderr.fifo")
    out.start()
    err.start()
    return Alloc(alloc_dir, task, out, err, alloc_id)


def task_config(alloc: Alloc, image: str, **cfg: Any) -> driver_pb2.TaskConfig:
    values = {"image": image, "insecure_options": ["image"], "net": ["none"], **cfg}
    return driver_pb2.TaskConfig(
        id=f"{alloc.id}/{alloc.task}/{secrets.token_hex(4)}",
        name=alloc.task,
        alloc_id=alloc.id,
        msgpack_driver_config=encode(TaskConfig, **values),
        env={"NOMAD_TASK_NAME": alloc.task},
        alloc_dir=str(alloc.dir),
        stdout_path=str(alloc.stdout.path),
        stderr_path=str(alloc.stderr.path),
        resources=driver_pb2.Resources(
            linux_resources=driver_pb2.LinuxResources(memory_limit_bytes=64 << 20, cpu_shares=100)
        ),
    )


def set_config(plugin: Plugin, data_dir: Path, **extra: Any) -> None:
    """The tests' plugin config; ``extra`` sets more options, e.g. ``volumes={"enabled": True}``."""
    cores = [base_pb2.ClientTopologyCore(core_id=i, base_speed=2000) for i in range(2)]
    plugin.base.SetConfig(
        base_pb2.SetConfigRequest(
            msgpack_config=encode(PluginConfig, data_dir=str(data_dir), cgroup_parent=CGROUP_PARENT, **extra),
            plugin_api_version="v0.1.0",
            nomad_config=base_pb2.NomadConfig(
                driver=base_pb2.NomadDriverConfig(Topology=base_pb2.ClientTopology(cores=cores))
            ),
        )
    )


CGROUP_PARENT = f"/nomad-rkt-test-{os.getpid()}"


def leftovers(data_dir: Path) -> list[str]:
    """What a finished test must not leave: mounts, runc containers, monitors, pod state."""
    found = [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if str(data_dir) in line.split()[1]
    ]
    runc_root = data_dir / "pods" / "runc"
    if runc_root.is_dir():
        done = subprocess.run(
            ["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True, check=False
        )
        found += [f"runc container {c}" for c in done.stdout.split()]
    monitors = subprocess.run(["pgrep", "-f", f"conmon.*{data_dir}"], capture_output=True, text=True, check=False)
    found += [f"conmon pid {p}" for p in monitors.stdout.split()]
    pods = data_dir / "pods" / "pods"
    if pods.is_dir():
        found += [f"pod state {p.name}" for p in pods.iterdir()]
    networks = data_dir / "network" / "pods"
    if networks.is_dir():
        found += [f"pod network {p.name}" for p in networks.iterdir()]
    for hierarchy, _ in cgroupmove.hierarchies():  # pods' cgroups and the monitors' one (gone with the last pod)
        parent = hierarchy / CGROUP_PARENT.strip("/")
        if parent.is_dir():
            found += [f"cgroup {d}" for d in parent.iterdir() if d.is_dir()]
    return found


def _clean(data_dir: Path) -> None:
    """Safety net after a failed test: remove its pods, then their networks, so the host stays clean."""
    from nomad_rkt_driver.network.attach import PodNetworks
    from nomad_rkt_driver.runtime.pods import Pods

    if (data_dir / "pods").is_dir():
        pods = Pods(data_dir / "pods", "runc", "conmon", CGROUP_PARENT)
        for pod_id in pods.list():
            pods.destroy(pod_id)
    if (data_dir / "network").is_dir():
        networks = PodNetworks(data_dir / "network", ("/usr/lib/cni",), "", "")
        for pod_id in networks.pods():
            networks.teardown(pod_id)
    cgroupmove.prune(f"{CGROUP_PARENT}/monitors")
