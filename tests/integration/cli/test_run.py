"""`nomad-rkt-driver run` and `validate` as a user runs them: a real process, a real plugin, real pods."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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


@pytest.fixture
def workdir(images: Path, tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "images").symlink_to(images / "images")
    data = tmp_path / "data"
    (tmp_path / "plugin.hcl").write_text(
        f'plugin "rkt" {{\n  config {{\n    data_dir = "{data}"\n    cgroup_parent = "{CGROUP_PARENT}"\n  }}\n}}\n'
    )
    yield tmp_path
    assert leftovers(data) == []
    allocs = data / "allocs"
    assert not allocs.exists() or not any(allocs.iterdir()), "the runner left an alloc dir"
    for directory in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT}"):
        directory.rmdir()


def job(path: Path, task_config: str, *, kind: str = "batch", extra: str = "") -> Path:
    path.write_text(f'''job "demo" {{
  type = "{kind}"
  group "g" {{
    {extra}
    task "t" {{
      driver = "rkt"
      config {{
        image = "oci:images/busybox:1"
        net = ["none"]
        insecure_options = ["image"]
        {task_config}
      }}
    }}
  }}
}}
''')
    return path


def start_runner(workdir: Path, jobfile: Path) -> subprocess.Popen[str]:
    """`nomad-rkt-driver run` in the background, its output readable line by line."""
    return subprocess.Popen(
        [CLI, "run", str(jobfile), "--plugin-config", str(workdir / "plugin.hcl")],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def run(workdir: Path, jobfile: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "run", str(jobfile), "--plugin-config", str(workdir / "plugin.hcl")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_batch_job_prints_and_succeeds(workdir: Path) -> None:
    done = run(workdir, job(workdir / "j.hcl", 'command = "/bin/echo"\nargs = ["hi from ${NOMAD_TASK_NAME}"]'))
    assert done.returncode == 0, done.stderr
    assert "t | hi from t" in done.stdout


def test_batch_exit_code_and_stderr(workdir: Path) -> None:
    done = run(workdir, job(workdir / "j.hcl", 'command = "/bin/sh"\nargs = ["-c", "echo oops >&2; exit 3"]'))
    assert done.returncode == 3
    assert "t | oops" in done.stderr and "t exited with code 3" in done.stdout


def test_restart_attempts_are_honoured(workdir: Path) -> None:
    jobfile = job(
        workdir / "j.hcl",
        'command = "/bin/sh"\nargs = ["-c", "exit 4"]',
        extra='restart {\n attempts = 1\n delay = "0s"\n }',
    )
    done = run(workdir, jobfile)
    assert done.returncode == 4
    assert done.stdout.count("t exited with code 4") == 2 and "restarting (attempt 1)" in done.stdout


def test_ctrl_c_stops_a_service_and_leaves_nothing(workdir: Path) -> None:
    jobfile = job(
        workdir / "j.hcl", 'command = "/bin/sh"\nargs = ["-c", "echo up; while :; do sleep 0.2; done"]', kind="service"
    )
    proc = start_runner(workdir, jobfile)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "t | up" in line:
                break
        else:
            raise AssertionError("the service never said it was up")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_bad_config_is_refused_before_anything_starts(workdir: Path) -> None:
    jobfile = job(workdir / "j.hcl", 'command = "/bin/true"\ncap_add = ["bogus cap"]')
    done = run(workdir, jobfile)
    assert done.returncode == 1 and "cap_add" in done.stderr
    validated = subprocess.run(
        [CLI, "validate", str(jobfile), str(ROOT / "jobs" / "hello.nomad.hcl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validated.returncode == 1
    assert "cap_add" in validated.stderr and "hello.nomad.hcl: ok" in validated.stdout


def _host_network_objects() -> set[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split("\n")
    chains = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in netns if line.strip()} | {
        line for line in chains.splitlines() if line.startswith("-N CNI-") and "HOSTPORT" not in line
    }


def test_web_job_serves_its_page_through_the_dynamic_port(workdir: Path) -> None:
    import urllib.request

    before = _host_network_objects()
    jobfile = workdir / "web.nomad.hcl"
    jobfile.write_text((ROOT / "jobs" / "web.nomad.hcl").read_text())
    proc = start_runner(workdir, jobfile)
    try:
        assert proc.stdout is not None
        address = ""
        deadline = time.monotonic() + 60
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "port http -> " in line:
                address = line.split("-> ", 1)[1].strip()
        assert address.startswith("http://127.0.0.1:"), "the runner printed no address"
        page = ""
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(address, timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.2)
        assert "hello from a rkt pod" in page
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "all tasks stopped and cleaned up" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert _host_network_objects() - before == set(), "the web job left a netns or iptables chain behind"
