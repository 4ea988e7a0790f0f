"""The baselines of docs/method.md as objectives of the one trainer: RRR, GradMask and RRDA.

RRR and GradMask penalise the input gradient off the guidance mask (on the background). The penalty depends
on the weights only through that gradient, so it is taken with create_graph=True and its own gradient reaches
the weights (second order). RobustViT's baseline scripts took it without create_graph: the penalty was then a
constant, logged but never trained. RRDA pastes each image's foreground on another image's background.
(RobustViT itself is a preset of `RelevanceGuided`: objective.name=robustvit.)

Every objective here uses the ground-truth labels in its cross-entropy, CE(logits / T, label), as the
baselines' scripts do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cft.config import bounded
from cft.errors import CftError
from cft.relevance.capture import capture
from cft.train.base import (
    Objective,
    ObjectiveConfig,
    StepOutput,
    check_temperature,
    check_weights,
    register_objective,
)

# Default penalty weights (objective.input_grad_weight = null picks these).
# RRR: l2_grads = 1000, the default of Ross et al.'s reference code for the same sum-over-inputs penalty.
RRR_WEIGHT = 1000.0
# GradMask: RobustViT's imagenet_finetune_gradmask.py minimises 0.8 * penalty + 0.2 * CE = 0.2 * (CE + 4 * penalty).
GRADMASK_WEIGHT = 4.0


def input_gradient(
    model: nn.Module,
    images: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """d score(logits) / d images (B, C, H, W) and the logits, from one forward pass.

    create_graph=True keeps the gradient in the graph, so a loss on it trains the weights. timm's fused
    attention has no second derivative on the CPU, so it is switched off for this forward pass.
    """
    with torch.enable_grad(), _unfused(model):
        x = images.detach().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(score(logits), x, create_graph=create_graph, retain_graph=True)
    return grad, logits


def _unfused(model: nn.Module) -> contextlib.AbstractContextManager:
    blocks = getattr(model, "blocks", None)
    if blocks is not None and all(hasattr(getattr(b, "attn", None), "fused_attn") for b in blocks):
        return capture(model, attentions=False, unfused=True)
    return contextlib.nullcontext()


def _background(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1 - mask) * grad, the (B, H, W) mask broadcast over the C channels."""
    if mask.dim() != 3 or mask.shape[0] != grad.shape[0] or mask.shape[-2:] != grad.shape[-2:]:
        raise CftError(
            f"mask must be (B, H, W) = {(grad.shape[0], *grad.shape[-2:])} like the images, got {tuple(mask.shape)}"
        )
    return (1 - mask.to(grad.dtype))[:, None] * grad


def rrr_penalty(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_b sum_{c,h,w} ((1 - m_bhw) * g_bchw)^2: squares summed over channels and pixels, batch mean."""
    return _background(grad, mask).pow(2).flatten(1).sum(1).mean()


def gradmask_penalty(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_{b,c,h,w} ((1 - m_bhw) * g_bchw)^2: the mean square over every element (an MSE against zero)."""
    return _background(grad, mask).pow(2).mean()


def _penalised(
    logits: torch.Tensor, labels: torch.Tensor, penalty: torch.Tensor, weight: float, temperature: float
) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(logits / temperature, labels)
    return {"ce": ce, "penalty": penalty, "loss": ce + weight * penalty}


@dataclass
class RRR:
    """Right for the Right Reasons (Ross, Hughes, Doshi-Velez, IJCAI 2017), the background as annotation A.

    g = d/dx sum_b sum_k log softmax(z_b)_k (per image: a ViT's images do not interact),
    penalty = mean_b sum_{c,h,w} ((1 - m_bhw) * g_bchw)^2, loss = CE(z / T, y) + input_grad_weight * penalty.
    create_graph=False reproduces the original scripts' bug (the penalty never trains); for demonstration only.
    """

    input_grad_weight: float = RRR_WEIGHT
    temperature: float = 1.0
    create_graph: bool = True
    needs_mask = True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        grad, logits = input_gradient(model, batch["image"], _summed_log_probs, self.create_graph)
        penalty = rrr_penalty(grad, batch["mask"])
        return StepOutput(_penalised(logits, batch["label"], penalty, self.input_grad_weight, self.temperature), logits)


@dataclass
class GradMask:
    """GradMask (Simpson, Dutil, Bengio, Cohen, MIDL 2019) for K classes, as RobustViT's gradmask script does.

    g = d/dx sum_b z_{b, y_b} (the gradient of each image's label logit; the paper, binary, used the contrast
    of its two outputs), penalty = mean_{b,c,h,w} ((1 - m_bhw) * g_bchw)^2 (the paper's L2 norm of the masked
    saliency, squared and averaged: smooth where the background gradient is zero),
    loss = CE(z / T, y) + input_grad_weight * penalty.
    create_graph=False reproduces the original scripts' bug (the penalty never trains); for demonstration only.
    """

    input_grad_weight: float = GRADMASK_WEIGHT
    temperature: float = 1.0
    create_graph: bool = True
    needs_mask = True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        labels = batch["label"]

        def label_logits(logits: torch.Tensor) -> torch.Tensor:
            return logits.gather(1, labels[:, None].to(logits.device)).sum()

        grad, logits = input_gradient(model, batch["image"], label_logits, self.create_graph)
        penalty = gradmask_penalty(grad, batch["mask"])
        return StepOutput(_penalised(logits, labels, penalty, self.input_grad_weight, self.temperature), logits)


def _summed_log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=1).sum()


