"""Grounding: concept phrases to masks (the Segmenter interface) and guidance masks."""

from cft.grounding.guidance import foreground_fraction, guidance_mask, is_suspect
from cft.segmenter import PhraseMasks, Segmenter

__all__ = ["PhraseMasks", "Segmenter", "foreground_fraction", "guidance_mask", "is_suspect"]
