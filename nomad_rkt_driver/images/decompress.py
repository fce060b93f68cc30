"""Open a layer blob as an uncompressed tar stream, whatever it was compressed with.

The compression is sniffed from the first bytes (media types lie, and Docker's
``…tar.gzip`` / OCI's ``…tar+gzip`` / plain ``…tar`` all occur): gzip, zstd, xz, bzip2 or none.
gzip, xz and bzip2 use the stdlib (Python's zlib inflates about twice as fast as the ``gzip``
program here, and releases the GIL while it does). zstd blobs must be real files: they are
decompressed by a child ``zstd -dc`` (Python 3.11 has no zstd module).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import logging
import lzma
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import IO, Protocol

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
}
_SNIFF_BYTES = 6
_READ_BYTES = 1 << 20
_STDERR_LIMIT_BYTES = 4096


class Readable(Protocol):
    """Anything with ``read(size)`` returning bytes (b"" at the end)."""

    def read(self, size: int = -1, /) -> bytes: ...


class CorruptLayer(InvalidArgument):
    """The layer is not a readable (compressed) tar stream, or not the diff_id it should be."""


class UnsupportedCompression(FailedPrecondition):
    """The layer is compressed with something this host cannot decompress."""


def sniff(head: bytes) -> str:
    """``gzip``, ``zstd``, ``xz``, ``bzip2`` or ``tar`` (anything else) for a blob's first bytes."""
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return "tar"


@contextlib.contextmanager
def decompressed(blob: IO[bytes], *, digest: str, media_type: str = "") -> Iterator[Readable]:
    """Yield a readable uncompressed stream of ``blob``.

    Raises:
        UnsupportedCompression: zstd without the ``zstd`` program.
        CorruptLayer: the compressed stream is corrupt.
    """
    head = blob.read(_SNIFF_BYTES)
    kind = sniff(head)
    if kind == "zstd":
        fd = _real_fd(blob, len(head))
        if fd is None:
            raise UnsupportedCompression(f"layer {digest} ({media_type or 'zstd'}) is zstd-compressed and not a file")
        with _child(kind, fd, digest) as stream:
            yield stream
        return
    source = io.BufferedReader(_Prepended(head, blob), _READ_BYTES)
    try:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=source, mode="rb") as stream:
                yield stream
        elif kind == "xz":
            with lzma.LZMAFile(source) as stream:
                yield stream
        elif kind == "bzip2":
            with bz2.BZ2File(source) as stream:
                yield stream
        else:
            yield source
    except (OSError, EOFError, lzma.LZMAError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise CorruptLayer(f"layer {digest}: corrupt {kind} stream: {exc}") from exc


def _real_fd(blob: IO[bytes], consumed: int) -> int | None:
    """The OS file descriptor of ``blob`` rewound to its start, if it is a seekable file."""
    try:
        fd = blob.fileno()
        if not blob.seekable():
            return None
        # A buffered reader may have read ahead: put the OS offset (shared with the child) at the start.
        os.lseek(fd, blob.tell() - consumed, os.SEEK_SET)
        return fd
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def _child(kind: str, fd: int, digest: str) -> Iterator[Readable]:
    program = shutil.which(kind)
    if program is None:
        raise UnsupportedCompression(f"layer {digest} is {kind}-compressed: install the {kind} program to unpack it")
    proc = subprocess.Popen(
        [program, "-dc"], stdin=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True, bufsize=1 << 20
    )
    assert proc.stdout is not None and proc.stderr is not None
    failed = True
    try:
        yield proc.stdout
        failed = False
    finally:
        if failed and proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        err = proc.stderr.read(_STDERR_LIMIT_BYTES).decode(errors="replace").strip()
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise CorruptLayer(f"layer {digest}: corrupt {kind} stream ({kind} exited {code}: {err})")


class _Prepended(io.RawIOBase):
    """``head`` (already read) followed by the rest of ``rest``."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)
