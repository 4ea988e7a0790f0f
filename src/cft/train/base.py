"""What every training objective shares: its step output, its protocol, its config and the registry by name.

Objectives register a builder (ObjectiveConfig -> Objective) under their name; `build_objective` checks the
config and calls it. The objectives live in `cft.train.objectives` (erm, cft, no-guidance, robustvit) and
`cft.train.baselines` (rrr, gradmask, rrda); both import this module, never each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from cft.config import bounded
from cft.errors import CftError
from cft.losses import ALIGNMENT_FORMS
from cft.registry import Registry
from cft.relevance import METHODS

# the consistency term's target: the model's own argmax (the paper), the label, or the original model's prediction
CLS_TARGETS = ("self", "label", "original")


@dataclass
class StepOutput:
    terms: dict[str, torch.Tensor]  # "loss" is the total that is minimised
    logits: torch.Tensor


class Objective(Protocol):
    needs_mask: bool

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput: ...


@dataclass
class ObjectiveConfig:
    """Which objective and its weights. Defaults are the paper's CFT settings
    (align 0.8, cls 0.2, grad-rollout relevance of the predicted class, the paper's loss form).

    name: erm (CE on the labels) | cft | no-guidance (cft's classification term alone) | robustvit (cft with
    RobustViT's MSE alignment, for object masks) | rrr | gradmask (input-gradient penalties off the mask) |
    rrda (foregrounds pasted on other images' backgrounds). The baselines rrr, gradmask and rrda use the
    labels in their CE whatever cls_target says; temperature divides the logits in every CE but erm's.
    """

    name: str = "cft"  # erm | cft | no-guidance | robustvit | rrr | gradmask | rrda
    form: str = "paper"  # paper | bce | robustvit (the alignment term of cft; robustvit always uses its own)
    method: str = "grad-rollout"
    create_graph: bool | None = None  # relevance: null = the method's default; rrr/gradmask: null or true only
    align_weight: float = bounded(0.8, ge=0)
    cls_weight: float = bounded(0.2, ge=0)
    temperature: float = bounded(1.0, gt=0)
    concept_weight: float | None = bounded(None, ge=0)  # form robustvit: the foreground weight (null: 0.3)
    non_concept_weight: float | None = bounded(None, ge=0)  # form robustvit: the background weight (null: 2.0)
    cls_target: str = "self"  # self (own argmax) | label (ground truth) | original (KL to the starting model)
    mask_resolution: str = "image"  # image (upsample relevance) | patch (pool the mask to the grid)
    relevance_target: str | None = None  # predicted | label; null: label for robustvit, predicted for cft
    input_grad_weight: float | None = bounded(None, ge=0)  # rrr/gradmask penalty; null: 1000 for rrr, 4 for gradmask
    rrda_original_weight: float = bounded(1.0, ge=0)  # rrda: the CE on unaltered images (0: composites only)
    anchor_weight: float = bounded(1.0, ge=0)  # cls_target original + data.anchor_images: the KL's weight


ObjectiveBuilder = Callable[[ObjectiveConfig], Objective]
OBJECTIVES: Registry[ObjectiveBuilder] = Registry("objective")  # filled by the modules that define objectives


def register_objective(name: str, description: str | None = None) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Decorator: register a builder (ObjectiveConfig -> Objective) as the objective `name`; description: one line
    for `cft ls objectives` (None: the builder's docstring)."""
    return OBJECTIVES.register(name, description)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective `cfg.name` with its settings; a bad value raises CftError naming the objective.* field."""
    _check_config(cfg)
    return OBJECTIVES[cfg.name](cfg)


def _check_config(cfg: ObjectiveConfig) -> None:
    if cfg.name not in OBJECTIVES:
        raise CftError(f"objective.name must be one of {', '.join(OBJECTIVES)}; got {cfg.name!r}")
    if cfg.form not in ALIGNMENT_FORMS:
        raise CftError(f"objective.form must be one of {', '.join(ALIGNMENT_FORMS)}, got {cfg.form!r}")
    if cfg.method not in METHODS:
        raise CftError(f"objective.method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.cls_target not in CLS_TARGETS:
        raise CftError(f"objective.cls_target must be one of {', '.join(CLS_TARGETS)}, got {cfg.cls_target!r}")
    if cfg.mask_resolution not in ("image", "patch"):
        raise CftError(f"objective.mask_resolution must be 'image' or 'patch', got {cfg.mask_resolution!r}")
    if cfg.relevance_target not in (None, "predicted", "label"):
        raise CftError(f"objective.relevance_target must be 'predicted', 'label' or null, got {cfg.relevance_target!r}")
    weights = ("align_weight", "cls_weight", "concept_weight", "non_concept_weight", "input_grad_weight")
    for name in (*weights, "rrda_original_weight", "anchor_weight"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise CftError(f"objective.{name} must be a finite number >= 0, got {value}")
    if not (math.isfinite(cfg.temperature) and cfg.temperature > 0):
        raise CftError(f"objective.temperature must be > 0, got {cfg.temperature}")
    if cfg.cls_target == "original" and cfg.name not in ("cft", "robustvit", "no-guidance"):
        raise CftError(
            f"objective.cls_target=original anchors the consistency term of cft, robustvit and no-guidance; "
            f"{cfg.name} has none"
        )
    if cfg.name in ("rrr", "gradmask") and cfg.create_graph is False:
        raise CftError(
            f"objective.create_graph=false makes the {cfg.name} penalty a constant that never trains the model "
            "(the bug of the original scripts); leave it null"
        )
