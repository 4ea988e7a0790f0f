"""The segmenter interface every grounding backend implements, the synthetic world's included (core: both the
concept stage, which validates with a segmenter, and the grounding stage, which builds masks with one, import it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

# One image's result: phrase -> (boolean mask (H, W), confidence score). An empty mask means "not found".
PhraseMasks = dict[str, tuple[np.ndarray, float]]


@runtime_checkable
class Segmenter(Protocol):
    """Open-vocabulary segmentation: each image with its own list of phrases in, one mask per phrase out."""

    name: str

    def segment(self, images: Sequence[Any], phrases: Sequence[Sequence[str]]) -> list[PhraseMasks]: ...


@runtime_checkable
class IdentifiedSegmenter(Segmenter, Protocol):
    """A segmenter that also describes itself, so stored masks can be tied to the settings that made them."""

    def identity(self) -> dict[str, Any]:
        """JSON-serialisable: name, model ids ("custom" for objects passed in) and every setting that changes masks."""
        ...
