"""What Nomad's logmon does for a task, for the local runner: make the FIFO, read it, keep the
bytes in rotated files under alloc/logs, and hand each line to the terminal."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

MAX_FILE_BYTES: Final = 10 * 1024 * 1024
MAX_FILES: Final = 10


class LogMon:
    """Reads one FIFO (stdout or stderr of one task) until stopped."""

    def __init__(self, fifo: Path, logs_dir: Path, name: str, on_line: Callable[[str], None]) -> None:
        self.fifo = fifo
        self._logs_dir = logs_dir
        self._name = name  # e.g. "web.stdout": files are web.stdout.0, web.stdout.1, ...
        self._on_line = on_line
        self._stopping = threading.Event()
        self._index = 0
        self._file: BinaryIO | None = None
        os.mkfifo(fifo, 0o600)
        self._thread = threading.Thread(target=self._run, name=f"logmon-{name}", daemon=True)
        self._thread.start()

    def _rotate(self) -> BinaryIO:
        if self._file is not None and self._file.tell() >= MAX_FILE_BYTES:
            self._file.close()
            self._file = None
            self._index += 1
            stale = self._logs_dir / f"{self._name}.{self._index - MAX_FILES}"
            stale.unlink(missing_ok=True)
        if self._file is None:
            self._file = (self._logs_dir / f"{self._name}.{self._index}").open("ab")
        return self._file

    def _run(self) -> None:
        pending = b""
        while not self._stopping.is_set():
            with open(self.fifo, "rb") as reader:  # blocks until a writer (the task) opens it
                while chunk := reader.read1(65536):
                    self._rotate().write(chunk)
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._on_line(line.decode(errors="replace"))
            if self._file is not None:
                self._file.flush()
        if pending:
            self._on_line(pending.decode(errors="replace"))

    def stop(self) -> None:
        """Stop reading: wake a reader blocked in open() and let the thread finish."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        self._thread.join(timeout=5)
        if self._file is not None:
            self._file.close()
            self._file = None
