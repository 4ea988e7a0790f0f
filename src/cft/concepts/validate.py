"""Concept validation (docs/method.md step 2): keep concepts a segmenter actually finds on the class's images.

Rule, per class, on its P images:
  1. occurrence rate of a concept = share of the P images where its mask is non-empty; a concept whose rate is
     under `min_occurrence` (15 %) is dropped;
  2. optionally (`max_object_iou`, off in the paper), a concept whose mask, on the images where it is found,
     matches the object mask at a mean IoU of at least `max_object_iou` is dropped: it names the whole object (the
     class, a kind or a superclass), so its mask is an object mask, not a concept's;
  3. then coverage = mean over the images of IoU(union of the kept concepts' masks, object mask); if it is under
     `min_coverage` (20 %) every concept of the class is dropped (the concepts do not describe the object).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cft.concepts.bank import ConceptBank
from cft.errors import CftError
from cft.segmenter import Segmenter

if TYPE_CHECKING:
    from cft.world import SyntheticWorld, WorldSplit


@dataclass(frozen=True)
class ValidationConfig:
    images_per_class: int = 30  # P; the first P images given per class are used
    min_occurrence: float = 0.15
    min_coverage: float = 0.20
    max_object_iou: float | None = None  # drop concepts whose masks are the object's (IoU >= this); null: keep all

    def __post_init__(self) -> None:
        if isinstance(self.images_per_class, bool) or not isinstance(self.images_per_class, int):
            raise CftError(f"validation: images_per_class must be an integer, got {self.images_per_class!r}")
        if self.images_per_class < 1:
            raise CftError(f"validation: images_per_class must be >= 1, got {self.images_per_class}")
        for name in ("min_occurrence", "min_coverage"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise CftError(f"validation: {name} must be a number in [0, 1], got {v!r}")
        v = self.max_object_iou
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0):
            raise CftError(f"validation: max_object_iou must be null or a number in (0, 1], got {v!r}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly (1.0)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def validate_bank(
    bank: ConceptBank,
    images_by_class: Mapping[str, Sequence[Any]],
    segmenter: Segmenter,
    object_masks_by_class: Mapping[str, Sequence[np.ndarray]],
    cfg: ValidationConfig | None = None,
) -> tuple[ConceptBank, dict[str, Any]]:
    """Validate every class of `bank` on its images (see the module docstring for the rule).

    A concept is kept if its occurrence rate >= `min_occurrence`, and then only if its class's coverage (mean IoU
    between the union of the kept concepts' masks and the object mask) >= `min_coverage`; otherwise all the class's
    concepts are dropped. The segmenter is called once per class, with the class's concept list for each image; a
    phrase missing from its answer counts as not found. Returns a new bank (dropped concepts with their reason in
    `dropped`; each kept concept's `stats` holds occurrence, score, mask_fraction, coverage and images) and stats:
    {"config", "segmenter", "classes": {class: {"images", "coverage", "kept", "concepts": {name: {...}}}}}.
    `score` is the mean segmenter confidence and `mask_fraction` the mean foreground fraction, both over all images.
    """
    cfg = cfg or ValidationConfig()
    out = bank.copy()
    per_class: dict[str, Any] = {}
    for cls, concepts in bank.concepts.items():
        images = list(images_by_class.get(cls, []))[: cfg.images_per_class]
        if not images:
            raise CftError(f"validation: no images given for class {cls!r}")
        objects = [np.asarray(m, bool) for m in list(object_masks_by_class.get(cls, []))[: cfg.images_per_class]]
        if len(objects) != len(images):
            raise CftError(f"validation: class {cls!r} has {len(images)} images but {len(objects)} object masks")
        n = len(images)
        names = [c.name for c in concepts]
        if not names:
            per_class[cls] = {"images": n, "coverage": None, "kept": [], "concepts": {}}
            continue
        found = segmenter.segment(images, [list(names) for _ in range(n)])
        if len(found) != n:
            raise CftError(f"validation: segmenter {segmenter.name!r} gave {len(found)} results for {n} images")
        masks: dict[str, list[np.ndarray]] = {name: [] for name in names}
        scores: dict[str, list[float]] = {name: [] for name in names}
        for j, (result, obj) in enumerate(zip(found, objects, strict=True)):
            for name in names:
                mask, score = result.get(name, (None, 0.0))
                mask = np.zeros(obj.shape, bool) if mask is None else np.asarray(mask, bool)
                if mask.shape != obj.shape:
                    raise CftError(
                        f"validation: class {cls!r}, image {j}: mask of {name!r} is {mask.shape}, "
                        f"object mask {obj.shape}"
                    )
                masks[name].append(mask)
                scores[name].append(float(score))
        concept_stats: dict[str, dict[str, float]] = {}
        for name in names:
            hits = sum(bool(m.any()) for m in masks[name])
            on_found = [iou(m, o) for m, o in zip(masks[name], objects, strict=True) if m.any()]
            concept_stats[name] = {
                "occurrence": hits / n,
                "score": float(np.mean(scores[name])),
                "mask_fraction": float(np.mean([m.mean() for m in masks[name]])),
                "object_iou": float(np.mean(on_found)) if on_found else 0.0,
            }
        kept = []
        for name in names:
            occ = concept_stats[name]["occurrence"]
            whole = concept_stats[name]["object_iou"]
            if occ < cfg.min_occurrence:
                hits = round(occ * n)
                out.drop(cls, name, f"occurrence {_pct(occ)} ({hits} of {n} images) < {_pct(cfg.min_occurrence)}")
            elif cfg.max_object_iou is not None and whole >= cfg.max_object_iou:
                out.drop(
                    cls, name, f"names the whole object: IoU {whole:.2f} with the object mask >= {cfg.max_object_iou}"
                )
            else:
                kept.append(name)
        unions = [np.zeros(obj.shape, bool) for obj in objects]
        for name in kept:
            for j in range(n):
                unions[j] |= masks[name][j]
        coverage = float(np.mean([iou(u, o) for u, o in zip(unions, objects, strict=True)]))
        if coverage < cfg.min_coverage:
            for name in kept:
                out.drop(cls, name, f"class coverage {_pct(coverage)} ({coverage:.3f}) < {_pct(cfg.min_coverage)}")
            kept = []
        for c in out.concepts[cls]:
            c.stats = {**c.stats, **concept_stats[c.name], "coverage": coverage, "images": n}
        per_class[cls] = {"images": n, "coverage": coverage, "kept": kept, "concepts": concept_stats}
    stats = {"config": asdict(cfg), "segmenter": getattr(segmenter, "name", type(segmenter).__name__)}
    stats["classes"] = per_class
    out.provenance = {**out.provenance, "validation": {"config": asdict(cfg), "segmenter": stats["segmenter"]}}
    return out, stats


def world_validation_inputs(
    world: SyntheticWorld, split: str | WorldSplit = "val", classes: Sequence[str] | None = None, n: int = 30
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[np.ndarray]]]:
    """Images (world sample dicts, what WorldSegmenter takes) and object masks: the first `n` samples of each class
    of `split` (a split name, generated at its default size, or a WorldSplit). `classes`: default all."""
    from cft.world import WorldSplit

    data = world.split(split) if isinstance(split, str) else split
    if not isinstance(data, WorldSplit):
        raise CftError(f"split must be a split name or a WorldSplit, got {type(split).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CftError(f"n (images per class) must be a positive integer, got {n!r}")
    classes = list(world.classes if classes is None else classes)
    labels, _ = data.labels_and_backgrounds()
    images: dict[str, list[dict[str, Any]]] = {}
    objects: dict[str, list[np.ndarray]] = {}
    for cls in classes:
        k = world.class_index(cls)
        idx = np.flatnonzero(labels == k)[:n]
        if len(idx) < n:
            raise CftError(f"split {data.name!r} has only {len(idx)} samples of class {cls!r}; need {n}")
        samples = [data.sample(int(i)) for i in idx]
        images[cls] = samples
        objects[cls] = [s["object_mask"] for s in samples]
    return images, objects
