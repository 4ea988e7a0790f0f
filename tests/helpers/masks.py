"""A fake segmenter and a tiny image tree for the mask-store tests (also run by torchrun in a subprocess)."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from cft.concepts.bank import Concept, ConceptBank

CLASSES = {"goldfish": ["fin", "tail"], "tabby cat": ["ear", "whisker", "eye"]}


def write_tree(root: Path, per_class: int = 5, size: tuple[int, int] = (24, 32)) -> list[str]:
    """root/<class>/img<k>.png with seeded noise; returns the image ids."""
    ids = []
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            h, w = size[0] + k, size[1]  # sizes differ within a class
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"img{k}.png")
            ids.append(f"{cls}/img{k}.png")
    return sorted(ids)


def write_bank(path: Path, classes: dict[str, list[str]] = CLASSES) -> Path:
    bank = ConceptBank(
        concepts={c: [Concept(name=n) for n in names] for c, names in classes.items()},
        dropped={c: [] for c in classes},
        provenance={"backend": "bank"},
    )
    bank.save(path)
    return path


class FakeSegmenter:
    """Phrase -> pixels whose channel (crc32(phrase) % 3) exceeds a threshold; logs what it segments."""

    name = "fake"

    def __init__(self, threshold: int = 128, log: Path | None = None, die_after: int | None = None) -> None:
        self.threshold = threshold
        self.log = log
        self.die_after = die_after
        self.calls = 0
        self.segmented: list[int] = []

    def identity(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}

    def segment(self, images, phrases):
        if self.die_after is not None and self.calls >= self.die_after:
            os._exit(9)  # as abrupt as kill -9: no cleanup, no exception handlers
        self.calls += 1
        out = []
        for image, ps in zip(images, phrases, strict=True):
            arr = np.asarray(image)
            self.segmented.append(int(arr.sum()))
            if self.log is not None:
                with self.log.open("a") as f:
                    f.write(json.dumps(int(arr.sum())) + "\n")
            out.append({p: (arr[..., zlib.crc32(p.encode()) % 3] > self.threshold, 0.5) for p in ps})
        return out


def expected_mask(image: np.ndarray, phrase: str, threshold: int = 128) -> np.ndarray:
    return image[..., zlib.crc32(phrase.encode()) % 3] > threshold
