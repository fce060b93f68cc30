"""The image store's disk budget on real images (busybox-static OCI layouts, imported and unpacked
for real): LRU eviction, pinned images kept, shared layers kept, nothing partial left, and safety
against another process that imports images while we evict."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import WHERE, PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.imaging import Images, ReadyImage
from nomad_rkt_driver.images import gc
from nomad_rkt_driver.images.pull import Puller
from nomad_rkt_driver.images.store import GC_LOCK, Store
from tests.imagebuild import busybox_variants

REPO = Path(__file__).resolve().parents[3]
UNIQUE = 4 << 20  # random bytes per image: 4 MiB in its layer blob, 4 MiB more unpacked
MiB = 1 << 20


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One OCI layout with images a..e: the same busybox base layer, and a layer of their own."""
    return busybox_variants(tmp_path_factory.mktemp("budget") / "layout", "abcde", UNIQUE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "images", durable=False) as opened:
        yield opened


def name(layout: Path, tag: str) -> str:
    return f"oci:{layout}:{tag}"


def plugin_config(budget: str | None) -> PluginConfig:
    return decode(PluginConfig, {"gc": {"image_store_max": budget}} if budget else {}, WHERE)


def prepare(images: Images, layout: Path, tag: str, budget: str | None) -> ReadyImage:
    task = decode(TaskConfig, {"image": name(layout, tag), "insecure_options": ["image"]}, "task config")
    return images.prepare(task, plugin_config(budget), "task config")


def use(images: Images, layout: Path, tag: str, budget: str | None) -> None:
    """A task starts from the image and is done with it."""
    prepare(images, layout, tag, budget).release()
    time.sleep(0.01)  # distinct last-use times even on coarse clocks


def stored(store: Store) -> set[str]:
    return {record.name for record in store.list_images()}


