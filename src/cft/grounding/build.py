"""The grounding stage: every image's concepts segmented into the mask store, resumable and sharded.

`cft masks` and `cft.grounding.build_masks` walk an image list in a fixed order (sorted by image id); with
torchrun each rank takes every WORLD_SIZE-th image from its RANK, so the shards are disjoint and cover every
image exactly once. Entries already in the store with the current key are skipped, so a killed run continues
where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cft.concepts.bank import ConceptBank
from cft.data.folders import ImageItem, list_images, read_image_list
from cft.data.images import load_image
from cft.distributed import Distributed
from cft.errors import CftError
from cft.grounding.store import GUIDANCE_MODES, MaskStore, class_key
from cft.io import exclusive_folder, write_json_atomic
from cft.progress import progress_bar
from cft.segmenter import IdentifiedSegmenter as Segmenter


def shard(items: Sequence[ImageItem], rank: int, world_size: int) -> list[ImageItem]:
    """Rank `rank`'s share: every `world_size`-th item of the id-sorted list, starting at `rank`."""
    return sorted(items, key=lambda it: it.image_id)[rank::world_size]


def phrases_for(bank: ConceptBank, label: str, object_masks: bool) -> tuple[list[str], dict[str, float]]:
    """The phrases to segment for an image of class `label` and their weights."""
    if object_masks:
        return [label], {label: 1.0}
    if label not in bank.concepts:
        raise CftError(f"the concept bank has no class {label!r}")
    return bank.names(label), bank.weights(label)


def _class_key(bank: ConceptBank, label: str, identity: dict[str, Any], mode: str, object_masks: bool) -> str:
    phrases, weights = phrases_for(bank, label, object_masks)
    concepts = sorted((p, float(weights.get(p, 1.0))) for p in phrases)
    return class_key(identity, mode, [*concepts, ("object", float(object_masks))])


def store_settings(segmenter: Segmenter, mode: str, object_masks: bool) -> dict[str, Any]:
    """The settings every entry of one store shares (`MaskStore.claim` and `MaskStore.differences` compare them)."""
    return {"segmenter": segmenter.identity(), "mode": mode, "object_masks": object_masks}


def open_store(
    folder: str | Path,
    bank: ConceptBank,
    segmenter: Segmenter,
    mode: str,
    object_masks: bool,
    info: dict[str, Any] | None = None,
    redo: bool = False,
) -> tuple[MaskStore, dict[str, Any]]:
    """The store at `folder`, claimed for these settings (other settings over its entries: an error, or with
    `redo` every entry removed) and described: store.json records the settings and each class's entry key, which
    every reader checks its entries against. Returns the store and what store.json holds (less its history)."""
    identity = segmenter.identity()
    keys = {label: _class_key(bank, label, identity, mode, object_masks) for label in bank.concepts}
    keys = {label: key for label, key in keys.items() if phrases_for(bank, label, object_masks)[0]}
    description = {**store_settings(segmenter, mode, object_masks), **(info or {})}
    store = MaskStore(folder)
    store.claim(description, redo=redo)
    store.describe({**description, "class_keys": keys})
    return store, description


