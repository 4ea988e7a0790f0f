"""The small ViT the demo pretrains on the world: its config, the pixel normalisation of its input and its
relevance maps of world images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cft.models import load_model
from cft.relevance import relevance, upsample

MEAN, STD = 0.5, 0.5


@dataclass
class WorldModelConfig:
    """A small timm ViT for the world's images (random init; the demo pretrains it)."""

    depth: int = 4
    embed_dim: int = 128
    num_heads: int = 4
    patch_size: int = 8

    def create(self, num_classes: int, image_size: int) -> nn.Module:
        return load_model(
            "vit_tiny_patch16_224",
            img_size=image_size,
            patch_size=self.patch_size,
            depth=self.depth,
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            num_classes=num_classes,
        )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) to the model's input: (x / 255 - 0.5) / 0.5."""
    return (images.float() / 255 - MEAN) / STD


def relevance_maps(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Relevance of the predicted class for uint8 world images, upsampled to the image size: (N, H, W) numpy."""
    maps = relevance(model, normalize(images)).detach()
    return upsample(maps, images.shape[-1]).numpy()
