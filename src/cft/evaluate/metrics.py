"""Metrics: top-k, group accuracies (worst group, plain and weighted averages), relevance-vs-mask alignment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cft.errors import CftError


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Share of rows whose label is among the k largest logits."""
    if len(labels) == 0:
        raise CftError("accuracy of an empty set is undefined")
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def group_accuracies(
    correct: np.ndarray,
    groups: np.ndarray,
    train_group_sizes: Mapping[int, int] | None = None,
    min_size: int = 1,
) -> dict[str, float | dict[int, float]]:
    """Per-group accuracy, the worst group, the plain mean over groups and the mean weighted by training sizes.

    The weighted average weighs each group by its share of the *training* set (as Waterbirds papers report);
    groups absent from `train_group_sizes` weigh 0. Without sizes it equals the plain average. Groups with fewer
    than `min_size` evaluation samples are left out (a group of one image makes the worst group 0 or 1 by chance).
    """
    correct, groups = np.asarray(correct, bool), np.asarray(groups)
    if correct.shape != groups.shape or correct.size == 0:
        raise CftError("correct and groups must be non-empty and of the same length")
    ids, counts = np.unique(groups, return_counts=True)
    per = {int(g): float(correct[groups == g].mean()) for g, n in zip(ids, counts, strict=True) if n >= min_size}
    if not per:
        raise CftError(f"no group has at least min_size={min_size} samples")
    plain = float(np.mean(list(per.values())))
    weighted = plain
    if train_group_sizes:
        sizes = np.array([train_group_sizes.get(g, 0) for g in per], float)
        if sizes.sum() > 0:
            weighted = float((sizes * np.array(list(per.values()))).sum() / sizes.sum())
    return {"per_group": per, "worst_group": min(per.values()), "average": plain, "weighted_average": weighted}


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of ranking pixels by score against a binary mask (mean precision at each positive); NaN if none."""
    scores, positives = np.asarray(scores, float).ravel(), np.asarray(positives, bool).ravel()
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / n_pos)


def relevance_alignment(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, mIoU (foreground and background) and mAP of relevance maps against masks, per image averaged.

    Each map is binarised at its own mean (the ImageNet-segmentation protocol of Chefer et al.). Images whose
    mask is empty are skipped for mAP.
    """
    maps, masks = np.asarray(maps, float), np.asarray(masks, bool)
    if maps.shape != masks.shape:
        raise CftError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    pa, iou, ap = [], [], []
    for m, s in zip(maps, masks, strict=True):
        pred = m > m.mean()
        pa.append(float((pred == s).mean()))
        ious = []
        for p_cls, s_cls in ((pred, s), (~pred, ~s)):
            union = (p_cls | s_cls).sum()
            ious.append(float((p_cls & s_cls).sum() / union) if union else 1.0)
        iou.append(float(np.mean(ious)))
        ap.append(average_precision(m, s))
    aps = [a for a in ap if not np.isnan(a)]
    return {
        "pixel_accuracy": float(np.mean(pa)),
        "miou": float(np.mean(iou)),
        "map": float(np.mean(aps)) if aps else float("nan"),
    }


def relevance_share(maps: np.ndarray, masks: np.ndarray) -> float:
    """Mean share of each map's total relevance that falls inside its mask."""
    maps, masks = np.asarray(maps, float), np.asarray(masks, bool)
    totals = maps.reshape(len(maps), -1).sum(1)
    inside = (maps * masks).reshape(len(maps), -1).sum(1)
    return float(np.mean(np.where(totals > 0, inside / np.maximum(totals, 1e-12), 0.0)))


def relevance_peak_inside(maps: np.ndarray, masks: np.ndarray) -> float:
    """Share of images whose map peaks inside its mask: the first pixel of maximal relevance (a token's upsampled
    block shares one value) lies in the mask. Images with an empty mask are skipped (NaN if all are)."""
    maps, masks = np.asarray(maps, float), np.asarray(masks, bool)
    if maps.shape != masks.shape:
        raise CftError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    flat_maps, flat_masks = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
    keep = flat_masks.any(1)
    if not keep.any():
        return float("nan")
    peaks = flat_maps[keep].argmax(1)
    return float(flat_masks[keep][np.arange(int(keep.sum())), peaks].mean())


def relevance_rank_accuracy(maps: np.ndarray, masks: np.ndarray) -> float:
    """Mean over images of the share of the |mask| most relevant pixels that lie inside the mask.

    Relevance rank accuracy (Arras et al., 2022); images with an empty mask are skipped (NaN if all are).
    Ties are broken by pixel order (a stable sort), so a constant map scores the mask's share of the first pixels.
    """
    maps, masks = np.asarray(maps, float), np.asarray(masks, bool)
    if maps.shape != masks.shape:
        raise CftError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    scores = []
    for m, s in zip(maps.reshape(len(maps), -1), masks.reshape(len(masks), -1), strict=True):
        k = int(s.sum())
        if k:
            top = np.argsort(-m, kind="stable")[:k]
            scores.append(float(s[top].mean()))
    return float(np.mean(scores)) if scores else float("nan")


def mean_std(runs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one aggregate over runs (seeds, checkpoints) of nested metric dicts: per number, the mean and the
    population standard deviation (ddof 0; 0 for one run) of its finite values; NaN where no run has one (None
    beside numbers, as results files write an undefined number, counts as NaN). Integers equal in every run
    (counts) stay as they are; strings and other leaves are left out."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for run in runs for k in run))
    for key in keys:
        values = [run[key] for run in runs if key in run]
        if all(isinstance(v, Mapping) for v in values):
            mean[key], std[key] = mean_std(values)
        elif any(v is not None for v in values) and all(v is None or is_number(v) for v in values):
            if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
                mean[key], std[key] = values[0], 0
                continue
            finite = [float(v) for v in values if v is not None and math.isfinite(v)]
            mean[key] = float(np.mean(finite)) if finite else float("nan")
            std[key] = float(np.std(finite)) if len(finite) > 1 else (0.0 if finite else float("nan"))
    return mean, std


def is_number(value: object) -> bool:
    """An int or float, not a bool (NaN included: a number that is undefined)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """The mean of `values` (one per seed) and the half-width of its Student t interval at `level` (NaN for
    one value). Given per-seed differences of two variants on the same images, it is the paired t interval."""
    from scipy import stats

    v = np.asarray(values, float)
    if len(v) < 2:
        return {"mean": float(v.mean()), "half_width": float("nan"), "n": len(v)}
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": float(v.mean()), "half_width": half, "n": len(v)}


def paired_differences(
    per_seed: Sequence[Mapping[str, Mapping[str, Mapping[str, Any]]]],
    pairs: Sequence[tuple[str, str]],
    splits: Sequence[str],
    key: str = "top1",
) -> dict[str, dict[str, dict[str, Any]]]:
    """For each pair (a, b) of variants and each split: a's `key` minus b's per seed (runs[variant][split][key]),
    their mean and paired 95 % t interval, and the per-seed differences."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, b in pairs:
        out[f"{a} - {b}"] = {}
        for split in splits:
            diffs = [float(r[a][split][key] - r[b][split][key]) for r in per_seed]
            out[f"{a} - {b}"][split] = {**t_interval(diffs), "per_seed": diffs}
    return out