def background_permutation(n: int) -> torch.Tensor:
    """A random n-cycle from torch's global (CPU) RNG: perm[i] != i for n >= 2, so no image keeps its own
    background; [0] for n = 1. The CPU RNG is the one the trainer seeds and saves with its checkpoints."""
    order = torch.randperm(n)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def paste_foregrounds(images: torch.Tensor, masks: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """composite_i = m_i * x_i + (1 - m_i) * x_background[i]: image i's foreground (the soft mask as alpha)
    over image background[i]. Where background[i]'s own object lies outside m_i it stays visible."""
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise CftError(
            f"mask must be (B, H, W) = {(images.shape[0], *images.shape[-2:])} like the images, "
            f"got {tuple(masks.shape)}"
        )
    alpha = masks.to(images.dtype)[:, None]
    return alpha * images + (1 - alpha) * images[background.to(images.device)]


@dataclass
class RRDA:
    """Foreground-on-other-backgrounds augmentation within the batch.

    background = background_permutation(B); x'_i = m_i * x_i + (1 - m_i) * x_background[i], labelled y_i
    (the foreground's label). loss = CE(z(x') / T, y) + original_weight * CE(z(x) / T, y); the originals and
    composites go through one forward pass. original_weight = 0 trains on the composites alone. The logits
    returned are the originals' (the composites' when original_weight = 0).
    """

    original_weight: float = 1.0
    temperature: float = 1.0
    needs_mask = True

    def composite(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pasted images and, per image, the index of the image whose background it got."""
        background = background_permutation(images.shape[0])
        return paste_foregrounds(images, masks, background), background

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        images, labels = batch["image"], batch["label"]
        pasted, _ = self.composite(images, batch["mask"])
        if self.original_weight > 0:
            logits, pasted_logits = model(torch.cat([images, pasted])).split(images.shape[0])
        else:
            logits = pasted_logits = model(pasted)
        terms = {"ce_composite": F.cross_entropy(pasted_logits / self.temperature, labels)}
        terms["loss"] = terms["ce_composite"]
        if self.original_weight > 0:
            terms["ce_original"] = F.cross_entropy(logits / self.temperature, labels)
            terms["loss"] = terms["loss"] + self.original_weight * terms["ce_original"]
        return StepOutput(terms, logits)


# ---- settings: each objective's own fields (a recipe's `objective:` section, flat) --------------------------
@dataclass
class InputGradientSettings(ObjectiveConfig):
    """rrr and gradmask: the input-gradient penalty's weight; CE(z / T, label) + input_grad_weight * penalty."""

    name: str = "rrr"
    temperature: float = bounded(1.0, gt=0)  # divides the logits of the CE
    input_grad_weight: float | None = bounded(None, ge=0)  # null: 1000 for rrr, 4 for gradmask
    create_graph: bool | None = None  # null or true: the penalty is trained (second order); false is refused

    def check(self) -> None:
        check_temperature(self.temperature)
        check_weights(self, ("input_grad_weight",))
        if self.create_graph is False:
            raise CftError(
                f"objective.create_graph=false makes the {self.name} penalty a constant that never trains the model "
                "(the bug of the original scripts); leave it null"
            )


@dataclass
class RRRSettings(InputGradientSettings):
    name: str = "rrr"


@dataclass
class GradMaskSettings(InputGradientSettings):
    name: str = "gradmask"


@dataclass
class RRDASettings(ObjectiveConfig):
    """rrda: CE(z(x') / T, y) + rrda_original_weight * CE(z(x) / T, y)."""

    name: str = "rrda"
    temperature: float = bounded(1.0, gt=0)
    rrda_original_weight: float = bounded(1.0, ge=0)  # the CE on unaltered images (0: composites only)

    def check(self) -> None:
        check_temperature(self.temperature)
        check_weights(self, ("rrda_original_weight",))


# ---- the registry ----------------------------------------------------------------------------------------
@register_objective(
    "rrr",
    "Right for the Right Reasons (Ross et al. 2017): the input gradient penalised off the mask",
    settings=RRRSettings,
)
def _rrr(cfg: RRRSettings) -> Objective:
    return RRR(RRR_WEIGHT if cfg.input_grad_weight is None else cfg.input_grad_weight, cfg.temperature)


@register_objective(
    "gradmask",
    "GradMask (Simpson et al. 2019): the label logit's input gradient penalised off the mask",
    settings=GradMaskSettings,
)
def _gradmask(cfg: GradMaskSettings) -> Objective:
    return GradMask(GRADMASK_WEIGHT if cfg.input_grad_weight is None else cfg.input_grad_weight, cfg.temperature)


@register_objective(
    "rrda",
    "RRDA: each image's foreground pasted on another image's background, trained on both",
    settings=RRDASettings,
)
def _rrda(cfg: RRDASettings) -> Objective:
    return RRDA(cfg.rrda_original_weight, cfg.temperature)
