"""Segmenters by name: `build_segmenter("grounded-sam", box_threshold=0.3)`."""

from __future__ import annotations

import inspect
from typing import Any

from cft.errors import CftError
from cft.segmenter import IdentifiedSegmenter

SEGMENTERS = ("grounded-sam", "sam3", "owlv2-sam", "clipseg", "world")


def _factory(name: str) -> Any:
    if name == "world":
        from cft.world.segmenter import WorldSegmenter

        return WorldSegmenter
    try:
        from cft.grounding import hf
    except ImportError as e:
        raise CftError(f"segmenter {name!r} needs transformers: pip install 'cft[segment]' ({e})") from e
    return {"grounded-sam": hf.GroundedSAM, "sam3": hf.SAM3, "owlv2-sam": hf.OWLv2SAM, "clipseg": hf.CLIPSeg}[name]


def segmenter_options(name: str) -> tuple[str, ...]:
    """The keyword options `build_segmenter(name, ...)` accepts."""
    if name not in SEGMENTERS:
        raise CftError(f"unknown segmenter {name!r}: choose one of {', '.join(SEGMENTERS)}")
    params = inspect.signature(_factory(name)).parameters.values()
    return tuple(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def build_segmenter(name: str, **options: Any) -> IdentifiedSegmenter:
    """The segmenter called `name` (one of SEGMENTERS) built with `options` (see segmenter_options)."""
    valid = segmenter_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise CftError(f"segmenter {name!r} has no option {', '.join(unknown)}: valid options are {', '.join(valid)}")
    return _factory(name)(**options)
