"""Fixtures for real pods: runc + conmon on a busybox rootfs, and a nothing-left check after every test."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from nomad_rkt_driver.runtime import bundle, cgroups
from nomad_rkt_driver.runtime.pods import Pods
from nomad_rkt_driver.runtime.probe import locate
from tests.rootfs import busybox_layers

INSTALL_HINT: Final = "apt-get install runc conmon (or run scripts/setup.sh)"
READER_JOIN_S: Final = 10.0


def tool(name: str) -> str:
    path = locate(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return path


@pytest.fixture(scope="session")
def layers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The busybox rootfs as two layer dirs, top first (read-only for the tests)."""
    return busybox_layers(tmp_path_factory.mktemp("busybox"))


class Fifo:
    """A named pipe read to EOF by a thread, like Nomad's logmon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            while chunk := f.read(4096):
                self.data += chunk

    def text(self, timeout_s: float = READER_JOIN_S) -> str:
        """Everything written, once every writer has closed."""
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"{self.path}: writers still open after {timeout_s}s"
        return self.data.decode()

    def close(self) -> None:
        if self.thread.is_alive():  # never opened by a writer: release the blocked open()
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        self.thread.join(READER_JOIN_S)


@dataclass
class Env:
    """One test's pods facade, its data dir, cgroup parent and log FIFOs."""

    pods: Pods
    data_dir: Path
    cgroup_parent: str
    layers: list[Path]
    fifos: list[Fifo] = field(default_factory=list)

    def logs(self, name: str = "task") -> tuple[Fifo, Fifo]:
        out = Fifo(self.data_dir / f".{name}.stdout.fifo")
        err = Fifo(self.data_dir / f".{name}.stderr.fifo")
        self.fifos += [out, err]
        return out, err

    @staticmethod
    def new_id(prefix: str = "pod") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"


def conmons_for(data_dir: Path) -> list[int]:
    """Live (non-zombie) conmon processes whose command line mentions ``data_dir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"conmon" in cmdline.split(b"\0")[0] and str(data_dir).encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def leftovers(env: Env) -> list[str]:
    """Everything a pod may leave behind on the host, described."""
    left = [f"mount {m}" for m in bundle.mounts_under(env.data_dir)]
    left += [f"runc container {c}" for c in env.pods.runc.list_ids()]
    left += [f"conmon pid {p}" for p in conmons_for(env.data_dir)]
    for group in cgroups.existing_dirs(env.cgroup_parent):
        left += [f"cgroup {child}" for child in group.iterdir() if child.is_dir()]
    pods_dir = env.data_dir / "state" / "pods"
    left += [f"state dir {p}" for p in pods_dir.iterdir()] if pods_dir.exists() else []
    return left


@pytest.fixture
def env(tmp_path: Path, layers: list[Path]) -> Iterator[Env]:
    """A fresh Pods facade; afterwards every pod is destroyed and nothing may be left on the host."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    parent = f"/nrd-test-{uuid.uuid4().hex[:8]}"
    state = Env(Pods(data_dir / "state", tool("runc"), tool("conmon"), cgroup_parent=parent), data_dir, parent, layers)
    try:
        yield state
        for pod_id in state.pods.list():
            state.pods.destroy(pod_id)
        assert leftovers(state) == []
    finally:
        _force_clean(state)


def _force_clean(env: Env) -> None:
    """Last resort after a failed test: remove whatever is left so later tests start clean."""
    for pod_id in env.pods.list():
        with contextlib.suppress(Exception):
            env.pods.destroy(pod_id)
    for pid in conmons_for(env.data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    for mount in reversed(bundle.mounts_under(env.data_dir)):
        with contextlib.suppress(Exception):
            bundle.unmount(Path(mount))
    for fifo in env.fifos:
        fifo.close()
    for group in cgroups.existing_dirs(env.cgroup_parent):
        for child in group.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()
