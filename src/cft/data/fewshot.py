"""Few-shot selection: N images per class from a seeded fraction of the classes; the rest held out as unseen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cft.errors import CftError


@dataclass(frozen=True)
class FewShotSplit:
    seen_classes: tuple[int, ...]
    unseen_classes: tuple[int, ...]
    indices: tuple[int, ...]  # dataset indices of the selected images, grouped by class

    def to_dict(self) -> dict[str, list[int]]:
        return {
            "seen_classes": list(self.seen_classes),
            "unseen_classes": list(self.unseen_classes),
            "indices": list(self.indices),
        }


def select_few_shot(
    labels: Sequence[int] | np.ndarray,
    per_class: int = 3,
    class_fraction: float = 0.5,
    seed: int = 0,
    num_classes: int | None = None,
    exclude: Sequence[int] = (),
) -> FewShotSplit:
    """Choose round(class_fraction * C) classes (sorted, then a seeded permutation) and `per_class` images of each.

    Deterministic in (labels, per_class, class_fraction, seed); `exclude` lists dataset indices never chosen.
    """
    labels = np.asarray(labels)
    classes = sorted(set(range(num_classes)) if num_classes else set(labels.tolist()))
    if per_class < 1:
        raise CftError(f"per_class must be >= 1, got {per_class}")
    if not 0.0 < class_fraction <= 1.0:
        raise CftError(f"class_fraction must be in (0, 1], got {class_fraction}")
    count = max(1, round(class_fraction * len(classes)))
    rng = np.random.default_rng(seed)
    seen = sorted(np.asarray(classes)[rng.permutation(len(classes))[:count]].tolist())
    banned = np.zeros(len(labels), bool)
    banned[list(exclude)] = True
    chosen: list[int] = []
    for c in seen:
        pool = np.flatnonzero((labels == c) & ~banned)
        if len(pool) < per_class:
            raise CftError(f"class {c} has {len(pool)} images, fewer than per_class={per_class}")
        chosen.extend(sorted(rng.choice(pool, per_class, replace=False).tolist()))
    unseen = tuple(c for c in classes if c not in seen)
    return FewShotSplit(tuple(seen), unseen, tuple(int(i) for i in chosen))
