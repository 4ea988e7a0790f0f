"""Training objectives: (model, batch) -> named loss terms (summed under "loss") and the logits.

A batch is a dict with "image" (B, C, H, W) float, "label" (B,) long and, for guided objectives,
"mask" (B, H, W) in [0, 1] at image resolution: the guidance mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cft.errors import CftError
from cft.losses import ALIGNMENT_FORMS, CFTLoss, consistency, mask_to_grid
from cft.relevance import METHODS, relevance_with_logits


@dataclass
class StepOutput:
    terms: dict[str, torch.Tensor]  # "loss" is the total that is minimised
    logits: torch.Tensor


class Objective(Protocol):
    needs_mask: bool

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput: ...


@dataclass
class ObjectiveConfig:
    """Which objective and its weights. Defaults are METHOD.md's CFT settings.

    name: erm (CE on the labels) | cft | no-guidance (cft's classification term alone) | robustvit (cft with
    RobustViT's MSE alignment, for object masks) | rrr | gradmask (input-gradient penalties off the mask) |
    rrda (foregrounds pasted on other images' backgrounds). The baselines rrr, gradmask and rrda use the
    labels in their CE whatever cls_target says; temperature divides the logits in every CE but erm's.
    """

    name: str = "cft"  # erm | cft | no-guidance | robustvit | rrr | gradmask | rrda
    form: str = "paper"  # paper | bce | robustvit (the alignment term of cft; robustvit always uses its own)
    method: str = "grad-rollout"
    create_graph: bool | None = None  # relevance: null = the method's default; rrr/gradmask: null or true only
    align_weight: float = 0.8
    cls_weight: float = 0.2
    temperature: float = 1.0
    concept_weight: float | None = None  # form robustvit: the foreground weight (null: 0.3)
    non_concept_weight: float | None = None  # form robustvit: the background weight (null: 2.0)
    cls_target: str = "self"  # self (the model's own argmax) | label (ground truth)
    mask_resolution: str = "image"  # image (upsample relevance) | patch (pool the mask to the grid)
    relevance_target: str | None = None  # predicted | label; null: label for robustvit, predicted for cft
    input_grad_weight: float | None = None  # rrr/gradmask penalty weight; null: 1000 for rrr, 4 for gradmask
    rrda_original_weight: float = 1.0  # rrda: weight of the CE on the unaltered images (0: composites only)


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


OBJECTIVES = ("erm", "cft", "no-guidance", "robustvit", "rrr", "gradmask", "rrda")


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective `cfg.name` with its settings; a bad value raises CftError naming the objective.* field.

    robustvit: RelevanceGuided with CFTLoss(form="robustvit"): 0.8 * (2.0 * mean((Phi * (1 - S))^2)
    + 0.3 * mean(S * (Phi - 1)^2)) + 0.2 * CE(z / T, own argmax), the relevance of the label's class, as in
    RobustViT's imagenet_finetune.py (align_weight, cls_weight, concept_weight = foreground,
    non_concept_weight = background, temperature, cls_target and relevance_target override; form is not read).
    Meant for object masks (`cft masks --object-masks`). rrr, gradmask, rrda: see cft.train.baselines.
    """
    from cft.train.baselines import GRADMASK_WEIGHT, RRDA, RRR, RRR_WEIGHT, GradMask  # it imports StepOutput

    _check_config(cfg)
    use_labels = cfg.cls_target == "label"
    if cfg.name == "erm":
        return Classification()
    if cfg.name == "no-guidance":
        return ConsistencyOnly(cfg.temperature, use_labels)
    if cfg.name in ("cft", "robustvit"):
        robustvit = cfg.name == "robustvit"
        loss = CFTLoss(
            "robustvit" if robustvit else cfg.form,
            cfg.align_weight,
            cfg.cls_weight,
            cfg.temperature,
            cfg.concept_weight,
            cfg.non_concept_weight,
        )
        target = cfg.relevance_target or ("label" if robustvit else "predicted")
        return RelevanceGuided(loss, cfg.method, cfg.create_graph, use_labels, cfg.mask_resolution, target)
    if cfg.name == "rrr":
        weight = RRR_WEIGHT if cfg.input_grad_weight is None else cfg.input_grad_weight
        return RRR(weight, cfg.temperature)
    if cfg.name == "gradmask":
        weight = GRADMASK_WEIGHT if cfg.input_grad_weight is None else cfg.input_grad_weight
        return GradMask(weight, cfg.temperature)
    return RRDA(cfg.rrda_original_weight, cfg.temperature)


def _check_config(cfg: ObjectiveConfig) -> None:
    if cfg.name not in OBJECTIVES:
        raise CftError(f"objective.name must be one of {', '.join(OBJECTIVES)}; got {cfg.name!r}")
    if cfg.form not in ALIGNMENT_FORMS:
        raise CftError(f"objective.form must be one of {', '.join(ALIGNMENT_FORMS)}, got {cfg.form!r}")
    if cfg.method not in METHODS:
        raise CftError(f"objective.method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.cls_target not in ("self", "label"):
        raise CftError(f"objective.cls_target must be 'self' or 'label', got {cfg.cls_target!r}")
    if cfg.mask_resolution not in ("image", "patch"):
        raise CftError(f"objective.mask_resolution must be 'image' or 'patch', got {cfg.mask_resolution!r}")
    if cfg.relevance_target not in (None, "predicted", "label"):
        raise CftError(f"objective.relevance_target must be 'predicted', 'label' or null, got {cfg.relevance_target!r}")
    weights = ("align_weight", "cls_weight", "concept_weight", "non_concept_weight", "input_grad_weight")
    for name in (*weights, "rrda_original_weight"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise CftError(f"objective.{name} must be a finite number >= 0, got {value}")
    if not (math.isfinite(cfg.temperature) and cfg.temperature > 0):
        raise CftError(f"objective.temperature must be > 0, got {cfg.temperature}")
    if cfg.name in ("rrr", "gradmask") and cfg.create_graph is False:
        raise CftError(
            f"objective.create_graph=false makes the {cfg.name} penalty a constant that never trains the model "
            "(the bug of the original scripts); leave it null"
        )
