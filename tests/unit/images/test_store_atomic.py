"""The content-addressed store: nothing partial ever becomes visible, and concurrent writers agree."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_rkt_driver.errors import InvalidArgument, NotFound
from nomad_rkt_driver.images.store import (
    BlobNotFound,
    DigestMismatch,
    ImageRecord,
    LayerRef,
    LockTimeout,
    Store,
)

REPO = Path(__file__).resolve().parents[3]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "images") as s:
        yield s


def visible_files(store: Store) -> list[str]:
    """Every file under blobs/, layers/ and records/ (what readers could see)."""
    found = []
    for sub in ("blobs", "layers", "records"):
        found += [str(p.relative_to(store.root)) for p in (store.root / sub).rglob("*") if not p.is_dir()]
    return found


def temp_files(store: Store) -> list[Path]:
    return [p for p in (store.root / "tmp").rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_put_read_has_and_paths(store: Store) -> None:
    digest = store.put_bytes(b"hello")
    assert digest == sha(b"hello")
    assert store.has_blob(digest) and store.read_bytes(digest) == b"hello"
    assert store.blob_path(digest) == store.root / "blobs" / "sha256" / digest.split(":")[1]
    assert oct(store.blob_path(digest).stat().st_mode & 0o777) == "0o444"
    with store.open_blob(digest) as f:
        assert f.read() == b"hello"
    assert store.put_bytes(b"hello", digest) == digest  # storing again is a no-op


def test_missing_and_malformed_digests(store: Store) -> None:
    missing = sha(b"nothing")
    assert not store.has_blob(missing)
    for call in (store.blob_path, store.read_bytes, store.open_blob):
        with pytest.raises(BlobNotFound, match=missing):
            call(missing)
    assert issubclass(BlobNotFound, NotFound)
    for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "nocolon"):
        with pytest.raises(InvalidArgument, match="invalid digest"):
            store.has_blob(bad)


def test_sha512_digests_work(store: Store) -> None:
    digest = "sha512:" + hashlib.sha512(b"aci").hexdigest()
    assert store.put_bytes(b"aci", digest) == digest and store.read_bytes(digest) == b"aci"


def test_an_exception_mid_ingest_leaves_nothing(store: Store) -> None:
    data = os.urandom(3 << 20)
    digest = sha(data)
    with pytest.raises(RuntimeError, match="connection dropped"), store.ingest(digest, len(data)) as blob:
        blob.write(data[: 1 << 20])
        assert blob.bytes_written == 1 << 20 and temp_files(store)
        raise RuntimeError("connection dropped")
    assert not store.has_blob(digest) and visible_files(store) == [] and temp_files(store) == []


@pytest.mark.parametrize(
    ("content", "size", "fragment"),
    [
        (b"tampered", None, "got sha256:"),
        (b"hello!", 5, "more than the 5 bytes announced"),
        (b"hell", 5, "4 bytes instead of the 5 announced"),
    ],
)
def test_digest_or_size_mismatch_leaves_nothing(store: Store, content: bytes, size: int | None, fragment: str) -> None:
    digest = sha(b"hello")
    with pytest.raises(DigestMismatch) as caught, store.ingest(digest, size) as blob:
        blob.write(content)
    assert digest in str(caught.value) and fragment in str(caught.value) and "nothing was stored" in str(caught.value)
    assert visible_files(store) == [] and temp_files(store) == []
    with pytest.raises(DigestMismatch):
        store.put_bytes(b"other", digest)
    assert visible_files(store) == []


def test_ingest_file_streams_a_file(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(5 << 20))
    digest = sha(source.read_bytes())
    with source.open("rb") as f:
        assert store.ingest_file(digest, f, size=5 << 20) == store.blob_path(digest)
    assert store.blob_path(digest).read_bytes() == source.read_bytes()


def test_threads_ingesting_one_digest_end_with_one_blob(store: Store) -> None:
    data = os.urandom(2 << 20)
    digest, errors = sha(data), []
    barrier = threading.Barrier(4)

    def write() -> None:
        try:
            barrier.wait()
            with store.ingest(digest, len(data)) as blob:
                for i in range(0, len(data), 1 << 16):
                    blob.write(data[i : i + (1 << 16)])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.read_bytes(digest) == data
    assert visible_files(store) == [f"blobs/sha256/{digest.split(':')[1]}"] and temp_files(store) == []


WRITER = textwrap.dedent(
    """
    import sys, time
    from nomad_rkt_driver.images.store import Store
    root, digest, path = sys.argv[1:4]
    data = open(path, "rb").read()
    with Store(root) as store, store.ingest(digest, len(data)) as blob:
        print("started", flush=True)
        for i in range(0, len(data), 1 << 18):
            blob.write(data[i : i + (1 << 18)])
            time.sleep(0.01)
    print("done", flush=True)
    """
)


def test_two_processes_ingesting_one_digest_end_with_one_blob(tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    source = tmp_path / "data"
    source.write_bytes(data)
    root, digest = tmp_path / "images", sha(data)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), digest, str(source)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with Store(root) as store:
        assert store.read_bytes(digest) == data
        assert visible_files(store) == [f"blobs/sha256/{digest.split(':')[1]}"] and temp_files(store) == []


CRASHER = textwrap.dedent(
    """
    import os, sys
    from nomad_rkt_driver.images.store import Store
    store = Store(sys.argv[1])
    ingest = store.ingest("sha256:" + "0" * 64)
    writer = ingest.__enter__()
    writer.write(b"half a blob")
    (store.root / "layers" / "sha256").mkdir(parents=True, exist_ok=True)
    print(store._tmp, flush=True)
    os._exit(9)  # a crash: no cleanup, no close
    """
)


def test_a_crashed_writer_leaves_no_blob_and_its_temp_is_cleaned_on_open(tmp_path: Path) -> None:
    root = tmp_path / "images"
    live = Store(root)  # a live store in another "process" keeps its temp dir
    try:
        with live.ingest(sha(b"x")) as blob:
            blob.write(b"x")
            done = subprocess.run([sys.executable, "-c", CRASHER, str(root)], capture_output=True, text=True, cwd=REPO)
            assert done.returncode == 9, done.stderr
            crashed_tmp = Path(done.stdout.strip())
            assert crashed_tmp.is_dir() and any(crashed_tmp.iterdir())
            with Store(root) as reopened:
                assert not crashed_tmp.exists() and not Path(f"{crashed_tmp}.lock").exists()
                assert live._tmp.is_dir() and any(live._tmp.iterdir())  # still being written: kept
                assert not reopened.has_blob("sha256:" + "0" * 64)
        assert live.has_blob(sha(b"x"))
    finally:
        live.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from nomad_rkt_driver.images.store import Store
    with Store(sys.argv[1]) as store, store.lock("docker://busybox"):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def test_lock_excludes_other_processes_and_threads(tmp_path: Path, store: Store) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeout, match="docker://busybox"), store.lock("docker://busybox", timeout=0.2):
            pass
        with store.lock("docker://other", timeout=0.2):
            pass
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    with store.lock("docker://busybox", timeout=5):
        inner_got_it = []
        t = threading.Thread(target=lambda: _try_lock(store, inner_got_it))
        t.start()
        t.join()
        assert inner_got_it == [False]


def _try_lock(store: Store, result: list[bool]) -> None:
    try:
        with store.lock("docker://busybox", timeout=0.1):
            result.append(True)
    except LockTimeout:
        result.append(False)


def _record(store: Store, name: str, *payloads: bytes) -> ImageRecord:
    digests = [store.put_bytes(p) for p in payloads]
    layers = tuple(
        LayerRef(d, "application/vnd.oci.image.layer.v1.tar", len(p))
        for d, p in zip(digests[2:], payloads[2:], strict=True)
    )
    record = ImageRecord(name=name, manifest_digest=digests[0], config_digest=digests[1], layers=layers, pulled_at=1.5)
    store.save_image(name, record)
    return record


def test_records_round_trip_and_list(store: Store) -> None:
    a = _record(store, "docker://docker.io/library/a:latest", b"m-a", b"c-a", b"shared", b"only-a")
    b = _record(store, "oci:/srv/b:v1", b"m-b", b"c-b", b"shared")
    assert store.lookup_image(a.name) == a and store.lookup_image("docker://nope") is None
    assert [r.name for r in store.list_images()] == [a.name, b.name]
    assert not [p for p in (store.root / "records").iterdir() if not p.name.endswith(".json")]


def test_a_record_never_points_at_missing_blobs(store: Store) -> None:
    record = ImageRecord("x", sha(b"m"), sha(b"c"), (), 0.0)
    with pytest.raises(BlobNotFound):
        store.save_image("x", record)
    with pytest.raises(InvalidArgument, match="cannot be saved as"):
        store.save_image("y", record)
    assert store.list_images() == []


def test_remove_image_keeps_blobs_other_images_use(store: Store) -> None:
    a = _record(store, "a", b"m-a", b"c-a", b"shared", b"only-a")
    b = _record(store, "b", b"m-b", b"c-b", b"shared")
    assert store.remove_image("a") and not store.remove_image("a")
    assert store.lookup_image("a") is None and store.lookup_image("b") == b
    assert not store.has_blob(a.manifest_digest) and not store.has_blob(a.layers[1].digest)
    assert store.has_blob(a.layers[0].digest)
    assert store.remove_image("b") and visible_files(store) == []
