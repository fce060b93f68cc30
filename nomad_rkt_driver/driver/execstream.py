"""An interactive exec for ``nomad alloc exec``: stdin in, stdout/stderr out, resize, exit code."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Final

from nomad_rkt_driver.runtime import execs
from nomad_rkt_driver.runtime.pods import Pods

READ_CHUNK: Final = 32 * 1024
Output = tuple[str, bytes]  # ("stdout" | "stderr", data)


class ExecStream:
    """One running ``runc exec``; with a terminal all output arrives as "stdout"."""

    def __init__(self, proc: asyncio.subprocess.Process, master_fd: int | None) -> None:
        self._proc = proc
        self._master = master_fd
        self._outputs: asyncio.Queue[Output | None] = asyncio.Queue()
        self._open = 1 if master_fd is not None else 2
        self._pumps: list[asyncio.Task[None]] = []
        if master_fd is not None:
            os.set_blocking(master_fd, False)
            asyncio.get_running_loop().add_reader(master_fd, self._read_master)
        else:
            assert proc.stdout is not None and proc.stderr is not None
            self._pumps = [
                asyncio.create_task(self._pump("stdout", proc.stdout)),
                asyncio.create_task(self._pump("stderr", proc.stderr)),
            ]

    @classmethod
    async def start(cls, executor: Executor, pods: Pods, pod_id: str, command: list[str], tty: bool) -> ExecStream:
        loop = asyncio.get_running_loop()
        if not tty:
            cmd = await loop.run_in_executor(executor, lambda: execs.exec_command(pods, pod_id, command, tty=False))
            proc = await asyncio.create_subprocess_exec(
                *cmd.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
            return cls(proc, None)
        cmd = await loop.run_in_executor(executor, lambda: execs.exec_command(pods, pod_id, command, tty=True))
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd.argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(proc, master)

    def _read_master(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's last process is gone
            data = b""
        if data:
            self._outputs.put_nowait(("stdout", data))
            return
        asyncio.get_running_loop().remove_reader(self._master)
        self._outputs.put_nowait(None)

    async def _pump(self, name: str, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(READ_CHUNK):
            await self._outputs.put((name, data))
        await self._outputs.put(None)

    async def outputs(self) -> AsyncIterator[Output]:
        """Output chunks until every stream reached EOF."""
        while self._open:
            item = await self._outputs.get()
            if item is None:
                self._open -= 1
                continue
            yield item

    async def write(self, data: bytes) -> None:
        if self._master is not None:
            await asyncio.get_running_loop().run_in_executor(None, os.write, self._master, data)
        elif self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await self._proc.stdin.drain()

    def close_stdin(self) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")  # EOF at the terminal's line discipline
        elif self._proc.stdin is not None:
            self._proc.stdin.close()

    def resize(self, height: int, width: int) -> None:
        """Size our terminal; runc passes it on to the pod's when it gets SIGWINCH."""
        if self._master is not None and height > 0 and width > 0:
            execs.resize(self._master, height, width)
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGWINCH)

    async def wait(self) -> int:
        code = await self._proc.wait()
        return code

    async def close(self) -> None:
        """Kill the exec if it still runs (the client went away) and release the terminal."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._master is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._master)
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
