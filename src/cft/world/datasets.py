"""World samples as training data: a split's images as one tensor, in-memory and streaming datasets, and the
collate that normalises (and flips) a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cft.world.model import normalize
from cft.world.world import SyntheticWorld, WorldSplit


def split_images(split: WorldSplit) -> torch.Tensor:
    """Every image of a world split (materialised on the way) as uint8 (N, 3, H, W)."""
    split.materialize()
    return torch.from_numpy(np.ascontiguousarray(split._arrays["images"].transpose(0, 3, 1, 2)))


class ArrayDataset(Dataset):
    """Images (N, 3, H, W) uint8, labels and optional guidance masks (N, H, W) held in memory; optional anchors
    (N, k, 3, H, W) uint8: unlabelled images that ride with each item (the anchored consistency term reads them)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor | None = None,
        anchors: torch.Tensor | None = None,
    ) -> None:
        self.images, self.labels, self.masks, self.anchors = images, labels, masks, anchors

    @classmethod
    def from_split(cls, split: WorldSplit, masks: np.ndarray | None = None) -> ArrayDataset:
        """All of a world split (materialised), with optional masks aligned to its samples."""
        images = split_images(split)
        arrays = split._arrays
        m = None if masks is None else torch.from_numpy(np.asarray(masks, np.float32))
        return cls(images, torch.from_numpy(arrays["labels"]).long(), m)

    @classmethod
    def from_samples(cls, samples: Sequence[dict[str, Any]], masks: Sequence[np.ndarray] | None = None):
        images = torch.from_numpy(np.stack([s["image"] for s in samples]))
        labels = torch.tensor([int(s["label"]) for s in samples])
        m = None if masks is None else torch.from_numpy(np.stack(masks).astype(np.float32))
        return cls(images, labels, m)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[i], "label": self.labels[i]}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        if self.anchors is not None:
            item["anchor"] = self.anchors[i]
        return item


class WorldStream(Dataset):
    """`per_epoch` fresh samples of a world split each epoch: epoch e reads samples offset + e * per_epoch + i.

    The trainer calls `set_epoch` before each epoch, so a long pretraining never shows a sample twice; samples are
    generated on access (about 0.4 ms each at 64 px), deterministic, so a resumed run sees the same ones.
    """

    def __init__(self, world: SyntheticWorld, split: str, per_epoch: int, offset: int = 0) -> None:
        self.world, self.split, self.per_epoch, self.offset, self.epoch = world, split, per_epoch, offset, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.world.generate(self.split, self.offset + self.epoch * self.per_epoch + i)
        image = torch.from_numpy(np.ascontiguousarray(r.image.transpose(2, 0, 1)))
        return {"image": image, "label": torch.tensor(r.label)}


def make_collate(flip: bool):
    """Batch items; with `flip`, each image (and its mask) is mirrored with probability 0.5 (torch's RNG)."""

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {
            "image": normalize(torch.stack([x["image"] for x in items])),
            "label": torch.stack([x["label"] for x in items]),
        }
        if "mask" in items[0]:
            batch["mask"] = torch.stack([x["mask"] for x in items])
        if "anchor" in items[0]:  # (B * k, 3, H, W): every item's unlabelled anchors, never flipped
            batch["anchor"] = normalize(torch.cat([x["anchor"] for x in items]))
        if flip:
            mirrored = torch.rand(len(items)) < 0.5
            batch["image"][mirrored] = batch["image"][mirrored].flip(-1)
            if "mask" in batch:
                batch["mask"][mirrored] = batch["mask"][mirrored].flip(-1)
        return batch

    return collate
