"""Cold pull of a ~60 MB, 4-layer image: our Puller against ``skopeo copy docker://… oci:…`` in the same run.

The numbers are printed (``pytest -s``) for docs/benchmarks.md, not asserted: CI machines vary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.reference import parse_docker
from nomad_rkt_driver.images.store import Store
from tests.registryserver import RegistryServer, build_layout, busybox_files, need

LAYER_BYTES = 19 * 1024 * 1024
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "3"))
DURABLE = os.environ.get("BENCH_DURABLE", "1") == "1"


def test_cold_pull_60mb_against_skopeo(tmp_path: Path) -> None:
    registry = RegistryServer(tmp_path / "registry", "plain")
    try:
        registry.start()
        layers = [busybox_files()] + [{f"data/{i}": os.urandom(LAYER_BYTES)} for i in range(3)]
        registry.push(build_layout(tmp_path / "layout", layers, gzip_level=None), "bench/big:v1")
        ours, theirs = [], []
        for round_ in range(3):
            with Store(tmp_path / f"store{round_}", durable=DURABLE) as store:
                started = time.perf_counter()
                record = Puller(store, max_parallel_layers=PARALLEL).pull(
                    parse_docker(f"{registry.host}/bench/big:v1"), insecure_http=True, tls_verify=True, credentials=None
                )
                ours.append(time.perf_counter() - started)
            target = tmp_path / f"skopeo{round_}"
            started = time.perf_counter()
            subprocess.run(
                [need("skopeo", "skopeo"), "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                 f"docker://{registry.host}/bench/big:v1", f"oci:{target}:v1"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            theirs.append(time.perf_counter() - started)
            shutil.rmtree(target)
        total_mb = sum(layer.size for layer in record.layers) / 1e6
        print(
            f"\ncold pull {total_mb:.1f} MB / {len(record.layers)} layers: ours {min(ours):.3f} s, "
            f"skopeo {min(theirs):.3f} s, ratio {min(ours) / min(theirs):.2f}x (best of 3; all: {ours} {theirs})"
        )
        assert len(record.layers) == 4
    finally:
        registry.close()
