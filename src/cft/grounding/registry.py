"""Segmenters by name, a registry: `build_segmenter("grounded-sam", box_threshold=0.3)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from cft.errors import CftError
from cft.registry import Registry
from cft.segmenter import IdentifiedSegmenter

SegmenterLoader = Callable[[], type]
SEGMENTERS: Registry[SegmenterLoader] = Registry("segmenter")  # name -> a loader of the segmenter class


def register_segmenter(name: str, loader: SegmenterLoader, description: str | None = None) -> None:
    """Make `build_segmenter(name, ...)` build the class `loader()` returns (imported only when asked for);
    description: one line for `cft ls segmenters` (None: the loader's docstring)."""
    SEGMENTERS.add(name, loader, description)


def _hf(attr: str) -> SegmenterLoader:
    def load() -> type:
        try:
            from cft.grounding import hf
        except ImportError as e:
            raise CftError(f"segmenter {attr} needs transformers: pip install 'cft[segment]' ({e})") from e
        return getattr(hf, attr)

    return load


def _world() -> type:
    from cft.world.segmenter import WorldSegmenter

    return WorldSegmenter


for _name, _loader, _description in (
    ("grounded-sam", _hf("GroundedSAM"), "Grounding DINO boxes + SAM/SAM2 masks, the CFT paper's grounding"),
    ("sam3", _hf("SAM3"), "SAM3 text-prompted instance masks"),
    ("owlv2-sam", _hf("OWLv2SAM"), "OWLv2 boxes + SAM/SAM2 masks"),
    ("clipseg", _hf("CLIPSeg"), "a thresholded CLIPSeg heat map"),
    ("world", _world, "the synthetic world's exact masks of the phrases it can read"),
):
    register_segmenter(_name, _loader, _description)


def segmenter_options(name: str) -> tuple[str, ...]:
    """The keyword options `build_segmenter(name, ...)` accepts."""
    if name not in SEGMENTERS:
        raise CftError(f"unknown segmenter {name!r}: choose one of {', '.join(SEGMENTERS)}")
    params = inspect.signature(SEGMENTERS[name]()).parameters.values()
    return tuple(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def build_segmenter(name: str, **options: Any) -> IdentifiedSegmenter:
    """The segmenter called `name` (one of SEGMENTERS) built with `options` (see segmenter_options)."""
    valid = segmenter_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise CftError(f"segmenter {name!r} has no option {', '.join(unknown)}: valid options are {', '.join(valid)}")
    return SEGMENTERS[name]()(**options)
