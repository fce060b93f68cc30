"""The image store's disk budget (``gc { image_store_max }``) and on-demand ``image gc``.

Accounting: every image occupies *parts*: its blobs (manifest, index, config, layer tarballs) and
its unpacked layers, each counted as ``du`` would (allocated blocks). A part shared by several
images is counted once in the store's total; an image's *unique* bytes are those of the parts no
other image has, which is exactly what removing it frees. Temp files of pulls in flight are not
counted (they become parts, and count, once the pull saves its record).

Eviction order is least recently used first: an image's last use is when a task last started from
it (or when it was stored). Images in use (:meth:`Store.image_in_use`) are never candidates. With a
budget, an image whose every part is also held by an image that stays is not removed, since that
would free nothing and only cost the next start a pull.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nomad_rkt_driver.config.sizes import format_size
from nomad_rkt_driver.images.store import EVICT_LOCK, LockTimeout, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageUsage:
    """One image as the budget sees it: its name, last use and parts (see the module docstring)."""

    name: str
    last_used: float
    parts: frozenset[str]


@dataclass
class Usage:
    """The whole store: every image, the size of every part, and why the busy ones must stay."""

    images: list[ImageUsage]
    sizes: dict[str, int]
    busy: dict[str, str] = field(default_factory=dict)  # image name -> why it is in use

    @property
    def total(self) -> int:
        """Bytes of every part some image holds, shared parts once."""
        held = {p for image in self.images for p in image.parts}
        return sum(self.sizes.get(p, 0) for p in held)

    def unique(self, name: str) -> int:
        """Bytes only image ``name`` holds: what removing it frees."""
        counts = Counter(p for image in self.images for p in image.parts)
        mine = next((image.parts for image in self.images if image.name == name), frozenset())
        return sum(self.sizes.get(p, 0) for p in mine if counts[p] == 1)

    def size(self, name: str) -> int:
        """Bytes of all of image ``name``'s parts, shared ones included."""
        mine = next((image.parts for image in self.images if image.name == name), frozenset())
        return sum(self.sizes.get(p, 0) for p in mine)


@dataclass(frozen=True)
class Removal:
    """What one :func:`collect` pass did (or, with ``dry_run``, would do)."""

    removed: list[tuple[str, int]]  # image name, bytes freed
    kept: dict[str, str]  # image name -> why it stays (in use)
    total_before: int
    total_after: int
    budget: int | None
    leftovers: int = 0  # bytes of blobs and layers no record named (a crash, a race), swept too

    @property
    def freed(self) -> int:
        return sum(n for _, n in self.removed)


def plan(
    images: Sequence[ImageUsage], sizes: Mapping[str, int], budget: int | None, busy: Collection[str]
) -> list[str]:
    """The images to remove, in order: least recently used first, never one in ``busy``.

    Without a budget (``None``): every image not in ``busy``. With one: as few as it takes, in LRU
    order, to bring the total to ``budget`` or below (or as far as possible), and not those whose
    every part stays held by an image that is kept.
    """
    order = sorted((i for i in images if i.name not in busy), key=lambda i: (i.last_used, i.name))
    if budget is None:
        return [i.name for i in order]
    counts = Counter(p for image in images for p in image.parts)
    total = sum(sizes.get(p, 0) for p in counts)
    chosen: list[ImageUsage] = []
    for image in order:
        if total <= budget:
            break
        chosen.append(image)
        for part in image.parts:
            counts[part] -= 1
            if counts[part] == 0:
                total -= sizes.get(part, 0)
    return [i.name for i in chosen if any(counts[p] == 0 for p in i.parts)]


def usage(store: Store, referenced: Collection[str] = (), *, in_use: bool = True) -> Usage:
    """Measure the store: images, part sizes, and (unless ``in_use`` is False) which are in use now."""
    mounts = Path("/proc/mounts").read_text()
    images: list[ImageUsage] = []
    sizes: dict[str, int] = {}
    busy: dict[str, str] = {}
    for record in store.list_images():
        parts = store.parts(record)
        for part in parts:
            if part not in sizes:
                sizes[part] = store.part_size(part)
        images.append(ImageUsage(record.name, store.last_used(record.name) or record.pulled_at, frozenset(parts)))
        reason = store.image_in_use(record, referenced, mounts) if in_use else None
        if reason is not None:
            busy[record.name] = reason
    return Usage(images, sizes, busy)


