"""Grounding: concept phrases to masks (the Segmenter interface) and guidance masks."""

from cft.grounding.base import PhraseMasks, Segmenter
from cft.grounding.guidance import foreground_fraction, guidance_mask, is_suspect

__all__ = ["PhraseMasks", "Segmenter", "foreground_fraction", "guidance_mask", "is_suspect"]
