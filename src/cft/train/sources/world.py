"""`data.source: world`: the synthetic world (cft.world), its images, labels and guidance masks made on the fly, and
`make_world`, which builds the world of a recipe's data.world, the demo's world and each pretraining stage through
`cft.world.world.build_world`, the one place a world is built from config fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cft.concepts.world import WorldConceptConfig, world_concepts
from cft.errors import CftError
from cft.train.model import build_model
from cft.train.sources.base import SourceData, SplitSection, register_data_source

if TYPE_CHECKING:
    from cft.train.recipe import FinetuneRecipe
    from cft.world import SyntheticWorld


@dataclass
class WorldSection(SplitSection):
    source: str = "world"
    world: dict[str, Any] = field(default_factory=dict)  # cft.world.WorldConfig fields
    # masks=concepts: where each class's concepts come from, as the demo's `concepts` section: source llm (the
    # packaged language model's answers, filtered and validated in the world; the bank is written to OUT/concepts/)
    # or parts (each class's part names minus exclude_parts)
    concepts: WorldConceptConfig = field(default_factory=WorldConceptConfig)
    # train on n_train new samples of train_split every epoch (epoch e reads samples first_sample + e * n_train + i,
    # so a long pretraining never shows one twice) instead of one fixed set: no few_shot, no guidance masks
    fresh_samples: bool = False
    first_sample: int = 0  # fresh_samples: the index of the first sample read

    def split_names(self) -> tuple[str, ...]:
        from cft.world import SPLITS

        return SPLITS

    def check(self) -> None:
        super().check()
        make_world(self.world, "data.world")  # checks data.world.*
        if self.first_sample < 0 or (self.first_sample and not self.fresh_samples):
            raise CftError(
                f"data.first_sample={self.first_sample}: the index where fresh samples start, an integer >= 0 "
                "read with data.fresh_samples=true only"
            )
        if self.fresh_samples and self.few_shot is not None:
            raise CftError("data.fresh_samples draws new images every epoch; a few_shot set is fixed: set one of them")


def make_world(fields: Mapping[str, Any], where: str = "world") -> SyntheticWorld:
    """The world of these WorldConfig fields (plain YAML data); a bad field is a CftError naming `where.<field>`."""
    from cft.world.world import build_world

    return build_world(fields, where)


def world_concept_masks(
    samples: list[dict], concepts: dict[str, list[str]], classes: Sequence[str], segmenter
) -> list[np.ndarray]:
    """The guidance masks of world samples: each sample's class concepts as the world's segmenter finds them."""
    from cft.grounding.guidance import segment_guidance

    phrases = [concepts[classes[s["label"]]] for s in samples]
    return segment_guidance(segmenter, samples, phrases, samples[0]["object_mask"].shape)


def _world_dataset(world, split, indices: Sequence[int], masks: str, concepts: dict[str, list[str]] | None, segmenter):
    """Images, labels and (unless masks is "none") guidance masks of the samples `indices` of `split`."""
    from cft.world.datasets import ArrayDataset

    images, labels, out = [], [], []
    for start in range(0, len(indices), 256):  # in chunks: part masks of many samples take memory
        samples = [split.sample(int(i)) for i in indices[start : start + 256]]
        images.extend(s["image"] for s in samples)
        labels.extend(int(s["label"]) for s in samples)
        if masks == "object":
            out.extend(s["object_mask"].astype(np.float32) for s in samples)
        elif masks == "concepts":
            out.extend(world_concept_masks(samples, concepts, world.classes, segmenter))
    m = torch.from_numpy(np.stack(out).astype(np.float32)) if out else None
    return ArrayDataset(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), m)


def build_data(d: WorldSection, world, needs_mask: bool, out: Path | None = None):
    """(train set, val set or None, the few-shot split or None); `out`: where an llm concept bank is written."""
    from cft.data.fewshot import select_few_shot

    if d.fresh_samples:  # a stream of new images each epoch, no masks (check_recipe refuses a guided objective)
        from cft.world.datasets import WorldStream

        stream = WorldStream(world, d.train_split, d.n_train, offset=d.first_sample)
        val = None
        if d.val_split is not None:
            val = _world_dataset(world, world.split(d.val_split, d.n_val), range(d.n_val), "none", None, None)
        return stream, val, None
    masks = d.masks if needs_mask else "none"
    segmenter, concepts = None, None
    if masks == "concepts":
        from cft.sentences import embed

        segmenter = d.concepts.make_segmenter()
        embed(sorted({p for c in world.classes for p in world.part_names(c)}))  # one batch: concepts are part names
        try:
            concepts = world_concepts(world, d.concepts, out)
        except CftError as err:
            raise CftError(f"data.{err}" if str(err).startswith("concepts.") else str(err)) from None
    pool = world.split(d.train_split, d.n_train)
    selection = None
    if d.few_shot is None:
        indices: Sequence[int] = range(d.n_train)
    else:
        labels, _ = pool.labels_and_backgrounds()
        try:
            selection = select_few_shot(
                labels, d.few_shot.per_class, d.few_shot.class_fraction, d.few_shot.seed, len(world.classes)
            )
        except CftError as err:
            raise CftError(f"data.few_shot: {err} (data.n_train={d.n_train} is the pool)") from None
        indices = selection.indices
    train = _world_dataset(world, pool, indices, masks, concepts, segmenter)
    val = None
    if d.val_split is not None:
        split = world.split(d.val_split, d.n_val)
        val = _world_dataset(world, split, range(d.n_val), masks, concepts, segmenter)
    return train, val, selection


@register_data_source(
    "world", "the synthetic world (cft.world): images, labels and masks made on the fly", section=WorldSection
)
def world_source(recipe: FinetuneRecipe, needs_mask: bool, out: Path) -> SourceData:
    from cft.world.datasets import make_collate

    d: WorldSection = recipe.data  # type: ignore[assignment]  # the section data.source=world reads
    world = make_world(d.world, "data.world")
    classes = list(world.classes)
    model = build_model(recipe, len(classes), world.config.image_size)
    train, val, selection = build_data(d, world, needs_mask, out)
    where = {"split": d.train_split, "pool": d.n_train}
    return SourceData(classes, model, train, val, selection, make_collate(flip=d.flip), make_collate(flip=False), where)
