"""Detect boxes, then mask them with SAM: GroundedSAM (Grounding DINO + SAM/SAM2) and OWLv2 + SAM.

Each phrase's boxes are turned into masks by SAM with box prompts and unioned; the phrase's score is its best
box score. A phrase with no box over the threshold (or whose boxes all give empty masks) gets an all-False mask
and score 0.0.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForMaskGeneration, AutoModelForZeroShotObjectDetection, AutoProcessor

from cft.errors import CftError
from cft.grounding.hf_common import (
    CUSTOM,
    HFSegmenter,
    ModelPair,
    check_number,
    chunks,
    clip_boxes,
    empty_results,
    found,
    ready,
    resolve,
    to_pil,
    union,
)
from cft.segmenter import PhraseMasks

DEFAULT_SAM = "facebook/sam-vit-huge"
DEFAULT_GROUNDING_DINO = "IDEA-Research/grounding-dino-base"
DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"
SAM_FAMILIES = {"sam": "sam", "sam2": "sam2", "sam2_video": "sam2"}  # config model_type -> post-processing

# One image's detections: phrase -> (xyxy pixel boxes (n, 4), scores (n,)).
Detections = dict[str, tuple[np.ndarray, np.ndarray]]


def sam_family(model: Any) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SAM_FAMILIES:
        raise CftError(
            f"sam_model (or sam) must be a SAM or SAM2 model (config model_type one of {sorted(SAM_FAMILIES)}), "
            f"got model_type {model_type!r}"
        )
    return SAM_FAMILIES[model_type]


def pad_boxes(boxes: np.ndarray, n: int) -> np.ndarray:
    """Repeat the last box up to n boxes, so images with different box counts batch together."""
    return np.concatenate([boxes, np.repeat(boxes[-1:], n - len(boxes), axis=0)])


class SamMasker:
    """Box prompts to one mask per box with SAM or SAM2, at each image's own size."""

    def __init__(self, model: Any, processor: Any, device: torch.device, mask_threshold: float, batch_size: int):
        self.family = sam_family(model)
        self.model, self.processor = model, processor
        self.device, self.mask_threshold, self.batch_size = device, mask_threshold, batch_size

    def masks(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Per image a (n_boxes, H, W) bool array."""
        out = [np.zeros((0, *im.shape[:2]), dtype=bool) for im in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        for chunk in chunks(len(todo), self.batch_size):
            sel = [todo[k] for k in chunk]
            n = max(len(boxes[i]) for i in sel)
            got = self._run([images[i] for i in sel], [pad_boxes(boxes[i], n) for i in sel])
            for i, masks in zip(sel, got, strict=True):
                out[i] = masks[: len(boxes[i])]
        return out

    def _run(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        pil = [to_pil(im) for im in images]
        inputs = self.processor(images=pil, input_boxes=[b.tolist() for b in boxes], return_tensors="pt")
        outputs = self.model(
            pixel_values=inputs["pixel_values"].to(self.device),
            input_boxes=inputs["input_boxes"].to(self.device),
            multimask_output=False,
        )
        extra = (inputs["reshaped_input_sizes"],) if self.family == "sam" else ()
        masks = self.processor.post_process_masks(
            outputs.pred_masks.float(), inputs["original_sizes"], *extra, mask_threshold=self.mask_threshold
        )
        return [m[:, 0].cpu().numpy().astype(bool) for m in masks]


def masks_from_detections(masker: Any, images: list[np.ndarray], detections: list[Detections]) -> list[PhraseMasks]:
    """All boxes of an image through the masker at once; each phrase's masks unioned, score = its best box."""
    boxes = [np.concatenate([b for b, _ in det.values()] or [np.zeros((0, 4), np.float32)]) for det in detections]
    masks = masker.masks(images, boxes)
    out = empty_results(len(images))
    for res, image, det, m in zip(out, images, detections, masks, strict=True):
        start = 0
        for phrase, (b, s) in det.items():
            res[phrase] = found(union(m[start : start + len(b)], image.shape[:2]), s.max() if len(s) else 0.0)
            start += len(b)
    return out


class BoxSegmenter(HFSegmenter):
    """A box detector followed by SAM; subclasses implement `_detect`."""

    def __init__(
        self,
        detector: ModelPair | None,
        detector_model: str,
        sam: ModelPair | None,
        sam_model: str,
        mask_threshold: float,
        batch_size: int,
        device: str | None,
        local_files_only: bool,
    ) -> None:
        super().__init__(batch_size, device)
        self.mask_threshold = check_number("mask_threshold", mask_threshold)
        self.detector_model = CUSTOM if detector is not None else detector_model
        self.sam_model = CUSTOM if sam is not None else sam_model
        loaders = (AutoModelForZeroShotObjectDetection, AutoProcessor)
        pair = resolve(detector, detector_model, "detector_model", loaders, local_files_only)
        self.model, self.processor = ready(pair, self.device)
        sam_pair = resolve(sam, sam_model, "sam_model", (AutoModelForMaskGeneration, AutoProcessor), local_files_only)
        self.masker = SamMasker(*ready(sam_pair, self.device), self.device, self.mask_threshold, self.batch_size)

    def _segment(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[PhraseMasks]:
        return masks_from_detections(self.masker, images, self._detect(images, phrases))

    def _detect(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[Detections]:
        raise NotImplementedError

    def _models(self) -> dict[str, Any]:
        return {
            "detector_model": self.detector_model,
            "sam_model": self.sam_model,
            "mask_threshold": self.mask_threshold,
        }


def grounding_prompt(phrase: str) -> str:
    """Grounding DINO's prompt for one concept: lowercase, ending with one period ("red wheel.")."""
    return phrase.strip().lower().rstrip(".").strip() + "."


class GroundedSAM(BoxSegmenter):
    """Grounding DINO boxes (prompt "<concept>." per concept) masked by SAM or SAM2, as in the CFT paper.

    By default every box over `box_threshold` counts, as in the reference GroundedSAM code, where
    `text_threshold` only labels boxes; `require_phrase=True` also drops boxes none of whose concept tokens
    passes `text_threshold`. `sam_model` may be a SAM or a SAM2 id (e.g. "facebook/sam2.1-hiera-large").
    """

    name = "grounded-sam"

    def __init__(
        self,
        detector_model: str = DEFAULT_GROUNDING_DINO,
        sam_model: str = DEFAULT_SAM,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.65,
        require_phrase: bool = False,
        mask_threshold: float = 0.0,
        batch_size: int = 8,
        device: str | None = None,
        local_files_only: bool = False,
        detector: ModelPair | None = None,
        sam: ModelPair | None = None,
    ) -> None:
        self.box_threshold = check_number("box_threshold", box_threshold, 0.0)
        self.text_threshold = check_number("text_threshold", text_threshold, 0.0)
        self.require_phrase = bool(require_phrase)
        super().__init__(detector, detector_model, sam, sam_model, mask_threshold, batch_size, device, local_files_only)

    def _settings(self) -> dict[str, Any]:
        return {
            **self._models(),
            "prompt": "{concept}.",
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold,
            "require_phrase": self.require_phrase,
        }

    def _detect(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[Detections]:
        pairs = [(i, p) for i, ps in enumerate(phrases) for p in ps]
        out: list[Detections] = [{} for _ in images]
        for chunk in chunks(len(pairs), self.batch_size):
            sel = [pairs[k] for k in chunk]
            dets = self._detect_pairs([images[i] for i, _ in sel], [grounding_prompt(p) for _, p in sel])
            for (i, p), det in zip(sel, dets, strict=True):
                out[i][p] = det
        return out

    def _detect_pairs(self, images: list[np.ndarray], prompts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        pil = [to_pil(im) for im in images]
        inputs = self.processor(images=pil, text=prompts, padding=True, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        results = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"].cpu(),  # labels are decoded from it
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[im.shape[:2] for im in images],
        )
        return [self._boxes(r, im.shape[:2]) for r, im in zip(results, images, strict=True)]

    def _boxes(self, result: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy()
        if self.require_phrase:
            special = set(self.processor.tokenizer.all_special_tokens)
            keep = np.array([names_words(label, special) for label in result["text_labels"]], dtype=bool)
            boxes, scores = boxes[keep], scores[keep]
        return clip_boxes(boxes, scores, shape)


def names_words(label: str, special: set[str]) -> bool:
    """Whether a decoded Grounding DINO label holds a word besides special tokens and periods."""
    return any(w not in special for w in label.replace(".", " ").split())


class OWLv2SAM(BoxSegmenter):
    """OWLv2 boxes (each box goes to its best-scoring phrase of the image) masked by SAM or SAM2."""

    name = "owlv2-sam"

    def __init__(
        self,
        detector_model: str = DEFAULT_OWLV2,
        sam_model: str = DEFAULT_SAM,
        *,
        box_threshold: float = 0.1,
        mask_threshold: float = 0.0,
        batch_size: int = 8,
        device: str | None = None,
        local_files_only: bool = False,
        detector: ModelPair | None = None,
        sam: ModelPair | None = None,
    ) -> None:
        self.box_threshold = check_number("box_threshold", box_threshold, 0.0)
        super().__init__(detector, detector_model, sam, sam_model, mask_threshold, batch_size, device, local_files_only)

    def _settings(self) -> dict[str, Any]:
        return {**self._models(), "box_threshold": self.box_threshold}

    def _detect(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[Detections]:
        out: list[Detections] = []
        for chunk in chunks(len(images), self.batch_size):
            out += self._detect_batch([images[i] for i in chunk], [phrases[i] for i in chunk])
        return out

    def _detect_batch(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[Detections]:
        pil = [to_pil(im) for im in images]
        inputs = self.processor(text=phrases, images=pil, truncation=True, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        logits = mask_padded_queries(outputs.logits, [len(p) for p in phrases])
        results = self.processor.post_process_grounded_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=outputs.pred_boxes),
            threshold=self.box_threshold,
            target_sizes=[im.shape[:2] for im in images],
        )
        return [by_phrase(r, p, im.shape[:2]) for r, p, im in zip(results, phrases, images, strict=True)]


def mask_padded_queries(logits: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """(B, boxes, queries) logits with each image's padding queries (index >= its count) set to the minimum."""
    counts_t = torch.tensor(counts, device=logits.device)
    pad = torch.arange(logits.shape[-1], device=logits.device)[None] >= counts_t[:, None]
    return logits.masked_fill(pad[:, None, :], torch.finfo(logits.dtype).min)


def by_phrase(result: dict[str, Any], phrases: list[str], shape: tuple[int, int]) -> Detections:
    """Post-processed detections (boxes, scores, query labels) of one image grouped by phrase."""
    boxes, scores = result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy()
    labels = result["labels"].cpu().numpy()
    return {p: clip_boxes(boxes[labels == k], scores[labels == k], shape) for k, p in enumerate(phrases)}
