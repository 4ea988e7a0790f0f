"""Open-vocabulary segmenters on Hugging Face `transformers` (the `segment` extra): the public names.

- GroundedSAM ("grounded-sam"): Grounding DINO boxes + SAM/SAM2 masks, the CFT paper's grounding.
- SAM3 ("sam3"): SAM3 text-prompted instance masks.
- OWLv2SAM ("owlv2-sam"): OWLv2 boxes + SAM/SAM2 masks.
- CLIPSeg ("clipseg"): a thresholded CLIPSeg heat map.

Models load with `from_pretrained` from a hub id or a local folder; tests and callers with models in memory pass
`(model, processor)` pairs instead (identity() then says "custom"). Every backend: `segment(images, phrases)` with
PIL images or uint8 (H, W, 3) arrays of any size; masks come back at each image's size; a phrase not found gets
an all-False mask and score 0.0.
"""

from cft.grounding.hf_boxes import (
    DEFAULT_GROUNDING_DINO,
    DEFAULT_OWLV2,
    DEFAULT_SAM,
    GroundedSAM,
    OWLv2SAM,
    SamMasker,
    grounding_prompt,
    masks_from_detections,
)
from cft.grounding.hf_common import CUSTOM, HFSegmenter, clip_boxes, heatmap_mask, union
from cft.grounding.hf_dense import DEFAULT_CLIPSEG, DEFAULT_SAM3, SAM3, CLIPSeg

__all__ = [
    "CUSTOM",
    "DEFAULT_CLIPSEG",
    "DEFAULT_GROUNDING_DINO",
    "DEFAULT_OWLV2",
    "DEFAULT_SAM",
    "DEFAULT_SAM3",
    "CLIPSeg",
    "GroundedSAM",
    "HFSegmenter",
    "OWLv2SAM",
    "SAM3",
    "SamMasker",
    "clip_boxes",
    "grounding_prompt",
    "heatmap_mask",
    "masks_from_detections",
    "union",
]
