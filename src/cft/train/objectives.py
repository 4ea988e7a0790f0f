"""Training objectives: (model, batch) -> named loss terms (summed under "loss") and the logits.

A batch is a dict with "image" (B, C, H, W) float, "label" (B,) long and, for guided objectives,
"mask" (B, H, W) in [0, 1] at image resolution: the guidance mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cft.errors import CftError
from cft.losses import CFTLoss, consistency, mask_to_grid
from cft.relevance import relevance_with_logits


@dataclass
class StepOutput:
    terms: dict[str, torch.Tensor]  # "loss" is the total that is minimised
    logits: torch.Tensor


class Objective(Protocol):
    needs_mask: bool

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput: ...


@dataclass
class ObjectiveConfig:
    """Which objective and its weights. Defaults are METHOD.md's CFT settings."""

    name: str = "cft"  # erm | cft | no-guidance
    form: str = "paper"  # paper | bce | robustvit (the alignment term of cft)
    method: str = "grad-rollout"
    create_graph: bool | None = None
    align_weight: float = 0.8
    cls_weight: float = 0.2
    temperature: float = 1.0
    concept_weight: float | None = None
    non_concept_weight: float | None = None
    cls_target: str = "self"  # self (the model's own argmax) | label (ground truth)
    mask_resolution: str = "image"  # image (upsample relevance) | patch (pool the mask to the grid)


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
    """CFT (and RobustViT with form="robustvit"): relevance and logits from one forward pass, then CFTLoss."""

    loss: CFTLoss
    method: str = "grad-rollout"
    create_graph: bool | None = None
    use_labels: bool = False
    mask_resolution: str = "image"
    needs_mask = True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        images = batch["image"]
        maps, logits = relevance_with_logits(model, images, None, self.method, self.create_graph)
        mask = batch["mask"].to(maps.dtype)
        if self.mask_resolution == "patch":
            mask = mask_to_grid(mask, tuple(maps.shape[-2:]))
        else:
            maps = F.interpolate(maps[:, None], size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        terms = self.loss(maps, mask, logits, batch["label"] if self.use_labels else None)
        return StepOutput(terms, logits)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    if cfg.cls_target not in ("self", "label"):
        raise CftError(f"objective.cls_target must be 'self' or 'label', got {cfg.cls_target!r}")
    if cfg.mask_resolution not in ("image", "patch"):
        raise CftError(f"objective.mask_resolution must be 'image' or 'patch', got {cfg.mask_resolution!r}")
    use_labels = cfg.cls_target == "label"
    if cfg.name == "erm":
        return Classification()
    if cfg.name == "no-guidance":
        return ConsistencyOnly(cfg.temperature, use_labels)
    if cfg.name == "cft":
        loss = CFTLoss(
            cfg.form, cfg.align_weight, cfg.cls_weight, cfg.temperature, cfg.concept_weight, cfg.non_concept_weight
        )
        return RelevanceGuided(loss, cfg.method, cfg.create_graph, use_labels, cfg.mask_resolution)
    raise CftError(f"objective.name must be one of erm, cft, no-guidance; got {cfg.name!r}")
