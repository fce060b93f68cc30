"""`nomad-rkt-driver run` and `validate` as a user runs them: a real process, a real plugin, real pods."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.imagebuild import Layer, build_image, busybox_layer
from tests.integration.network.conftest import fetch
from tests.registryserver import FaultProxy, RegistryServer

from .conftest import CLI, ROOT, PodNetwork, interrupt, run, start_runner


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


def test_web_job_serves_its_page_through_the_dynamic_port(workdir: Path) -> None:

    pod = PodNetwork(workdir / "data")
    jobfile = workdir / "web.nomad.hcl"
    jobfile.write_text((ROOT / "jobs" / "web.nomad.hcl").read_text())
    proc = start_runner(workdir, jobfile)
    try:
        assert proc.stdout is not None
        address = ""
        deadline = time.monotonic() + 60
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            pod.note(line)
            if "port http -> " in line:
                address = line.split("-> ", 1)[1].strip()
        assert address.startswith("http://127.0.0.1:"), "the runner printed no address"
        assert pod.nat_rules(), "no NAT rules for the pod: the check for leftovers would prove nothing"
        assert "hello from a rkt pod" in fetch(address, max(1.0, deadline - time.monotonic()))
        interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert pod.leftovers() == [], "the web job left network state behind"


def test_variables_from_flags_files_and_env(workdir: Path) -> None:
    args = 'args = ["${var.greeting} x${var.times} from ${NOMAD_TASK_NAME}"]'
    body = job(workdir / "body.hcl", f'command = "/bin/echo"\n{args}').read_text()
    jobfile = workdir / "vars.nomad.hcl"
    jobfile.write_text(
        'variable "greeting" {\n  type = string\n}\nvariable "times" {\n  type = number\n  default = 1\n}\n' + body
    )
    missing = run(workdir, jobfile)
    assert missing.returncode == 1 and 'variable "greeting" has no value' in missing.stderr
    assert "-var 'greeting=VALUE'" in missing.stderr
    unknown = run(workdir, jobfile, "-var", "greeting=hi", "-var", "greting=typo")
    assert unknown.returncode == 1 and 'undefined variable: "greting"' in unknown.stderr
    (workdir / "values.hcl").write_text('greeting = "from the file"\ntimes = 2\n')
    env = dict(os.environ, NOMAD_VAR_greeting="from env", NOMAD_VAR_times="5")
    done = run(workdir, jobfile, "-var-file", "values.hcl", "-var=times=3", env=env)
    assert done.returncode == 0, done.stderr
    assert "t | from the file x3 from t" in done.stdout
    validated = subprocess.run(
        [CLI, "validate", str(jobfile), "--var", "greeting=hi"], capture_output=True, text=True, timeout=60
    )
    assert validated.returncode == 0 and "vars.nomad.hcl: ok" in validated.stdout


def test_validation_rules_and_locals_through_run_and_validate(workdir: Path) -> None:
    body = job(workdir / "body.hcl", 'command = "/bin/echo"\nargs = local.args').read_text()
    jobfile = workdir / "checked.nomad.hcl"
    jobfile.write_text(
        """variable "port" {
  type    = number
  default = 8080
  validation {
    condition     = var.port > 1024 && var.port <= 65535
    error_message = "The port must be above 1024, not ${var.port}."
  }
}
locals {
  greeting = "${upper(local.who)} on ${var.port % 1000 == 80 ? "the usual port" : "port ${var.port}"}"
  who      = "hello"
  args     = [local.greeting, "from ${NOMAD_TASK_NAME}"]
}
"""
        + body
    )
    done = run(workdir, jobfile)
    assert done.returncode == 0, done.stderr
    assert "t | HELLO on the usual port from t" in done.stdout
    refused = run(workdir, jobfile, "-var", "port=80")
    assert refused.returncode == 1 and "t | " not in refused.stdout
    assert "Invalid value for variable: The port must be above 1024, not 80." in refused.stderr
    assert 'variable "port" = 80 (from -var)' in refused.stderr
    env = dict(os.environ, NOMAD_VAR_port="99999")
    from_env = subprocess.run([CLI, "validate", str(jobfile)], capture_output=True, text=True, timeout=60, env=env)
    assert from_env.returncode == 1 and "(from NOMAD_VAR_port in the environment)" in from_env.stderr
    ok = subprocess.run(
        [CLI, "validate", str(jobfile), "-var", "port=9090"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "checked.nomad.hcl: ok" in ok.stdout, ok.stderr
    jobfile.write_text(jobfile.read_text().replace('who      = "hello"', "who      = local.greeting"))
    cycle = subprocess.run([CLI, "validate", str(jobfile)], capture_output=True, text=True, timeout=60)
    assert cycle.returncode == 1
    assert "cycle: local.greeting -> local.who -> local.greeting" in cycle.stderr


PROGRESS = re.compile(
    r"^t: pulling (?P<image>\S+): (?P<done>\d+)/(?P<total>\d+) layers, [\d.]+/[\d.]+ MB, [\d.]+ MB/s$"
)


def test_pull_progress_from_a_registry_is_shown_throttled_and_whole(workdir: Path) -> None:
    registry = RegistryServer(workdir / "registry", "plain").start()
    proxy = FaultProxy(registry.port)
    try:
        layers = [busybox_layer(), Layer().file("srv/blob", os.urandom(4 * 1024 * 1024))]
        registry.push(f"oci:{build_image(workdir / 'layout', layers, tag='v1').layout}:v1", "team/big:v1")
        proxy.throttle_bytes_per_s = 1.5 * 1024 * 1024  # a 4 MB layer takes about 3 s
        image = f"{proxy.host}/team/big:v1"
        jobfile = job(workdir / "j.hcl", 'command = "/bin/echo"\nargs = ["pulled and ran"]')
        jobfile.write_text(
            jobfile.read_text()
            .replace('"oci:images/busybox:1"', f'"{image}"')
            .replace('["image"]', '["image", "http"]')
        )
        started = time.monotonic()
        done = run(workdir, jobfile)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
        registry.close()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pulling = [line for line in lines if line.startswith("t: pulling ")]
    assert all(PROGRESS.match(line) for line in pulling), pulling  # whole lines, never mixed with logs
    assert len(pulling) >= 2, done.stdout  # the first one and at least one while the big layer comes
    assert len(pulling) <= elapsed + 2, "progress is not throttled to about one line a second"
    pulled = [i for i, line in enumerate(lines) if line.startswith(f"t: pulled {image}: 2 layers, ")]
    assert len(pulled) == 1, done.stdout
    assert lines.index(pulling[0]) < pulled[0] < min(lines.index("t: started"), lines.index("t | pulled and ran"))
    assert "\r" not in done.stdout