def collect(
    store: Store,
    *,
    budget: int | None,
    referenced: Callable[[], Collection[str]] = frozenset,
    dry_run: bool = False,
    wait: float | None = None,
) -> Removal | None:
    """Remove unused images: down to ``budget`` bytes (LRU first), or all of them when it is None.

    Runs under the store's eviction lock (one pass at a time, across processes); returns None when
    another pass holds it, or a pull or import is writing to the store, for longer than ``wait``
    seconds (None: wait as long as it takes). The plugin passes 0: a start never waits for a pull
    of another image, and that pull is followed by a pass of its own. Images found in use
    meanwhile are skipped; the pass plans again without them.
    """
    try:
        with store.lock(EVICT_LOCK, timeout=wait):
            return _collect(store, budget, referenced, dry_run, wait)
    except LockTimeout:
        log.debug("image store budget: another pass, or a pull, holds the store; the pass after it takes over")
        return None


def _collect(
    store: Store, budget: int | None, referenced: Callable[[], Collection[str]], dry_run: bool, wait: float | None
) -> Removal:
    measured = usage(store, in_use=False)  # the common case, under budget, needs no more
    before = measured.total
    if budget is not None and before <= budget:
        return Removal([], {}, before, before, budget)
    measured = usage(store, referenced())
    leftovers = 0 if dry_run else store.sweep_unreferenced(timeout=wait)
    busy = dict(measured.busy)
    removed: list[tuple[str, int]] = []
    while True:
        names = plan(measured.images, measured.sizes, budget, busy)
        if dry_run:
            removed = [(name, _freed_by(measured, names, name)) for name in names]
            after = before - sum(n for _, n in removed)
            break
        if not names:
            after = measured.total
            break
        refused = False
        for name in names:
            parts = next(i.parts for i in measured.images if i.name == name)
            last = store.last_used(name)
            reason = store.remove_unused_image(name, referenced(), timeout=wait)
            if reason is not None:  # in use since it was measured: plan again without it
                busy[name] = reason
                refused = True
                break
            freed = sum(measured.sizes.get(p, 0) for p in parts if not _present(store, p))
            removed.append((name, freed))
            log.info(
                "image removed: %s",
                "over the image store budget" if budget is not None else "unused",
                extra={"image": name, "freed_bytes": freed, "last_used": last, "budget": budget},
            )
        measured = usage(store, referenced())
        busy.update(measured.busy)
        if not refused:
            after = measured.total
            break
    kept = {name: reason for name, reason in busy.items() if any(i.name == name for i in measured.images)}
    if budget is not None and after > budget:
        log.warning(
            "image store is over its budget: every image left is in use",
            extra={
                "store_bytes": after,
                "budget": budget,
                "over": format_size(after - budget),
                "in_use": ", ".join(sorted(kept)),
            },
        )
    return Removal(removed, kept, before, after, budget, leftovers)


def _freed_by(measured: Usage, names: list[str], name: str) -> int:
    """Bytes removing ``name`` frees once all of ``names`` are gone (dry runs), shared parts to the last."""
    gone = set(names)
    kept_parts = {p for i in measured.images if i.name not in gone for p in i.parts}
    order = names.index(name)
    later = {p for i in measured.images if i.name in set(names[order + 1 :]) for p in i.parts}
    mine = next(i.parts for i in measured.images if i.name == name)
    return sum(measured.sizes.get(p, 0) for p in mine if p not in kept_parts and p not in later)


def _present(store: Store, part: str) -> bool:
    if part.startswith("layer:"):
        return store.layer_dir(part.removeprefix("layer:")).is_dir()
    return store.has_blob(part)
