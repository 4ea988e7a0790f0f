"""Text-prompted segmenters that give masks directly: SAM3 (instances) and CLIPSeg (a heat map).

A phrase not found gets an all-False mask and score 0.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor, Sam3Model, Sam3Processor

from cft.grounding.hf_common import (
    CUSTOM,
    HFSegmenter,
    ModelPair,
    check_number,
    chunks,
    empty_results,
    found,
    heatmap_mask,
    ready,
    resolve,
    to_pil,
    union,
)
from cft.segmenter import PhraseMasks

DEFAULT_SAM3 = "facebook/sam3"
DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
SAM3_TEXT_LENGTH = 32  # Sam3Processor pads every prompt to 32 tokens; the text encoder has 32 positions


def _pairs(phrases: list[list[str]]) -> list[tuple[int, str]]:
    return [(i, p) for i, ps in enumerate(phrases) for p in ps]


class SAM3(HFSegmenter):
    """SAM3 promptable concept segmentation: every instance scoring over `score_threshold` (SAM3's score, i.e.
    query probability x presence probability), binarised at `mask_threshold`, unioned; score = best instance."""

    name = "sam3"

    def __init__(
        self,
        sam3_model: str = DEFAULT_SAM3,
        *,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        batch_size: int = 8,
        device: str | None = None,
        local_files_only: bool = False,
        sam3: ModelPair | None = None,
    ) -> None:
        super().__init__(batch_size, device)
        self.score_threshold = check_number("score_threshold", score_threshold, 0.0)
        self.mask_threshold = check_number("mask_threshold", mask_threshold)
        self.sam3_model = CUSTOM if sam3 is not None else sam3_model
        pair = resolve(sam3, sam3_model, "sam3_model", (Sam3Model, Sam3Processor), local_files_only)
        self.model, self.processor = ready(pair, self.device)

    def _settings(self) -> dict[str, Any]:
        return {
            "sam3_model": self.sam3_model,
            "score_threshold": self.score_threshold,
            "mask_threshold": self.mask_threshold,
        }

    def _segment(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[PhraseMasks]:
        out: list[PhraseMasks] = []
        for chunk in chunks(len(images), self.batch_size):
            out += self._images([images[i] for i in chunk], [phrases[i] for i in chunk])
        return out

    def _images(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[PhraseMasks]:
        """The vision encoder once per image, then the phrases in batches over the cached features."""
        pixels = self.processor(images=[to_pil(im) for im in images], return_tensors="pt")["pixel_values"]
        vision = self.model.get_vision_features(pixel_values=pixels.to(self.device))
        pairs, out = _pairs(phrases), empty_results(len(images))
        for chunk in chunks(len(pairs), self.batch_size):
            sel = [pairs[k] for k in chunk]
            results = self._phrases(vision, [images[i] for i, _ in sel], [i for i, _ in sel], [p for _, p in sel])
            for (i, p), res in zip(sel, results, strict=True):
                out[i][p] = res
        return out

    def _phrases(self, vision: Any, images: list[np.ndarray], index: list[int], phrases: list[str]) -> list[Any]:
        text = self.processor.tokenizer(
            phrases, padding="max_length", max_length=SAM3_TEXT_LENGTH, truncation=True, return_tensors="pt"
        ).to(self.device)
        outputs = self.model(
            vision_embeds=select_images(vision, index),
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
        )
        results = self.processor.post_process_instance_segmentation(
            outputs,
            threshold=self.score_threshold,
            mask_threshold=self.mask_threshold,
            target_sizes=[im.shape[:2] for im in images],
        )
        return [_instances(r, im.shape[:2]) for r, im in zip(results, images, strict=True)]


def _instances(result: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    scores = result["scores"]
    return found(union(result["masks"], shape), scores.max().item() if len(scores) else 0.0)


def select_images(vision: Any, index: list[int]) -> Any:
    """SAM3 vision features (batch first) of the images at `index`, repeats allowed."""
    idx = torch.tensor(index, device=vision.fpn_hidden_states[0].device)
    n = vision.fpn_hidden_states[0].shape[0]

    def pick(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(t.index_select(0, idx) if t.shape[0] == n else t for t in tensors)

    return type(vision)(
        fpn_hidden_states=pick(vision.fpn_hidden_states), fpn_position_encoding=pick(vision.fpn_position_encoding)
    )


class CLIPSeg(HFSegmenter):
    """CLIPSeg: sigmoid heat map resized to the image, mask = probability > `threshold`, score = max probability."""

    name = "clipseg"

    def __init__(
        self,
        clipseg_model: str = DEFAULT_CLIPSEG,
        *,
        threshold: float = 0.4,
        batch_size: int = 8,
        device: str | None = None,
        local_files_only: bool = False,
        clipseg: ModelPair | None = None,
    ) -> None:
        super().__init__(batch_size, device)
        self.threshold = check_number("threshold", threshold, 0.0)
        self.clipseg_model = CUSTOM if clipseg is not None else clipseg_model
        loaders = (CLIPSegForImageSegmentation, CLIPSegProcessor)
        pair = resolve(clipseg, clipseg_model, "clipseg_model", loaders, local_files_only)
        self.model, self.processor = ready(pair, self.device)

    def _settings(self) -> dict[str, Any]:
        return {"clipseg_model": self.clipseg_model, "threshold": self.threshold}

    def _segment(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[PhraseMasks]:
        pairs, out = _pairs(phrases), empty_results(len(images))
        for chunk in chunks(len(pairs), self.batch_size):
            sel = [pairs[k] for k in chunk]
            for (i, p), res in zip(sel, self._run([images[i] for i, _ in sel], [p for _, p in sel]), strict=True):
                out[i][p] = res
        return out

    def _run(self, images: list[np.ndarray], phrases: list[str]) -> list[tuple[np.ndarray, float]]:
        pil = [to_pil(im) for im in images]
        inputs = self.processor(text=phrases, images=pil, padding=True, truncation=True, return_tensors="pt")
        logits = self.model(**inputs.to(self.device)).logits
        logits = logits.reshape(len(images), *logits.shape[-2:])  # a batch of one may come back squeezed
        return [heatmap_mask(lg, im.shape[:2], self.threshold) for lg, im in zip(logits, images, strict=True)]
