"""Guidance masks: the pixelwise max over an image's concept masks, with sanity flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cft.errors import CftError
from cft.segmenter import Segmenter

SANE_FRACTION = (0.001, 0.98)


def guidance_mask(
    concept_masks: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
    mode: str = "union",
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """S(I) = max_k w_k * M_k over the concepts: "union" (binary, every w_k = 1) or "weighted" (float32)."""
    if mode not in ("union", "weighted"):
        raise CftError(f"guidance mode must be 'union' or 'weighted', got {mode!r}")
    if not concept_masks:
        if shape is None:
            raise CftError("no concept masks and no shape: cannot make an empty guidance mask")
        return np.zeros(shape, dtype=np.float32)
    shapes = {m.shape for m in concept_masks.values()}
    if len(shapes) != 1:
        raise CftError(f"concept masks of one image differ in size: {sorted(shapes)}")
    out = np.zeros(next(iter(shapes)), dtype=np.float32)
    for name, mask in concept_masks.items():
        w = 1.0 if mode == "union" or weights is None else float(weights.get(name, 1.0))
        np.maximum(out, w * (np.asarray(mask) > 0), out=out)
    return out


def foreground_fraction(mask: np.ndarray) -> float:
    return float((np.asarray(mask) > 0).mean())


def is_suspect(mask: np.ndarray, bounds: tuple[float, float] = SANE_FRACTION) -> bool:
    """A mask covering less than 0.1 % or more than 98 % of the image is probably wrong."""
    f = foreground_fraction(mask)
    return not bounds[0] <= f <= bounds[1]


def segment_guidance(
    segmenter: Segmenter, images: Sequence[Any], phrases: Sequence[Sequence[str]], shape: tuple[int, int]
) -> list[np.ndarray]:
    """Each image's union guidance mask (H, W) of its phrases as `segmenter` finds them (empty when none is)."""
    found = segmenter.segment(images, phrases)
    return [guidance_mask({k: m for k, (m, _) in f.items()}, shape=shape) for f in found]