def _batches(items: Sequence[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _check_masks(found: dict, image_size: tuple[int, int], item: ImageItem, segmenter: Segmenter) -> None:
    for phrase, value in found.items():
        mask = np.asarray(value[0])
        if mask.shape != image_size:
            raise CftError(
                f"segmenter {segmenter.name!r} returned a {mask.shape} mask for {phrase!r} on {item.image_id} "
                f"but the image is {image_size} (H, W)"
            )


@dataclass
class BuildResult:
    made: int
    skipped: int
    redone: int  # stale or corrupt entries made again
    without_concepts: list[str]  # classes with no concept in the bank: their images got no entry
    seconds: float


def build_masks(
    items: Sequence[ImageItem],
    bank: ConceptBank,
    segmenter: Segmenter,
    store: MaskStore,
    *,
    mode: str = "union",
    object_masks: bool = False,
    batch_size: int = 8,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    load: Callable[[ImageItem], Any] | None = None,
) -> BuildResult:
    """Segment this rank's share of `items` into `store`, skipping entries already done with the current key."""
    if mode not in GUIDANCE_MODES:
        raise CftError(f"guidance mode must be one of {', '.join(GUIDANCE_MODES)}, got {mode!r}")
    if batch_size < 1:
        raise CftError(f"batch_size must be >= 1, got {batch_size}")
    load = load or (lambda it: np.asarray(load_image(it.path)))
    start = time.perf_counter()
    identity = segmenter.identity()
    keys: dict[str, str] = {}
    without: set[str] = set()
    todo: list[ImageItem] = []
    skipped = redone = 0
    for item in shard(items, rank, world_size):
        phrases, weights = phrases_for(bank, item.label, object_masks)
        if not phrases:
            without.add(item.label)
            continue
        if item.label not in keys:
            keys[item.label] = _class_key(bank, item.label, identity, mode, object_masks)
        status = store.status(item.image_id, keys[item.label])
        if status == "done":
            skipped += 1
            continue
        redone += status in ("stale", "corrupt")
        todo.append(item)
    bar = _progress(len(todo), f"masks (rank {rank})" if world_size > 1 else "masks", progress)
    for batch in _batches(todo, batch_size):
        images = [load(it) for it in batch]
        phrases = [phrases_for(bank, it.label, object_masks)[0] for it in batch]
        results = segmenter.segment(images, phrases)
        if len(results) != len(batch):
            raise CftError(f"segmenter {segmenter.name!r} returned {len(results)} results for {len(batch)} images")
        for item, image, found in zip(batch, images, results, strict=True):
            size = _image_size(image)
            if size is not None:
                _check_masks(found, size, item, segmenter)
            weights = phrases_for(bank, item.label, object_masks)[1]
            store.write(item.image_id, found, key=keys[item.label], label=item.label, weights=weights, mode=mode)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return BuildResult(len(todo), skipped, redone, sorted(without), time.perf_counter() - start)


def _image_size(image: Any) -> tuple[int, int] | None:
    if hasattr(image, "size") and hasattr(image, "mode"):  # PIL
        return image.size[1], image.size[0]
    arr = np.asarray(image) if not isinstance(image, dict) else None
    return None if arr is None or arr.ndim < 2 else (int(arr.shape[0]), int(arr.shape[1]))


def _progress(total: int, desc: str, enabled: bool):
    return progress_bar(total, desc, unit="img", enabled=enabled)


def write_index(store: MaskStore, items: Sequence[ImageItem], info: dict[str, Any]) -> dict[str, Any]:
    """index.json: per-class and per-concept found rates, suspect masks and missing entries over `items`."""
    found: dict[str, dict[str, list[int]]] = {}
    suspects, missing = [], []
    for item in items:
        try:
            meta = store.read_meta(item.image_id)
        except CftError:
            missing.append(item.image_id)
            continue
        if meta.get("suspect"):
            suspects.append(item.image_id)
        per = found.setdefault(item.label, {})
        for name, c in meta.get("concepts", {}).items():
            per.setdefault(name, []).append(int(bool(c.get("found"))))
    index = {
        **info,
        "images": len(items),
        "entries": len(items) - len(missing),
        "missing": missing[:100],
        "suspect": suspects,
        "found_rate": {cls: {n: float(np.mean(v)) for n, v in per.items()} for cls, per in sorted(found.items())},
    }
    write_json_atomic(store.folder / "index.json", index)
    return index


def run_masks(
    images: str | Path,
    bank_path: str | Path,
    segmenter: Segmenter,
    out: str | Path,
    *,
    image_list: str | Path | None = None,
    mode: str = "union",
    object_masks: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = print,
    redo: bool = False,
) -> BuildResult:
    """`cft masks`: one process, or one rank of a torchrun job (gloo is enough: only a barrier is needed).
    Rank 0 holds the store's lock; `redo` remakes every entry of a store made with other settings."""
    bank = ConceptBank.load(bank_path)
    only = read_image_list(image_list) if image_list else None
    items = list_images(images, list(bank.concepts), only)
    empty = sorted({it.label for it in items if it.label in bank.concepts and not bank.names(it.label)})
    if empty and not object_masks:
        raise CftError(
            f"concept bank {bank_path} has no concepts for class(es) {', '.join(empty[:5])} of these images; "
            "give them concepts, leave their images out (--list), or make object masks (--object-masks)"
        )
    dist = Distributed.current()
    rank, world_size = dist.rank, dist.world_size
    with exclusive_folder(out, "--out") if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            store, info = open_store(
                out, bank, segmenter, mode, object_masks, {"bank": str(bank_path), "images": str(images)}, redo
            )
        dist.barrier()  # the store is claimed (or cleared by --redo) before any rank writes an entry
        if rank != 0:
            store, info = MaskStore(out), {}
        result = build_masks(
            items,
            bank,
            segmenter,
            store,
            mode=mode,
            object_masks=object_masks,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            progress=progress,
        )
        dist.barrier()
        if rank == 0:
            index = write_index(store, items, info)
            log(
                f"{out}: {index['entries']}/{index['images']} images have masks "
                f"({result.made} made by rank 0 in {result.seconds:.1f} s, {result.skipped} already done, "
                f"{result.redone} stale or corrupt redone); {len(index['suspect'])} suspect guidance masks"
            )
            if result.without_concepts:
                log(
                    f"note: no concepts in the bank for {', '.join(result.without_concepts)}: "
                    "their images have no masks"
                )
        return result
