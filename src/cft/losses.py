"""The CFT objective and its relatives, on relevance maps in [0, 1] and guidance masks.

Maps and masks must have the same spatial shape: bring a mask to the patch grid with `mask_to_grid`, or
a map to the image with `cft.upsample`. Masks may be binary or soft (values in [0, 1]). Every term is
finite for empty and full masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cft.errors import CftError

LOG_EPS = 1e-6
ALIGNMENT_FORMS = ("paper", "bce", "robustvit")


def mask_to_grid(mask: torch.Tensor, grid: tuple[int, int], mode: str = "mean") -> torch.Tensor:
    """Image-resolution masks (B, H, W) to the patch grid (B, gh, gw).

    mode "mean": the fraction of each patch's pixels inside the mask (a soft mask); "any": 1 where any pixel
    is inside; "majority": 1 where at least half are. Uses area pooling, exact when H, W divide the grid.
    """
    if mask.dim() != 3:
        raise CftError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}")
    frac = F.adaptive_avg_pool2d(mask[:, None].float(), grid)[:, 0]
    if mode == "mean":
        return frac
    if mode == "any":
        return (frac > 0).float()
    if mode == "majority":
        return (frac >= 0.5).float()
    raise CftError(f"unknown mask_to_grid mode {mode!r}; choose mean, any or majority")


def _check_pair(relevance: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map and mask in float32 (at least): LOG_EPS is below bf16's resolution near 1, where 1 - eps rounds to 1
    and log(1 - Phi) would be -inf, so every loss runs in float32 whatever autocast made the map in."""
    if relevance.shape != mask.shape:
        raise CftError(
            f"relevance {tuple(relevance.shape)} and mask {tuple(mask.shape)} differ in shape: convert the mask "
            "with cft.losses.mask_to_grid or the map with cft.upsample"
        )
    dtype = torch.promote_types(relevance.dtype, torch.float32)
    return relevance.to(dtype), mask.to(dtype)


def concept_alignment(
    relevance: torch.Tensor,
    mask: torch.Tensor,
    concept_weight: float = 0.5,
    non_concept_weight: float = 1.2,
    eps: float = LOG_EPS,
) -> dict[str, torch.Tensor]:
    """The paper's region-normalised form, per image then averaged over the batch.

    L_concept = -(1/|S|) sum_{p in S} log Phi_p, L_non = -(1/|S'|) sum_{p not in S} log(1 - Phi_p),
    align = concept_weight * L_concept + non_concept_weight * L_non. With a soft mask, |S| = sum S and
    |S'| = sum (1 - S). An empty region contributes 0 to its term.
    """
    relevance, s = _check_pair(relevance, mask)
    s = s.flatten(1)
    phi = relevance.flatten(1).clamp(eps, 1 - eps)
    inside, outside = s.sum(1), (1 - s).sum(1)
    concept = -(s * phi.log()).sum(1) / inside.clamp_min(eps)
    non = -((1 - s) * (1 - phi).log()).sum(1) / outside.clamp_min(eps)
    return _weighted_terms(concept.mean(), non.mean(), concept_weight, non_concept_weight)


def bce_alignment(
    relevance: torch.Tensor,
    mask: torch.Tensor,
    concept_weight: float = 0.5,
    non_concept_weight: float = 1.2,
    eps: float = LOG_EPS,
) -> dict[str, torch.Tensor]:
    """The released code's form: BCE(Phi * S, S) and BCE(Phi * (1 - S), 0), each averaged over all pixels."""
    relevance, s = _check_pair(relevance, mask)
    concept = F.binary_cross_entropy((relevance * s).clamp(eps, 1 - eps), s)
    non = F.binary_cross_entropy((relevance * (1 - s)).clamp(eps, 1 - eps), torch.zeros_like(s))
    return _weighted_terms(concept, non, concept_weight, non_concept_weight)


def robustvit_alignment(
    relevance: torch.Tensor,
    mask: torch.Tensor,
    foreground_weight: float = 0.3,
    background_weight: float = 2.0,
) -> dict[str, torch.Tensor]:
    """RobustViT's MSE form: 2 * mean((Phi * (1 - S))^2) + 0.3 * mean(S * (Phi - 1)^2)."""
    relevance, s = _check_pair(relevance, mask)
    background = ((relevance * (1 - s)) ** 2).mean()
    foreground = (s * (relevance - 1) ** 2).mean()
    return _weighted_terms(foreground, background, foreground_weight, background_weight)


def _weighted_terms(
    concept: torch.Tensor, non: torch.Tensor, concept_weight: float, non_weight: float
) -> dict[str, torch.Tensor]:
    return {"concept": concept, "non_concept": non, "align": concept_weight * concept + non_weight * non}


def consistency(
    logits: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """CE(logits / T, target): the model's own current top-1 (detached) by default, or ground-truth `labels`.

    With `reference` logits (the original model's on the same images), KL(softmax(reference / T) || softmax(logits
    / T)) instead, averaged over the batch: the whole predicted distribution is anchored, the classes absent from
    the batch included, where CE on the argmax only pushes the batch's own classes up.
    """
    if temperature <= 0:
        raise CftError(f"temperature must be > 0, got {temperature}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 under autocast too
    if reference is not None:
        target = F.log_softmax(reference.detach().to(logits.dtype) / temperature, dim=1)
        return F.kl_div(F.log_softmax(logits / temperature, dim=1), target, log_target=True, reduction="batchmean")
    target = logits.detach().argmax(dim=1) if labels is None else labels
    return F.cross_entropy(logits / temperature, target)


@dataclass
class CFTLoss:
    """L = align_weight * L_align + cls_weight * L_cls, with docs/method.md's defaults (0.8, 0.2, T = 1).

    form: "paper" (region-normalised logs), "bce" (the released code) or "robustvit" (MSE).
    Returns every term by name, and the total under "loss".
    """

    form: str = "paper"
    align_weight: float = 0.8
    cls_weight: float = 0.2
    temperature: float = 1.0
    concept_weight: float | None = None
    non_concept_weight: float | None = None

    def __post_init__(self) -> None:
        if self.form not in ALIGNMENT_FORMS:
            raise CftError(f"unknown alignment form {self.form!r}; choose one of {', '.join(ALIGNMENT_FORMS)}")

    def alignment(self, relevance: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        weights = {}
        if self.form == "robustvit":
            names = ("foreground_weight", "background_weight")
            fn = robustvit_alignment
        else:
            names = ("concept_weight", "non_concept_weight")
            fn = concept_alignment if self.form == "paper" else bce_alignment
        for name, value in zip(names, (self.concept_weight, self.non_concept_weight), strict=True):
            if value is not None:
                weights[name] = value
        return fn(relevance, mask, **weights)

    def __call__(
        self,
        relevance: torch.Tensor,
        mask: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        with torch.autocast(relevance.device.type, enabled=False):  # every term in float32 (see _check_pair)
            terms = self.alignment(relevance, mask)
            terms["cls"] = consistency(logits, self.temperature, labels, reference)
            terms["loss"] = self.align_weight * terms["align"] + self.cls_weight * terms["cls"]
        return terms
