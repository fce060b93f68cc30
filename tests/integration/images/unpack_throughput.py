"""Unpack throughput of images/unpack.py against GNU ``tar -x`` on the same layer blob.

Run by hand for bigger numbers: ``.venv/bin/python -m tests.integration.images.unpack_throughput [MB]``.
The layer mixes a few large files (half random, half compressible) with many small ones,
like a typical distro layer. Both sides read the same gzip blob from disk and write to the same
filesystem; each is timed best of ``runs``.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nomad_rkt_driver.images.unpack import unpack_layer
from tests.imagebuild import Layer

SMALL_FILES = 3000


def make_layer(megabytes: int) -> bytes:
    """A gzip layer of about ``megabytes`` MB uncompressed."""
    rng = random.Random(42)
    layer = Layer()
    for d in range(30):
        layer.dir(f"usr/share/d{d}") if d else layer.dir("usr").dir("usr/share").dir("usr/share/d0")
    small_bytes = 0
    for i in range(SMALL_FILES):
        text = (f"line {i} of a config or script file\n" * rng.randint(5, 60)).encode()
        layer.file(f"usr/share/d{i % 30}/f{i}.txt", text, mode=0o644)
        small_bytes += len(text)
    big_total = max(0, megabytes * (1 << 20) - small_bytes)
    layer.dir("usr/lib")
    for i in range(4):
        half = big_total // 8
        layer.file(f"usr/lib/big{i}.so", rng.randbytes(half) + b"A" * half, mode=0o755)
    return gzip.compress(layer.tar(), compresslevel=6, mtime=0)


def measure(megabytes: int = 40, runs: int = 3) -> dict[str, float]:
    """Seconds for ours and for ``tar -x`` (best of ``runs``), and the ratio ours / tar."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        blob = work / "layer.tar.gz"
        blob.write_bytes(make_layer(megabytes))

        def ours() -> None:
            dest = work / "ours"
            shutil.rmtree(dest, ignore_errors=True)
            with blob.open("rb") as f:
                unpack_layer(f, dest, digest="sha256:" + "0" * 64)

        def tar() -> None:
            dest = work / "tar"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            subprocess.run(["tar", "--xattrs", "-xzf", str(blob), "-C", str(dest)], check=True)

        os.sync()
        timings: dict[str, list[float]] = {"tar": [], "ours": []}
        for _ in range(runs):  # interleaved, so load from elsewhere hits both alike
            for name, action in (("tar", tar), ("ours", ours)):
                started = time.perf_counter()
                action()
                timings[name].append(time.perf_counter() - started)
        t_tar, t_ours = min(timings["tar"]), min(timings["ours"])
    return {"megabytes": megabytes, "ours_s": t_ours, "tar_s": t_tar, "ratio": t_ours / t_tar}


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
    mb = result["megabytes"]
    print(
        f"unpack of a {mb} MB gzip layer: ours {result['ours_s']:.3f}s ({mb / result['ours_s']:.0f} MB/s), "
        f"tar -x {result['tar_s']:.3f}s ({mb / result['tar_s']:.0f} MB/s), ratio {result['ratio']:.2f}x"
    )
