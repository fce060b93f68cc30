"""Pull benchmark: the driver's registry client and unpacker against skopeo and tar, in the same run.

A ~60 MB, 4-layer image (busybox-static at the bottom, random content on top, gzip'd; tests/imagebuild.py) is
pushed to a local docker-registry (tests/registryserver.py, 127.0.0.1 only). Then, interleaved run by run:

  cold pull    images.pull.Puller into a fresh Store (as the driver builds it: durable, 3 parallel layers)
               against `skopeo copy docker://127.0.0.1:PORT/... oci:DIR:TAG` into a fresh directory
  warm pull    Puller.pull of the image already stored (no force), against skopeo copy into the
               directory it already filled; registry requests counted from the registry's access log
  unpack       Store.unpacked_layer of the 4 layer blobs (gzip inflate, tar, diff_id check) against
               `tar -xzf BLOB -C DIR` of the same blobs, one after another

Results are reported, never asserted: the exit status is non-zero only when a pull, a copy or an unpack fails, or
something is left behind (registry process, mounts, temp dirs).

    .venv/bin/python bench/pull/run.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    BenchFailed,
    first_line,
    interrupt_on_sigterm,
    machine,
    summary,
    write_result,
)
from nomad_rkt_driver.images.pull import Puller  # noqa: E402
from nomad_rkt_driver.images.reference import DockerReference, parse_reference  # noqa: E402
from nomad_rkt_driver.images.store import ImageRecord, Store  # noqa: E402
from tests.imagebuild import BuiltImage, Layer, build_image, busybox_layer  # noqa: E402
from tests.registryserver import RegistryServer  # noqa: E402

RESULT: Final = REPO / "bench" / "results" / "pull.json"
GOAL_COLD_RATIO: Final = 1.0  # issue goal: a cold pull no slower than skopeo copy
REPOSITORY: Final = "bench/big"
TAG: Final = "v1"


# -- the image ----------------------------------------------------------------------------------


def random_layers(seed: int, scale: float) -> list[Layer]:
    """4 layers, ~14 MB each gzip'd at scale 1: one big incompressible file, mid-size and small text files."""
    rng = random.Random(seed)
    big, mids, smalls = int(10 * 2**20 * scale), max(1, int(40 * scale)), max(1, int(400 * scale))
    layers = [busybox_layer()]
    for _ in range(3):
        layers.append(Layer())
    for n, layer in enumerate(layers):
        top = f"data{n}"
        layer.dir(top)
        layer.file(f"{top}/big.bin", rng.randbytes(big if n else big - 2**20))
        layer.dir(f"{top}/mid")
        for i in range(mids):
            layer.file(f"{top}/mid/{i:03}.txt", rng.randbytes(64 * 1024).hex().encode())
        layer.dir(f"{top}/small")
        for i in range(smalls):
            layer.file(f"{top}/small/{i:04}.txt", rng.randbytes(2 * 1024).hex().encode())
    return layers


def registry_requests(registry: RegistryServer) -> int:
    """Requests to /v2/ the registry has logged so far (its access log)."""
    with contextlib.suppress(FileNotFoundError):
        text = registry.log_path.read_text(errors="replace")
        return sum(text.count(f'"{method} /v2/') for method in ("GET", "HEAD"))
    return 0


# -- the subjects -------------------------------------------------------------------------------


def driver_pull(store: Store, ref: DockerReference) -> tuple[float, ImageRecord]:
    puller = Puller(store)  # as driver/tasks.py builds it (its activity timeout does not matter here)
    began = time.perf_counter()
    record = puller.pull(ref, insecure_http=True, tls_verify=False, credentials=None)
    return time.perf_counter() - began, record


