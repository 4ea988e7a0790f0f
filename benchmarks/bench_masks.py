#!/usr/bin/env python
"""Throughput of the mask store and of the training data loader with masks against without.

    PYTHONPATH=src python benchmarks/bench_masks.py                  # 200 JPEGs of 500 x 375, 4 concepts each
    PYTHONPATH=src python benchmarks/bench_masks.py --backends       # also each transformers backend, tiny model

Prints images/s for: writing store entries (compress + atomic npz and JSON), reading a guidance mask back,
reading a whole entry, and the training loader (decode, resize 256, random crop 224, flip, normalise) without
masks and with masks from the store, in one process and with 2 workers. The difference of the last two is what
masks cost a training run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from cft.data.folders import ImageItem
from cft.grounding.store import MaskStore
from cft.train.masked_data import PairedTransform, StoreImageDataset


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8,.0f} images/s  ({seconds:6.2f} s for {n})"


def blob_masks(rng: np.random.Generator, h: int, w: int, k: int) -> dict[str, tuple[np.ndarray, float]]:
    """k elliptic blobs, like object parts."""
    yy, xx = np.mgrid[:h, :w]
    out = {}
    for j in range(k):
        cy, cx, ry, rx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, h / 8, w / 10
        out[f"concept {j}"] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1, 0.5)
    return out


def make_images(root: Path, n: int, h: int, w: int) -> list[ImageItem]:
    rng = np.random.default_rng(0)
    (root / "cls").mkdir(parents=True)
    items = []
    for i in range(n):
        arr = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)  # smooth content, JPEG-sized like photos
        path = root / "cls" / f"{i:05d}.JPEG"
        Image.fromarray(arr).resize((w, h), Image.BICUBIC).save(path, quality=90)
        items.append(ImageItem(f"cls/{i:05d}.JPEG", path, "cls"))
    return items


def loader_rate(ds, workers: int, batch: int) -> float:
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=default_collate)
    t = time.perf_counter()
    n = sum(len(b["image"]) for b in loader)
    return n / (time.perf_counter() - t)


def bench_backends(n: int) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.grounding import tiny_segmenters  # the tests' tiny random models, built offline

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(n)]
    phrases = [["wing", "beak", "tail", "eye"]] * n
    with tempfile.TemporaryDirectory() as tmp:
        for name, seg in tiny_segmenters(Path(tmp)).items():
            seg.segment(images[:1], phrases[:1])  # warm-up
            t = time.perf_counter()
            seg.segment(images, phrases)
            print(f"backend {name:12s} (tiny)  {rate(n, time.perf_counter() - t)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--concepts", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backends", action="store_true", help="also time each backend with its tiny model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        items = make_images(Path(tmp) / "images", args.n, args.height, args.width)
        store = MaskStore(Path(tmp) / "store")
        masks = [blob_masks(rng, args.height, args.width, args.concepts) for _ in items]
        t = time.perf_counter()
        for item, found in zip(items, masks, strict=True):
            store.write(item.image_id, found, key="k", label="cls")
        print(f"store write  (entry, {args.concepts} concepts)  {rate(args.n, time.perf_counter() - t)}")
        size = sum(p.stat().st_size for p in store.entries.rglob("*")) / args.n
        print(f"store size per image               {size / 1024:6.1f} KiB (npz + json)")
        t = time.perf_counter()
        for item in items:
            store.guidance(item.image_id)
        print(f"store read   guidance mask         {rate(args.n, time.perf_counter() - t)}")
        t = time.perf_counter()
        for item in items:
            store.read(item.image_id, verify=True)
        print(f"store read   whole entry, verified {rate(args.n, time.perf_counter() - t)}")
        t = time.perf_counter()
        for item in items:
            Image.open(item.path).convert("RGB")
        print(f"JPEG decode alone (reference)      {rate(args.n, time.perf_counter() - t)}")
        transform = PairedTransform()
        for workers in (0, 2):
            plain = loader_rate(StoreImageDataset(items, {"cls": 0}, None, transform), workers, args.batch)
            masked = loader_rate(StoreImageDataset(items, {"cls": 0}, store, transform), workers, args.batch)
            print(
                f"loader {workers} workers: without masks {plain:7,.0f} images/s, with masks {masked:7,.0f} "
                f"images/s ({(plain / masked - 1) * 100:+.1f} % time per image)"
            )
    if args.backends:
        bench_backends(4)


if __name__ == "__main__":
    main()
