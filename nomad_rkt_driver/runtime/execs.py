"""Running a command inside a pod (``runc exec``): what Nomad's ExecTask, script checks and
``nomad alloc exec`` need.

The command gets the pod's own environment, working directory and user (read from the bundle's
config.json, so it matches the task). With a terminal, runc runs on a pty we own and proxies it
to a pty in the pod (resizes reach it as SIGWINCH); without one the command's stdin/stdout/stderr
are plain pipes.
"""

from __future__ import annotations

import fcntl
import json
import struct
import subprocess
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.runtime.pods import Pods


@dataclass(frozen=True)
class ExecCommand:
    """The runc command line for one exec, ready to spawn."""

    argv: list[str]
    tty: bool


def exec_command(pods: Pods, pod_id: str, command: list[str], *, tty: bool) -> ExecCommand:
    """``runc exec`` with the pod's env, cwd and user; raises NotFound for an unknown pod."""
    if not command:
        raise InvalidArgument('exec needs a command, e.g. ["/bin/sh"]')
    record = pods.load(pod_id)
    config: dict[str, Any] = json.loads((Path(record.bundle) / "config.json").read_text())
    process = config.get("process", {})
    user = process.get("user", {})
    args = [
        *pods.runc.base_args(),
        "exec",
        "--cwd",
        str(process.get("cwd", "/")),
        "--user",
        f"{user.get('uid', 0)}:{user.get('gid', 0)}",
    ]
    for entry in process.get("env", []):
        args += ["--env", str(entry)]
    if tty:
        args.append("--tty")  # runc proxies between its own terminal (ours, see ExecStream) and the pod's
    return ExecCommand([*args, pod_id, *command], tty)


def run(pods: Pods, pod_id: str, command: list[str], timeout_s: float | None) -> tuple[bytes, bytes, int]:
    """Run to completion without a terminal: (stdout, stderr, exit code); 124 on timeout, like timeout(1)."""
    cmd = exec_command(pods, pod_id, command, tty=False)
    try:
        done = subprocess.run(
            cmd.argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout_s or None, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return exc.stdout or b"", exc.stderr or b"", 124
    return done.stdout, done.stderr, done.returncode


def resize(master_fd: int, height: int, width: int) -> None:
    """Tell the pty its new size (Nomad's tty_size messages)."""
    fcntl.ioctl(master_fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