def skopeo_copy(source: str, dest: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{dest}:{TAG}"],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchFailed(f"skopeo copy: {done.stderr.strip()}")
    return elapsed


def driver_unpack(store: Store, record: ImageRecord) -> float:
    began = time.perf_counter()
    for layer in record.layers:
        store.unpacked_layer(layer.digest, layer.media_type, diff_id=layer.diff_id)
    elapsed = time.perf_counter() - began
    for layer in record.layers:
        shutil.rmtree(store.layer_dir(layer.digest))
    return elapsed


def tar_unpack(store: Store, record: ImageRecord, dest: Path) -> float:
    began = time.perf_counter()
    for n, layer in enumerate(record.layers):
        target = dest / str(n)
        target.mkdir(parents=True)
        flag = "-xzf" if layer.media_type.endswith("gzip") else "-xf"
        done = subprocess.run(
            ["tar", flag, str(store.blob_path(layer.digest)), "-C", str(target)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BenchFailed(f"tar {flag} {layer.digest}: {done.stderr.strip()}")
    elapsed = time.perf_counter() - began
    shutil.rmtree(dest)
    return elapsed


# -- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_registry(work: Path) -> Iterator[RegistryServer]:
    registry = RegistryServer(work / "registry").start()
    try:
        yield registry
    finally:
        registry.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="measured runs of each pair (default 10)")
    parser.add_argument("--quick", action="store_true", help="2 runs of a ~15 MB image, for CI smoke use")
    parser.add_argument("--output", type=Path, default=RESULT, help=f"JSON result (default {RESULT.relative_to(REPO)})")
    opts = parser.parse_args()
    runs, scale = (2, 0.25) if opts.quick else (opts.runs, 1.0)
    interrupt_on_sigterm()
    load_at_start = os.getloadavg()
    failures: list[str] = []
    samples: dict[str, list[float]] = {
        k: [] for k in ("driver_cold_s", "skopeo_cold_s", "driver_warm_s", "skopeo_warm_s", "unpack_s", "tar_s")
    }
    requests: dict[str, list[int]] = {"driver_warm": [], "skopeo_warm": [], "driver_cold": [], "skopeo_cold": []}
    result: dict[str, Any] = {"runs": runs, "loadavg_at_start": load_at_start}
    work = Path(tempfile.mkdtemp(prefix="rkt-bench-pull-"))
    registry: RegistryServer | None = None

    def attempt(work_: Callable[[], object]) -> None:
        try:
            work_()
        except Exception as exc:  # any failure of a subject is reported, the run goes on
            failures.append(f"{type(exc).__name__}: {exc}")
            print(f"FAILURE: {type(exc).__name__}: {exc}", file=sys.stderr)

    try:
        built: BuiltImage = build_image(work / "layout", random_layers(1, scale), tag=TAG)
        blob_sizes = [(work / "layout" / "blobs" / d.replace(":", "/")).stat().st_size for d in built.layer_digests]
        result["image"] = {
            "layers": len(built.layer_digests),
            "compressed_bytes": blob_sizes,
            "uncompressed_bytes": [len(t) for t in built.layer_tars],
        }
        print(f"image: {len(blob_sizes)} layers, {sum(blob_sizes) / 1e6:.1f} MB gzip'd", file=sys.stderr, flush=True)
        del built
        with running_registry(work) as reg:
            registry = reg
            reg.push(f"oci:{work / 'layout'}:{TAG}", f"{REPOSITORY}:{TAG}")
            source = f"docker://{reg.host}/{REPOSITORY}:{TAG}"
            ref = parse_reference(source)
            assert isinstance(ref, DockerReference)
            stores: list[Store] = []

            def cold_driver(i: int) -> None:
                before = registry_requests(reg)
                store = Store(work / f"store-{i}")
                stores.append(store)
                elapsed, _ = driver_pull(store, ref)
                samples["driver_cold_s"].append(elapsed)
                requests["driver_cold"].append(registry_requests(reg) - before)

            def cold_skopeo(i: int) -> None:
                before = registry_requests(reg)
                samples["skopeo_cold_s"].append(skopeo_copy(source, work / f"oci-{i}"))
                requests["skopeo_cold"].append(registry_requests(reg) - before)

            def warm_driver(i: int) -> None:
                before = registry_requests(reg)
                elapsed, _ = driver_pull(stores[-1], ref)
                samples["driver_warm_s"].append(elapsed)
                requests["driver_warm"].append(registry_requests(reg) - before)

            def warm_skopeo(i: int) -> None:
                before = registry_requests(reg)
                samples["skopeo_warm_s"].append(skopeo_copy(source, work / f"oci-{i}"))
                requests["skopeo_warm"].append(registry_requests(reg) - before)

            def unpack(i: int) -> None:
                store = stores[-1]
                record = store.lookup_image(str(ref))
                assert record is not None
                samples["unpack_s"].append(driver_unpack(store, record))

            def tar(i: int) -> None:
                store = stores[-1]
                record = store.lookup_image(str(ref))
                assert record is not None
                samples["tar_s"].append(tar_unpack(store, record, work / f"tar-{i}"))

            # warm-up (page cache, registry, imports), not recorded
            with Store(work / "store-warmup") as store:
                driver_pull(store, ref)
            skopeo_copy(source, work / "oci-warmup")
            pairs: list[tuple[Callable[[int], None], Callable[[int], None]]] = [
                (cold_driver, cold_skopeo),
                (warm_driver, warm_skopeo),
                (unpack, tar),
            ]
            for i in range(runs):
                for subject, floor in pairs:
                    for step in (subject, floor) if i % 2 == 0 else (floor, subject):
                        attempt(functools.partial(step, i))
                for store in stores:  # keep the disk use of one run
                    store.close()
                    shutil.rmtree(store.root, ignore_errors=True)
                stores.clear()
                shutil.rmtree(work / f"oci-{i}", ignore_errors=True)
                print(f"run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    except Exception as exc:
        failures.append(f"set-up: {type(exc).__name__}: {exc}")
        print(f"FAILURE: set-up: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        left = []
        if registry is not None and registry._proc is not None and registry._proc.poll() is None:
            left.append(f"docker-registry pid {registry._proc.pid}")
            registry.kill()
        shutil.rmtree(work, ignore_errors=True)
        if work.exists():
            left.append(f"temp dir {work}")
        if left:
            failures.append(f"left behind: {left}")
    result["samples"] = samples
    result["registry_requests"] = requests
    result["summary"] = {k: summary(v) for k, v in samples.items()}
    result["machine"] = machine(skopeo=first_line("skopeo", "--version"), tar=first_line("tar", "--version"))
    result["failures"] = failures
    report(result)
    write_result(result, opts.output)
    return 1 if failures else 0


def report(result: dict[str, Any]) -> None:
    where, stats = result["machine"], result["summary"]
    image = result.get("image", {})
    compressed, raw = sum(image.get("compressed_bytes", [0])), sum(image.get("uncompressed_bytes", [0]))
    print(
        f"\n{result['runs']} runs, {where['nproc']} cores, {where['cpu']}, "
        f"load {result['loadavg_at_start'][0]:.1f} -> {where['loadavg_at_end'][0]:.1f}; image "
        f"{image.get('layers', '?')} layers, {compressed / 1e6:.1f} MB gzip'd, {raw / 1e6:.1f} MB tar"
    )
    print(f"{'(seconds)':24}{'median':>8}{'p90':>8}{'min':>8}{'MB/s':>8}  registry requests")
    ratios: dict[str, float] = {}
    for subject, floor, label, size in (
        ("driver_cold_s", "skopeo_cold_s", "cold pull", compressed),
        ("driver_warm_s", "skopeo_warm_s", "warm pull", 0),
        ("unpack_s", "tar_s", "unpack", raw),
    ):
        for key, who in ((floor, "floor"), (subject, "driver")):
            s = stats.get(key)
            if not s:
                continue
            rate = f"{size / 1e6 / s['median']:8.1f}" if size else f"{'':8}"
            counted = result["registry_requests"].get(key.removesuffix("_s"), [])
            reqs = f"  {statistics.median(counted):.0f}" if counted else ""
            name = f"{label} {who}: {key.split('_')[0]}"
            print(f"{name:24}" + "".join(f"{s[k]:8.3f}" for k in ("median", "p90", "min")) + rate + reqs)
        if stats.get(subject) and stats.get(floor):
            ratios[label] = stats[subject]["median"] / stats[floor]["median"]
            print(f"  {label} driver / floor: {ratios[label]:.2f}x (medians)")
    result["ratios"] = ratios
    if "cold pull" in ratios:
        met = ratios["cold pull"] <= GOAL_COLD_RATIO
        result["goal"] = {"cold_ratio": ratios["cold pull"], "limit": GOAL_COLD_RATIO, "met": met}
        print(f"goal cold pull <= {GOAL_COLD_RATIO}x skopeo: {'met' if met else 'NOT met'}")
    if result["failures"]:
        print(f"\n{len(result['failures'])} failure(s):", *result["failures"], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
