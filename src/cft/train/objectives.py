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

from cft.config import bounded
from cft.errors import CftError
from cft.losses import ALIGNMENT_FORMS, CFTLoss, consistency, mask_to_grid
from cft.relevance import METHODS, relevance_with_logits
from cft.train.base import (
    CLS_TARGETS,
    Objective,
    ObjectiveConfig,
    StepOutput,
    check_temperature,
    check_weights,
    register_objective,
)


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


# ---- settings: each objective's own fields (a recipe's `objective:` section, flat) --------------------------
@dataclass
class ERMSettings(ObjectiveConfig):
    """erm reads nothing but its name."""

    name: str = "erm"


@dataclass
class ConsistencySettings(ObjectiveConfig):
    """no-guidance: CFT's classification term alone; its target and temperature."""

    name: str = "no-guidance"
    temperature: float = bounded(1.0, gt=0)  # divides the logits of the consistency term
    cls_target: str = "self"  # self (own argmax) | label (ground truth) | original (KL to the starting model)
    anchor_weight: float = bounded(1.0, ge=0)  # cls_target original + data.anchor_images: the KL's weight

    def check(self) -> None:
        check_temperature(self.temperature)
        if self.cls_target not in CLS_TARGETS:
            raise CftError(f"objective.cls_target must be one of {', '.join(CLS_TARGETS)}, got {self.cls_target!r}")
        check_weights(self, ("anchor_weight",))


@dataclass
class RelevanceSettings(ConsistencySettings):
    """robustvit: relevance aligned with the mask (RobustViT's MSE, fixed form) plus the consistency term."""

    name: str = "robustvit"
    method: str = "grad-rollout"
    create_graph: bool | None = None  # null: the relevance method's default
    align_weight: float = bounded(0.8, ge=0)
    cls_weight: float = bounded(0.2, ge=0)
    # the alignment's weights: the paper's / bce forms' concept and non-concept terms (null: 0.5, 1.2), robustvit's
    # foreground and background (null: 0.3, 2.0)
    concept_weight: float | None = bounded(None, ge=0)
    non_concept_weight: float | None = bounded(None, ge=0)
    mask_resolution: str = "image"  # image (upsample relevance) | patch (pool the mask to the grid)
    relevance_target: str | None = None  # predicted | label; null: label for robustvit, predicted for cft

    def check(self) -> None:
        super().check()
        if self.method not in METHODS:
            raise CftError(f"objective.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.mask_resolution not in ("image", "patch"):
            raise CftError(f"objective.mask_resolution must be 'image' or 'patch', got {self.mask_resolution!r}")
        if self.relevance_target not in (None, "predicted", "label"):
            raise CftError(
                f"objective.relevance_target must be 'predicted', 'label' or null, got {self.relevance_target!r}"
            )
        check_weights(self, ("align_weight", "cls_weight", "concept_weight", "non_concept_weight"))


@dataclass
class CFTSettings(RelevanceSettings):
    """cft: the defaults are the paper's (align 0.8, cls 0.2, grad-rollout relevance of the predicted class, the
    paper's loss form)."""

    name: str = "cft"
    form: str = "paper"  # paper | bce | robustvit: the alignment term

    def check(self) -> None:
        if self.form not in ALIGNMENT_FORMS:
            raise CftError(f"objective.form must be one of {', '.join(ALIGNMENT_FORMS)}, got {self.form!r}")
        super().check()


# ---- the registry ----------------------------------------------------------------------------------------
@register_objective("erm", "cross-entropy on the labels only (no guidance)", settings=ERMSettings)
def _erm(cfg: ERMSettings) -> Objective:
    return Classification()


@register_objective(
    "no-guidance",
    "the classification term of CFT alone, no relevance (the ablation)",
    settings=ConsistencySettings,
)
def _no_guidance(cfg: ConsistencySettings) -> Objective:
    return ConsistencyOnly(cfg.temperature, cfg.cls_target, anchor_weight=cfg.anchor_weight)


def _relevance_guided(cfg: RelevanceSettings, form: str, default_target: str) -> Objective:
    """form: the alignment term; default_target: the class whose relevance is aligned when relevance_target is
    null."""
    loss = CFTLoss(form, cfg.align_weight, cfg.cls_weight, cfg.temperature, cfg.concept_weight, cfg.non_concept_weight)
    target = cfg.relevance_target or default_target
    return RelevanceGuided(
        loss, cfg.method, cfg.create_graph, cfg.cls_target, cfg.mask_resolution, target, cfg.anchor_weight
    )


@register_objective(
    "cft",
    "concept-guided fine-tuning: relevance aligned with the concept masks, plus CFT's classification term",
    settings=CFTSettings,
)
def _cft(cfg: CFTSettings) -> Objective:
    return _relevance_guided(cfg, cfg.form, default_target="predicted")


@register_objective(
    "robustvit",
    "RobustViT: relevance pushed off the background and onto the foreground mask",
    settings=RelevanceSettings,
)
def _robustvit(cfg: RelevanceSettings) -> Objective:
    """RelevanceGuided with CFTLoss(form="robustvit"): 0.8 * (2.0 * mean((Phi * (1 - S))^2)
    + 0.3 * mean(S * (Phi - 1)^2)) + 0.2 * CE(z / T, own argmax), the relevance of the label's class, as in
    RobustViT's imagenet_finetune.py (align_weight, cls_weight, concept_weight = foreground,
    non_concept_weight = background, temperature, cls_target and relevance_target override; it has no form).
    Meant for object masks (`cft masks --object-masks`)."""
    return _relevance_guided(cfg, "robustvit", default_target="label")
