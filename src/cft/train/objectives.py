"""Training objectives: (model, batch) -> named loss terms (summed under "loss") and the logits.

A batch is a dict with "image" (B, C, H, W) float, "label" (B,) long and, for guided objectives,
"mask" (B, H, W) in [0, 1] at image resolution: the guidance mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cft.losses import CFTLoss, consistency, mask_to_grid
from cft.relevance import relevance_with_logits
from cft.train.base import Objective, ObjectiveConfig, StepOutput, register_objective


class Classification:
    """Plain cross-entropy on the labels (ERM): pretraining, or fine-tuning without guidance."""

    needs_mask = False

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(batch["image"])
        return StepOutput({"loss": F.cross_entropy(logits, batch["label"])}, logits)


@dataclass
class ConsistencyOnly:
    """The classification term of CFT alone (no relevance): the `no-guidance` ablation."""

    temperature: float = 1.0
    use_labels: bool = False
    needs_mask = False

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(batch["image"])
        cls = consistency(logits, self.temperature, batch["label"] if self.use_labels else None)
        return StepOutput({"cls": cls, "loss": cls}, logits)


@dataclass
class RelevanceGuided:
    """CFT (and RobustViT with form="robustvit"): relevance and logits from one forward pass, then CFTLoss.

    relevance_target: the class whose relevance is aligned, "predicted" (each image's argmax) or "label".
    """

    loss: CFTLoss
    method: str = "grad-rollout"
    create_graph: bool | None = None
    use_labels: bool = False
    mask_resolution: str = "image"
    relevance_target: str = "predicted"
    needs_mask = True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        images = batch["image"]
        targets = batch["label"] if self.relevance_target == "label" else None
        maps, logits = relevance_with_logits(model, images, targets, self.method, self.create_graph)
        mask = batch["mask"].to(maps.dtype)
        if self.mask_resolution == "patch":
            mask = mask_to_grid(mask, tuple(maps.shape[-2:]))
        else:
            maps = F.interpolate(maps[:, None], size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        terms = self.loss(maps, mask, logits, batch["label"] if self.use_labels else None)
        return StepOutput(terms, logits)


@register_objective("erm")
def _erm(cfg: ObjectiveConfig) -> Objective:
    return Classification()


@register_objective("no-guidance")
def _no_guidance(cfg: ObjectiveConfig) -> Objective:
    return ConsistencyOnly(cfg.temperature, cfg.cls_target == "label")


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
    use_labels = cfg.cls_target == "label"
    return RelevanceGuided(loss, cfg.method, cfg.create_graph, use_labels, cfg.mask_resolution, target)


@register_objective("cft")
def _cft(cfg: ObjectiveConfig) -> Objective:
    return _relevance_guided(cfg, robustvit=False)


@register_objective("robustvit")
def _robustvit(cfg: ObjectiveConfig) -> Objective:
    """RelevanceGuided with CFTLoss(form="robustvit"): 0.8 * (2.0 * mean((Phi * (1 - S))^2)
    + 0.3 * mean(S * (Phi - 1)^2)) + 0.2 * CE(z / T, own argmax), the relevance of the label's class, as in
    RobustViT's imagenet_finetune.py (align_weight, cls_weight, concept_weight = foreground,
    non_concept_weight = background, temperature, cls_target and relevance_target override; form is not read).
    Meant for object masks (`cft masks --object-masks`)."""
    return _relevance_guided(cfg, robustvit=True)
