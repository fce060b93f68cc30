"""The runner as a user runs it: a real `nomad-rkt-driver` process in a work dir with the example
image, a plugin.hcl on a checked data dir, and helpers to run it to the end or in the background."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.driver.conftest import leftovers

CLI = str(Path(sys.executable).parent / "nomad-rkt-driver")
ROOT = Path(__file__).resolve().parents[3]
CGROUP_PARENT = f"/nomad-rkt-runner-test-{os.getpid()}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example jobs' image, built by the project's own script with umoci."""
    base = tmp_path_factory.mktemp("jobs")
    subprocess.run(
        [str(ROOT / "scripts" / "build-demo-images.sh"), str(base / "images" / "busybox")],
        check=True,
        capture_output=True,
    )
    return base


def plugin_settings(data: Path) -> str:
    return f'    data_dir = "{data}"\n    cgroup_parent = "{CGROUP_PARENT}"\n'


def with_test_settings(example: Path, dest: Path, data: Path) -> Path:
    """An example plugin file with the test's data_dir and cgroup_parent added to its config block."""
    text = example.read_text()
    assert text.count("\n  config {\n") == 1, f"{example} has no single config block"
    dest.write_text(text.replace("\n  config {\n", "\n  config {\n" + plugin_settings(data)))
    return dest


@pytest.fixture
def workdir(images: Path, tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "images").symlink_to(images / "images")
    data = tmp_path / "data"
    (tmp_path / "plugin.hcl").write_text(f'plugin "rkt" {{\n  config {{\n{plugin_settings(data)}  }}\n}}\n')
    yield tmp_path
    assert leftovers(data) == []
    allocs = data / "allocs"
    assert not allocs.exists() or not any(allocs.iterdir()), "the runner left an alloc dir"
    for directory in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT}"):
        directory.rmdir()


def runner_args(workdir: Path, jobfile: Path, args: tuple[str, ...], plugin: Path | None) -> list[str]:
    return [CLI, "run", str(jobfile), "--plugin-config", str(plugin or workdir / "plugin.hcl"), *args]


def start_runner(
    workdir: Path, jobfile: Path, *args: str, plugin: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """`nomad-rkt-driver run` in the background, its output readable line by line."""
    return subprocess.Popen(
        runner_args(workdir, jobfile, args, plugin),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env=None if env is None else dict(env),
    )


def run(
    workdir: Path,
    jobfile: Path,
    *args: str,
    plugin: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        runner_args(workdir, jobfile, args, plugin),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=None if env is None else dict(env),
    )


def output(*cmd: str) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True).stdout


@dataclass
class PodNetwork:
    """The runner's pod on a CNI network, noted while it runs, to check afterwards that nothing of
    it is left. Only this pod's objects count: other tests may make network objects meanwhile."""

    data_dir: Path
    ip: str = ""
    pod_ids: set[str] = field(default_factory=set)

    def note(self, line: str) -> None:
        """Take the address from the runner's ``TASK: started, pod address IP`` line, and the pod ids."""
        if ", pod address " in line:
            self.ip = line.rsplit(" ", 1)[1].strip()
            self.pod_ids = {p.name for p in (self.data_dir / "network" / "pods").iterdir()}

    def nat_rules(self) -> list[str]:
        """iptables nat rules for the pod's address (ipMasq, portmap DNAT)."""
        mine = re.compile(rf"(?<![\d.]){re.escape(self.ip)}(?!\d)")
        return [line for line in output("iptables", "-t", "nat", "-S").splitlines() if mine.search(line)]

    def leftovers(self) -> list[str]:
        assert self.ip and self.pod_ids, "the test never saw the pod's address"
        netns = {line.split()[0] for line in output("ip", "netns", "list").splitlines() if line.strip()}
        left = [f"netns {name}" for name in sorted(netns & {f"rkt-{pod}" for pod in self.pod_ids})]
        return left + [f"iptables {rule}" for rule in self.nat_rules()]


def interrupt(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C a service runner as a user would; it must stop and clean up its tasks. Returns stdout."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "all tasks stopped and cleaned up" in out
    return out