def consistent(store: Store) -> None:
    """Every record's blobs and unpacked layers are there, nothing else is, and no temp is left."""
    records = store.list_images()
    blobs = {d for r in records for d in r.blobs}
    layers = {layer.digest for r in records for layer in r.layers}
    on_disk = {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}
    unpacked = {f"sha256:{p.name}" for p in (store.root / "layers" / "sha256").iterdir()}
    assert on_disk == blobs, "blobs of removed images are gone, blobs of kept ones stay"
    assert unpacked == layers, "unpacked layers likewise"
    sizes = store.root / "sizes" / "sha256"
    if sizes.is_dir():
        assert {f"sha256:{p.name}" for p in sizes.iterdir()} <= layers, "size notes go with their layer"
    assert [p for p in (store.root / "tmp").rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_accounting_counts_shared_layers_once(store: Store, layout: Path) -> None:
    images = Images(store, Puller(store))
    for tag in "ab":
        use(images, layout, tag, None)
    measured = gc.usage(store)
    a, b = name(layout, "a"), name(layout, "b")
    assert UNIQUE * 2 <= measured.unique(a) < UNIQUE * 2 + MiB  # its data layer: blob + unpacked
    base = measured.size(a) - measured.unique(a)
    assert base > 2 * 1_900_000, "the busybox layer, blob and unpacked, is shared"
    assert measured.total == measured.unique(a) + measured.unique(b) + base
    du = subprocess.run(["du", "-s", "-B1", str(store.root / "layers")], capture_output=True, text=True, check=True)
    unpacked = sum(store.part_size(p) for p in measured.sizes if p.startswith("layer:"))
    assert abs(int(du.stdout.split()[0]) - unpacked) < 64 * 1024, "layer sizes agree with du"


def test_least_recently_used_images_are_evicted_down_to_the_budget(store: Store, layout: Path) -> None:
    images = Images(store, Puller(store))
    # each image: the shared base (~3.9 MiB) and 8 MiB of its own; three fit in 30 MiB, four do not
    use(images, layout, "a", "30MiB")
    use(images, layout, "b", "30MiB")
    use(images, layout, "c", "30MiB")
    assert stored(store) == {name(layout, t) for t in "abc"}
    use(images, layout, "a", "30MiB")  # a is used again: b is now the least recently used
    use(images, layout, "d", "30MiB")
    assert stored(store) == {name(layout, t) for t in "acd"}
    use(images, layout, "e", "22MiB")  # a lower budget: two go, LRU first (c, then a)
    assert stored(store) == {name(layout, t) for t in "de"}
    assert gc.usage(store).total <= 22 * MiB
    consistent(store)
    ready = prepare(images, layout, "d", "22MiB")  # the shared base layer is still there for the kept ones
    try:
        assert all(d.is_dir() for d in ready.lower_dirs) and (ready.lower_dirs[-1] / "bin" / "busybox").is_file()
    finally:
        ready.release()


def test_pinned_images_survive_and_the_budget_warns(
    store: Store, layout: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = Images(store, Puller(store))
    held = [prepare(images, layout, tag, "14MiB") for tag in "abc"]  # three starts in flight
    try:
        assert stored(store) == {name(layout, t) for t in "abc"}, "an image a start pinned is never evicted"
        assert "every image left is in use" in caplog.text
        assert gc.usage(store).busy == {name(layout, t): "a task is starting from it" for t in "abc"}
    finally:
        for ready in held:
            ready.release()
    assert images.enforce_budget() is not None
    assert stored(store) == {name(layout, "c")}, "released, the least recently used go"
    consistent(store)


def test_images_the_caller_references_are_kept(store: Store, layout: Path) -> None:
    running = {name(layout, "a")}
    images = Images(store, Puller(store), referenced=lambda: running)
    for tag in "abc":
        use(images, layout, tag, "22MiB")
    assert stored(store) == {name(layout, t) for t in "ac"}
    consistent(store)


def test_dry_run_removes_nothing_and_gc_frees_what_it_says(store: Store, layout: Path) -> None:
    images = Images(store, Puller(store))
    for tag in "abc":
        use(images, layout, tag, None)
    before = gc.usage(store)
    planned = gc.collect(store, budget=None, dry_run=True)
    assert planned is not None and [n for n, _ in planned.removed] == [name(layout, t) for t in "abc"]
    assert stored(store) == {name(layout, t) for t in "abc"} and gc.usage(store).total == before.total
    assert planned.freed == before.total
    done = gc.collect(store, budget=None)
    assert done is not None and done.removed == planned.removed and done.freed == before.total
    assert stored(store) == set() and done.total_after == 0
    consistent(store)
    assert list((store.root / "layers" / "sha256").iterdir()) == []


def test_the_budget_notices_images_another_process_added(store: Store, layout: Path) -> None:
    first = Images(store, Puller(store))
    use(first, layout, "a", "14MiB")  # one image fits
    assert first.enforce_budget() is None, "nothing came or went since the store fit: no pass"
    other = Images(store, Puller(store))  # another plugin or `fetch`, without a budget
    use(other, layout, "b", None)
    assert stored(store) == {name(layout, t) for t in "ab"}
    result = first.enforce_budget()
    assert result is not None and [n for n, _ in result.removed] == [name(layout, "a")]
    consistent(store)


def test_a_pass_never_waits_for_a_pull_of_another_image(store: Store, layout: Path) -> None:
    images = Images(store, Puller(store))
    for tag in "abc":
        use(images, layout, tag, None)
    with store.lock(GC_LOCK, shared=True):  # what a pull or import holds while it writes
        started = time.monotonic()
        assert gc.collect(store, budget=1, wait=0) is None
        assert time.monotonic() - started < 1
        assert stored(store) == {name(layout, t) for t in "abc"}
    done = gc.collect(store, budget=14 * MiB, wait=0)  # the pass after the pull
    assert done is not None and [n for n, _ in done.removed] == [name(layout, "a"), name(layout, "b")]
    consistent(store)


IMPORTER = textwrap.dedent(
    """
    import sys, time
    from nomad_rkt_driver.config.decode import decode
    from nomad_rkt_driver.config.plugin import PluginConfig
    from nomad_rkt_driver.config.task import TaskConfig
    from nomad_rkt_driver.driver.imaging import Images
    from nomad_rkt_driver.images.pull import Puller
    from nomad_rkt_driver.images.store import GC_LOCK, Store

    root, layout, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(root, durable=False)
    images = Images(store, Puller(store))
    plugin = PluginConfig()
    for i in range(rounds):
        tag = "ab"[i % 2]
        task = decode(TaskConfig, {"image": f"oci:{layout}:{tag}", "insecure_options": ["image"]}, "t")
        ready = images.prepare(task, plugin, "t")
        missing = [str(d) for d in ready.lower_dirs if not (d / "bin").is_dir() and not (d / "data").is_dir()]
        if missing or store.lookup_image(ready.record.name) != ready.record:
            print("BROKEN", missing, flush=True)
            sys.exit(1)
        ready.release()
    print("OK", flush=True)
    """
)


def test_eviction_is_safe_while_another_process_imports(store: Store, layout: Path) -> None:
    rounds = 12
    importer = subprocess.Popen(
        [sys.executable, "-c", IMPORTER, str(store.root), str(layout), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    passes = removed = 0
    while importer.poll() is None:
        result = gc.collect(store, budget=None)  # everything not pinned, again and again
        assert result is not None
        passes += 1
        removed += len(result.removed)
    out, err = importer.communicate()
    assert importer.returncode == 0 and "OK" in out, out + err
    assert passes > 1 and removed >= 1, "the eviction really raced the imports"
    final = gc.collect(store, budget=None)
    assert final is not None and stored(store) == set()
    consistent(store)
