"""Pull a registry image into the content-addressed store.

One pull: resolve the manifest (a list → this host's platform), store manifest and config,
download the missing layers in parallel (bounded) through the store's verifying writer, then
save the image record. Concurrent pulls of one reference coalesce on a store lock; blobs
already stored are never downloaded again; after any failure only complete, verified blobs
are left. An overall deadline and an activity timeout (no bytes for N seconds) bound a pull.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Final

import requests

from nomad_rkt_driver.errors import FailedPrecondition

from .auth import Credentials
from .manifest import (
    ACCEPTED_MANIFEST_TYPES,
    Descriptor,
    ImageManifest,
    InvalidManifest,
    ManifestList,
    parse_manifest,
    select_platform,
)
from .platform import Platform, host_platform
from .reference import DockerReference
from .registry import RegistryClient
from .store import GC_LOCK, ImageRecord, LayerRef, Store

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S: Final = 0.25
CONFIG_MAX_BYTES: Final = 8 * 1024 * 1024


class PullTimeout(FailedPrecondition):
    """The pull ran past ``image_pull_timeout`` or saw no bytes for the activity timeout."""

    recoverable = True


class PullCancelled(FailedPrecondition):
    """Another layer of the same pull failed; this download stopped early."""

    recoverable = True


@dataclass(frozen=True)
class PullProgress:
    """A snapshot of one pull for task events; ``done`` is set on the last one (100 %)."""

    reference: str
    layers_done: int
    layers_total: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_s: float
    done: bool = False

    @property
    def percent(self) -> float:
        """Bytes done as a percentage of all layer bytes (100 when there are none)."""
        return 100.0 if self.bytes_total == 0 else 100.0 * self.bytes_done / self.bytes_total


class Puller:
    """Pulls registry images into ``store``; one instance may serve many threads at once."""

    def __init__(
        self,
        store: Store,
        *,
        max_parallel_layers: int = 3,
        activity_timeout_s: float = 120.0,
        platform: Platform | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.store = store
        self.max_parallel_layers = max(1, max_parallel_layers)
        self.activity_timeout_s = activity_timeout_s
        self.platform = platform or host_platform()
        self._session = session

    def pull(
        self,
        ref: DockerReference,
        *,
        insecure_http: bool,
        tls_verify: bool | str,
        credentials: Credentials | None,
        force: bool = False,
        timeout_s: float = 300.0,
        progress: Callable[[PullProgress], None] | None = None,
    ) -> ImageRecord:
        """Make ``ref`` present in the store and return its record.

        Without ``force`` a stored, complete image is returned without any network traffic.
        With ``force`` the manifests are fetched again, but stored blobs are not. Raises the
        registry client's errors, InvalidManifest, PlatformNotFound, DigestMismatch, StoreFull,
        PullTimeout (recoverable).
        """
        name = str(ref)
        if not force and (stored := self._complete_record(name)) is not None:
            return stored
        deadline = time.monotonic() + timeout_s
        with self.store.lock(f"pull {name}", timeout=timeout_s):
            if not force and (stored := self._complete_record(name)) is not None:
                log.info("image %s: pulled meanwhile by a concurrent pull", name)
                return stored
            with (
                self.store.lock(GC_LOCK, shared=True, timeout=max(0.0, deadline - time.monotonic())),
                RegistryClient(
                    ref.api_host,
                    insecure_http=insecure_http,
                    tls_verify=tls_verify,
                    credentials=credentials,
                    timeout_s=min(self.activity_timeout_s, timeout_s),
                    session=self._session,
                ) as client,
            ):
                job = _PullJob(self, client, ref, deadline, _Tracker(name, progress))
                return job.run()

    def _complete_record(self, name: str) -> ImageRecord | None:
        record = self.store.lookup_image(name)
        if record is None or not all(self.store.has_blob(d) for d in record.blobs):
            return None
        return record


class _Tracker:
    """Counts layers and bytes across download threads and emits throttled PullProgress."""

    def __init__(self, name: str, callback: Callable[[PullProgress], None] | None) -> None:
        self.name = name
        self._callback = callback
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_emit = 0.0
        self.layers_total = self.layers_done = self.bytes_total = self.bytes_done = 0

    def start(self, layers: tuple[Descriptor, ...]) -> None:
        with self._lock:
            self.layers_total = len(layers)
            self.bytes_total = sum(layer.size for layer in layers)
        self._emit(force=True)

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_done += count
        self._emit()

    def layer_done(self, layer: Descriptor, downloaded: int) -> None:
        with self._lock:
            self.layers_done += 1
            self.bytes_done += layer.size - downloaded  # a skipped layer counts whole
        self._emit(force=self.layers_done == self.layers_total)

    def _emit(self, *, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_emit < PROGRESS_INTERVAL_S:
                return
            self._last_emit = now
            done = self.layers_total > 0 and self.layers_done == self.layers_total
            snapshot = PullProgress(
                self.name, self.layers_done, self.layers_total, self.bytes_done, self.bytes_total,
                self.bytes_done / max(now - self._started, 1e-6), done or (self.layers_total == 0 and force),
            )  # fmt: skip
        self._callback(snapshot)


class _PullJob:
    """The state of one pull of one reference (used once)."""

    def __init__(
        self, puller: Puller, client: RegistryClient, ref: DockerReference, deadline: float, tracker: _Tracker
    ) -> None:
        self.store = puller.store
        self.puller = puller
        self.client = client
        self.ref = ref
        self.name = str(ref)
        self.deadline = deadline
        self.tracker = tracker
        self.abort = threading.Event()

    def run(self) -> ImageRecord:
        index_digest, manifest_digest, manifest = self._resolve()
        config = self._fetch_config(manifest.config)
        unique_layers = tuple({layer.digest: layer for layer in manifest.layers}.values())
        self.tracker.start(unique_layers)
        self._fetch_layers(unique_layers)
        diff_ids = _diff_ids(config, len(manifest.layers))
        record = ImageRecord(
            name=self.name,
            manifest_digest=manifest_digest,
            manifest_media_type=manifest.media_type,
            config_digest=manifest.config.digest,
            layers=tuple(
                LayerRef(layer.digest, layer.media_type, layer.size, diff_ids[i] if diff_ids else None)
                for i, layer in enumerate(manifest.layers)
            ),
            index_digest=index_digest,
        )
        self.store.save_image(self.name, record)
        log.info("image %s: pulled (%d layers, manifest %s)", self.name, len(manifest.layers), manifest_digest)
        return record

    def _resolve(self) -> tuple[str | None, str, ImageManifest]:
        """Fetch the manifest (through a list if need be) and store what was fetched."""
        repo = self.ref.repository
        raw = self.client.get_manifest(repo, self.ref.reference, ACCEPTED_MANIFEST_TYPES)
        parsed = parse_manifest(raw.data, raw.media_type, source=self.name)
        index_digest = None
        if isinstance(parsed, ManifestList):
            entry = select_platform(parsed, self.puller.platform, source=self.name)
            self.store.put_bytes(raw.data, raw.digest)
            index_digest = raw.digest
            raw = self.client.get_manifest(repo, entry.digest, ACCEPTED_MANIFEST_TYPES)
            parsed = parse_manifest(raw.data, raw.media_type, source=f"{self.name} ({self.puller.platform})")
            if isinstance(parsed, ManifestList):
                raise InvalidManifest(f"{self.name}: the entry for {self.puller.platform} is itself a list; refusing")
        self.store.put_bytes(raw.data, raw.digest)
        self._check_deadline()
        return index_digest, raw.digest, parsed

    def _fetch_config(self, desc: Descriptor) -> bytes:
        if self.store.has_blob(desc.digest):
            return self.store.read_bytes(desc.digest)
        if desc.size > CONFIG_MAX_BYTES:
            raise InvalidManifest(f"{self.name}: config {desc.digest} is {desc.size} bytes; at most {CONFIG_MAX_BYTES}")
        with self.store.ingest(desc.digest, desc.size) as writer:
            self.client.fetch_blob(self.ref.repository, desc.digest, self._guarded(writer.write))
        return self.store.read_bytes(desc.digest)

    def _fetch_layers(self, layers: tuple[Descriptor, ...]) -> None:
        with ThreadPoolExecutor(self.puller.max_parallel_layers, thread_name_prefix="pull-layer") as pool:
            futures: list[Future[None]] = [pool.submit(self._fetch_layer, layer) for layer in layers]
            finished, _ = wait(futures, timeout=max(0.0, self.deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
            failed = [f for f in finished if f.exception() is not None]
            if failed or len(finished) < len(futures):
                self.abort.set()
                for future in futures:
                    future.cancel()
                wait(futures)
            first = failed[0].exception() if failed else None
            if first is not None:
                raise first
            if len(finished) < len(futures):
                raise self._timeout_error()

    def _fetch_layer(self, layer: Descriptor) -> None:
        with self.store.lock(f"blob {layer.digest}", timeout=max(0.0, self.deadline - time.monotonic())):
            if self.store.has_blob(layer.digest):
                self.tracker.layer_done(layer, 0)
                return
            downloaded = 0

            def count(chunk_bytes: int) -> None:
                nonlocal downloaded
                downloaded += chunk_bytes
                self.tracker.add_bytes(chunk_bytes)

            with self.store.ingest(layer.digest, layer.size) as writer:
                self.client.fetch_blob(self.ref.repository, layer.digest, self._guarded(writer.write), count)
            self.tracker.layer_done(layer, downloaded)

    def _guarded(self, write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """``write`` that first stops the download when the pull is aborted or past its deadline."""

        def guarded(chunk: bytes) -> None:
            if self.abort.is_set():
                raise PullCancelled(f"image {self.name}: download stopped because another part of the pull failed")
            self._check_deadline()
            write(chunk)

        return guarded

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise self._timeout_error()

    def _timeout_error(self) -> PullTimeout:
        return PullTimeout(
            f"image {self.name}: pull did not finish within image_pull_timeout "
            f"({self.tracker.bytes_done} of {self.tracker.bytes_total} layer bytes done); raise image_pull_timeout "
            "or check the registry's speed"
        )


def _diff_ids(config: bytes, layer_count: int) -> list[str] | None:
    """The config's ``rootfs.diff_ids`` when there is one per layer, else None."""
    try:
        doc = json.loads(config)
        diff_ids = doc["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(diff_ids, list) and len(diff_ids) == layer_count and all(isinstance(d, str) for d in diff_ids):
        return diff_ids
    return None
