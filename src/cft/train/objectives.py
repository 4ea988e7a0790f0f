"""Training objectives: (model, batch) -> named loss terms (summed under "loss") and the logits.

A batch is a dict with "image" (B, C, H, W) float, "label" (B,) long and, for guided objectives,
"mask" (B, H, W) in [0, 1] at image resolution: the guidance mask.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cft.errors import CftError
from cft.losses import CFTLoss, consistency, mask_to_grid
from cft.relevance import relevance_with_logits
from cft.train.base import Objective, ObjectiveConfig, StepOutput, register_objective


class Classification:
    """Plain cross-entropy on the labels (ERM): pretraining, or fine-tuning without guidance."""

    needs_mask = False

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(batch["image"])
        return StepOutput({"loss": F.cross_entropy(logits, batch["label"])}, logits)


class Anchored:
    """An objective whose consistency term may anchor to the original model (cls_target "original"): the trainer's
    caller binds a frozen copy of the starting model with `bind_reference`, whose logits are the KL target."""

    cls_target: str = "self"
    reference: nn.Module | None = None
    anchor_weight: float = 1.0

    @property
    def wants_reference(self) -> bool:
        return self.cls_target == "original"

    def bind_reference(self, model: nn.Module) -> None:
        """Keep a frozen copy of `model` (the starting weights) as the anchor."""
        self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    def _reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            raise CftError("objective.cls_target=original needs the original model: call bind_reference first")
        self.reference.to(images.device)
        with torch.no_grad():
            return self.reference(images)

    def add_anchor(self, model: nn.Module, batch: dict[str, torch.Tensor], terms: dict[str, torch.Tensor]) -> None:
        """With unlabelled anchor images in the batch (data.anchor_images): terms["anchor"] = KL(original ||
        model) on them, added to the loss times anchor_weight."""
        if "anchor" not in batch or self.cls_target != "original":
            return
        anchors = batch["anchor"]
        terms["anchor"] = consistency(model(anchors), self.temperature, reference=self._reference_logits(anchors))
        terms["loss"] = terms["loss"] + self.anchor_weight * terms["anchor"]

    def targets(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        """The keyword arguments of `consistency` for this batch: labels, or the reference's logits, or neither."""
        if self.cls_target == "label":
            return {"labels": batch["label"]}
        if self.cls_target == "original":
            return {"reference": self._reference_logits(batch["image"])}
        return {}


@dataclass
class ConsistencyOnly(Anchored):
    """The classification term of CFT alone (no relevance): the `no-guidance` ablation."""

    temperature: float = 1.0
    cls_target: str = "self"
    anchor_weight: float = 1.0
    needs_mask = False

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(batch["image"])
        cls = consistency(logits, self.temperature, **self.targets(batch))
        terms = {"cls": cls, "loss": cls}
        self.add_anchor(model, batch, terms)
        return StepOutput(terms, logits)


@dataclass
class RelevanceGuided(Anchored):
    """CFT (and RobustViT with form="robustvit"): relevance and logits from one forward pass, then CFTLoss.

    relevance_target: the class whose relevance is aligned, "predicted" (each image's argmax) or "label".
    """

    loss: CFTLoss
    method: str = "grad-rollout"
    create_graph: bool | None = None
    cls_target: str = "self"
    mask_resolution: str = "image"
    relevance_target: str = "predicted"
    anchor_weight: float = 1.0
    needs_mask = True

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        images = batch["image"]
        targets = batch["label"] if self.relevance_target == "label" else None
        maps, logits = relevance_with_logits(model, images, targets, self.method, self.create_graph)
        mask = batch["mask"].to(maps.dtype)
        if self.mask_resolution == "patch":
            mask = mask_to_grid(mask, tuple(maps.shape[-2:]))
        else:
            maps = F.interpolate(maps[:, None], size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        terms = self.loss(maps, mask, logits, **self.targets(batch))
        self.add_anchor(model, batch, terms)
        return StepOutput(terms, logits)


@register_objective("erm", "cross-entropy on the labels only (no guidance)")
def _erm(cfg: ObjectiveConfig) -> Objective:
    return Classification()


@register_objective("no-guidance", "the classification term of CFT alone, no relevance (the ablation)")
def _no_guidance(cfg: ObjectiveConfig) -> Objective:
    return ConsistencyOnly(cfg.temperature, cfg.cls_target, anchor_weight=cfg.anchor_weight)


def _relevance_guided(cfg: ObjectiveConfig, robustvit: bool) -> Objective:
    loss = CFTLoss(
        "robustvit" if robustvit else cfg.form,
        cfg.align_weight,
        cfg.cls_weight,
        cfg.temperature,
        cfg.concept_weight,
        cfg.non_concept_weight,
    )
    target = cfg.relevance_target or ("label" if robustvit else "predicted")
    return RelevanceGuided(
        loss, cfg.method, cfg.create_graph, cfg.cls_target, cfg.mask_resolution, target, cfg.anchor_weight
    )


@register_objective(
    "cft", "concept-guided fine-tuning: relevance aligned with the concept masks, plus CFT's classification term"
)
def _cft(cfg: ObjectiveConfig) -> Objective:
    return _relevance_guided(cfg, robustvit=False)


@register_objective("robustvit", "RobustViT: relevance pushed off the background and onto the foreground mask")
def _robustvit(cfg: ObjectiveConfig) -> Objective:
    """RelevanceGuided with CFTLoss(form="robustvit"): 0.8 * (2.0 * mean((Phi * (1 - S))^2)
    + 0.3 * mean(S * (Phi - 1)^2)) + 0.2 * CE(z / T, own argmax), the relevance of the label's class, as in
    RobustViT's imagenet_finetune.py (align_weight, cls_weight, concept_weight = foreground,
    non_concept_weight = background, temperature, cls_target and relevance_target override; form is not read).
    Meant for object masks (`cft masks --object-masks`)."""
    return _relevance_guided(cfg, robustvit=True)
