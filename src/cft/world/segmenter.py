"""The synthetic world's segmenters: a concept phrase to the exact mask of what it names.

`mode="vlm"` (the default) reads a phrase as an open-vocabulary detector would (cft.world.vocabulary): a drawn part
(or a synonym, or a group of parts) gives its mask, a name of the object or of its kind the whole object, a context
phrase the background where the world draws that texture, anything else nothing. `mode="embedding"` is the first
world segmenter, kinder than any VLM: the class's best-matching part name by sentence-embedding cosine at or above
`threshold`, which gives a part's mask even to phrases that name no drawn part ("bicycle" in a car).
Same interface as the real open-vocabulary segmenters, so one pipeline runs on both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cft.errors import CftError
from cft.segmenter import PhraseMasks
from cft.sentences import DEFAULT_TEXT_MODEL, similarity
from cft.world.vocabulary import CONTEXT_NAMES, read_phrase

Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]
MODES = ("vlm", "embedding")


class WorldSegmenter:
    """Segment world samples (the dicts `WorldSplit.sample` returns) by phrase."""

    name = "world"

    def __init__(
        self,
        threshold: float = 0.5,
        text_model: str = DEFAULT_TEXT_MODEL,
        sim: Similarity | None = None,
        mode: str = "vlm",
    ):
        if not 0.0 <= threshold <= 1.0:
            raise CftError(f"segmenter threshold must be in [0, 1], got {threshold}")
        if mode not in MODES:
            raise CftError(f"world segmenter mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.threshold, self.mode = threshold, mode
        self.text_model = "custom" if sim is not None else text_model
        self._sim = sim or (lambda a, b: similarity(a, b, text_model))

    def identity(self) -> dict[str, Any]:
        """What changes the masks: the mode; for the embedding mode the threshold and the sentence model."""
        if self.mode == "vlm":
            return {"name": self.name, "mode": self.mode}
        return {"name": self.name, "threshold": self.threshold, "text_model": self.text_model}

    def segment(self, images: Sequence[Mapping[str, Any]], phrases: Sequence[Sequence[str]]) -> list[PhraseMasks]:
        if len(images) != len(phrases):
            raise CftError(f"{len(images)} images but {len(phrases)} phrase lists: give one list per image")
        one = self._read if self.mode == "vlm" else self._nearest_part
        return [one(_checked(sample), list(p)) for sample, p in zip(images, phrases, strict=True)]

    def _read(self, sample: Mapping[str, Any], phrases: list[str]) -> PhraseMasks:
        parts = {k: np.asarray(v, bool) for k, v in sample["part_masks"].items()}
        obj = np.asarray(sample["object_mask"], bool)
        cls = str(sample.get("class_name", ""))
        if not cls:
            raise CftError("the world segmenter's vlm mode needs samples with their class_name (WorldSplit.sample)")
        out: PhraseMasks = {}
        for phrase in phrases:
            reading = read_phrase(phrase, cls, list(parts), tuple(CONTEXT_NAMES))
            if reading.kind == "part":
                mask = np.logical_or.reduce([parts[p] for p in reading.targets])
            elif reading.kind == "object":
                mask = obj.copy()
            elif reading.kind == "context" and sample.get("background_name") == reading.targets[0]:
                mask = ~obj
            else:
                mask = np.zeros(obj.shape, bool)
            out[phrase] = (mask, 1.0 if mask.any() else 0.0)
        return out

    def _nearest_part(self, sample: Mapping[str, Any], phrases: list[str]) -> PhraseMasks:
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


def _checked(sample: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(sample, Mapping) or "part_masks" not in sample:
        raise CftError("the world segmenter takes world samples (dicts with part_masks), not plain images")
    return sample
