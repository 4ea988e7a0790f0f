"""The trainer's test data (Blobs: a coloured square per class, the square its mask) and a tiny trainer on it."""

from __future__ import annotations

import torch

import cft
from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective
from tests.helpers.models import TINY


class Blobs(torch.utils.data.Dataset):
    """Class k: a square of colour k in quadrant k; the mask is the square."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            label = i % 4
            img = torch.randn(3, 32, 48, generator=g) * 0.1
            mask = torch.zeros(32, 48)
            r, c = divmod(label, 2)
            mask[r * 16 + 4 : r * 16 + 12, c * 24 + 6 : c * 24 + 18] = 1
            colour = torch.full((3, 1, 1), 4.0) if label == 3 else torch.eye(3)[label][:, None, None] * 4
            self.items.append({"image": img + colour * mask, "label": label, "mask": mask})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "image": torch.stack([x["image"] for x in items]),
        "label": torch.tensor([x["label"] for x in items]),
        "mask": torch.stack([x["mask"] for x in items]),
    }


def make_trainer(tmp_path, objective="erm", epochs=3, **train):
    torch.manual_seed(0)
    model = cft.load_model("vit_tiny_patch16_224", **{**TINY, "num_classes": 4, "img_size": (32, 48)})
    optim = train.pop("optim", OptimConfig(lr=1e-3, lr_decay_every=1))
    cfg = TrainConfig(epochs=epochs, batch_size=4, optim=optim, progress=False, **train)
    return Trainer(model, build_objective(ObjectiveConfig(name=objective)), cfg, tmp_path, collate)
