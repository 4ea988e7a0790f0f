"""`data.source: decoy`: Decoy-MNIST / Decoy-FashionMNIST (cft.data.decoy), real images with a planted square."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cft.data.decoy import DECOY_SPLITS, DecoyConfig, check_decoy_config
from cft.errors import CftError
from cft.train.model import build_model
from cft.train.sources.base import SourceData, SplitSection, register_data_source

if TYPE_CHECKING:
    from cft.train.recipe import FinetuneRecipe


@dataclass
class DecoySection(SplitSection):
    source: str = "decoy"
    decoy: DecoyConfig = field(default_factory=DecoyConfig)  # the dataset and how the decoy is planted
    # with few_shot and objective.cls_target original: this many other pool images, unlabelled, ride with the
    # few-shot images (split evenly among them) and the KL to the original model is also taken on them
    anchor_images: int = 0

    def split_names(self) -> tuple[str, ...]:
        return DECOY_SPLITS

    def check(self) -> None:
        super().check()
        check_decoy_config(self.decoy)


@register_data_source(
    "decoy",
    "Decoy-MNIST / Decoy-FashionMNIST: real images with a planted decoy (data.decoy)",
    section=DecoySection,
)
def decoy_source(recipe: FinetuneRecipe, needs_mask: bool, out: Path) -> SourceData:
    """Decoy-(Fashion)MNIST (cft.data.decoy): guidance masks are the foreground (masks=object or concepts). All
    of train_split without few_shot (its decoys drawn anew each epoch), else a few-shot set of its first n_train."""
    from cft.data.decoy import DecoySource, DecoyStream
    from cft.data.fewshot import select_few_shot
    from cft.world.datasets import ArrayDataset, make_collate

    d: DecoySection = recipe.data  # type: ignore[assignment]  # the section data.source=decoy reads
    source = DecoySource(d.decoy)
    classes = list(source.classes)
    model = build_model(recipe, len(classes), 28)
    with_masks = needs_mask and d.masks != "none"

    def dataset(planted, anchors: torch.Tensor | None = None) -> ArrayDataset:
        masks = torch.from_numpy(planted.foreground.astype(np.float32)) if with_masks else None
        return ArrayDataset(torch.from_numpy(planted.rgb()), torch.from_numpy(planted.labels), masks, anchors)

    selection = None
    if d.few_shot is None and d.train_split == "train" and not with_masks:
        train: Any = DecoyStream(source, d.n_train)
    else:
        pool = source.split(d.train_split, d.n_train)
        if d.few_shot is not None:
            try:
                selection = select_few_shot(
                    pool.labels, d.few_shot.per_class, d.few_shot.class_fraction, d.few_shot.seed, len(classes)
                )
            except CftError as err:
                raise CftError(f"data.few_shot: {err} (data.n_train={d.n_train} is the pool)") from None
            chosen = np.asarray(selection.indices)
            anchors = _anchor_images(pool, chosen, d.anchor_images, d.few_shot.seed)
            pool = pool.take(chosen)
            train = dataset(pool, anchors)
        else:
            train = dataset(pool)
    val = None if d.val_split is None else dataset(source.split(d.val_split, d.n_val))
    where = {"dataset": d.decoy.dataset, "split": d.train_split, "pool": d.n_train}
    return SourceData(classes, model, train, val, selection, make_collate(flip=d.flip), make_collate(flip=False), where)


def _anchor_images(pool, chosen: np.ndarray, count: int, seed: int) -> torch.Tensor | None:
    """`count` pool images other than the chosen ones (seeded), as (len(chosen), count // len(chosen), 3, H, W)."""
    if count <= 0:
        return None
    per_item = max(count // len(chosen), 1)
    others = np.setdiff1d(np.arange(len(pool)), chosen)
    if len(others) < per_item * len(chosen):
        raise CftError(f"data.anchor_images={count}: the pool has only {len(others)} other images")
    picked = np.random.default_rng([seed, 1]).choice(others, per_item * len(chosen), replace=False)
    images = torch.from_numpy(pool.take(picked).rgb())
    return images.reshape(len(chosen), per_item, *images.shape[1:])
