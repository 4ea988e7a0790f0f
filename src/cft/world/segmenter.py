"""The synthetic world's segmenter: a concept phrase to the exact mask of the part it names.

Phrases are matched to the part names of the sample's class by sentence-embedding cosine similarity; the
best part at or above the threshold gives its mask, anything else an empty mask. Same interface as the
real open-vocabulary segmenters, so one pipeline runs on both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cft.errors import CftError
from cft.segmenter import PhraseMasks
from cft.text import DEFAULT_TEXT_MODEL, similarity

Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]


class WorldSegmenter:
    """Segment world samples (the dicts `WorldSplit.sample` returns) by phrase."""

    name = "world"

    def __init__(self, threshold: float = 0.5, text_model: str = DEFAULT_TEXT_MODEL, sim: Similarity | None = None):
        if not 0.0 <= threshold <= 1.0:
            raise CftError(f"segmenter threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.text_model = "custom" if sim is not None else text_model
        self._sim = sim or (lambda a, b: similarity(a, b, text_model))

    def identity(self) -> dict[str, Any]:
        """What changes the masks: the threshold and the sentence model ("custom" for an injected similarity)."""
        return {"name": self.name, "threshold": self.threshold, "text_model": self.text_model}

    def segment(self, images: Sequence[Mapping[str, Any]], phrases: Sequence[Sequence[str]]) -> list[PhraseMasks]:
        if len(images) != len(phrases):
            raise CftError(f"{len(images)} images but {len(phrases)} phrase lists: give one list per image")
        return [self._one(sample, list(p)) for sample, p in zip(images, phrases, strict=True)]

    def _one(self, sample: Mapping[str, Any], phrases: list[str]) -> PhraseMasks:
        if "part_masks" not in sample:
            raise CftError("the world segmenter takes world samples (dicts with part_masks), not plain images")
        parts = {k: np.asarray(v, bool) for k, v in sample["part_masks"].items()}
        shape = np.asarray(sample["object_mask"]).shape
        out: PhraseMasks = {}
        if not phrases:
            return out
        names = list(parts)
        sims = self._sim(phrases, names) if names else np.zeros((len(phrases), 0))
        for phrase, row in zip(phrases, sims, strict=True):
            best = int(np.argmax(row)) if len(row) else -1
            score = float(row[best]) if best >= 0 else 0.0
            hit = best >= 0 and score >= self.threshold
            out[phrase] = (parts[names[best]].copy() if hit else np.zeros(shape, bool), score)
        return out
