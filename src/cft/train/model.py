"""The recipe's `model:` section and the model it builds: the small world ViT or a timm / Hugging Face model, sized
for a data source's classes and images, from a checkpoint when one is set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from cft.errors import CftError

if TYPE_CHECKING:
    from cft.train.recipe import FinetuneRecipe

WORLD_VIT = "world-vit"


@dataclass
class ModelSection:
    name: str = WORLD_VIT  # "world-vit" (the small ViT of cft.world) or a timm ViT name
    pretrained: bool = False  # timm models only: hub weights (needs the network)
    checkpoint: str | None = None  # weights to start from (.safetensors or .pt)
    kwargs: dict[str, Any] = field(default_factory=dict)  # timm models only: extra timm.create_model arguments
    depth: int = 4  # world-vit only, as cft.world.model.WorldModelConfig
    embed_dim: int = 128
    num_heads: int = 4
    patch_size: int = 8

    def check(self) -> None:
        if self.name == WORLD_VIT:
            if self.pretrained:
                raise CftError("model.pretrained: world-vit has no hub weights; start from a model.checkpoint instead")
            if self.kwargs:
                raise CftError(
                    "model.kwargs is for timm models; world-vit takes depth, embed_dim, num_heads, patch_size"
                )
        else:  # the world-vit size fields mean nothing to a timm / HF model: not ignored silently
            defaults = ModelSection()
            for size in ("depth", "embed_dim", "num_heads", "patch_size"):
                if getattr(self, size) != getattr(defaults, size):
                    raise CftError(
                        f"model.{size} sizes world-vit only; for {self.name} write it in model.kwargs (e.g. "
                        f"model.kwargs: {{{size}: {getattr(self, size)}}}), which timm.create_model receives"
                    )
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise CftError(f"model.checkpoint {self.checkpoint} does not exist (relative to the working directory)")


def build_model(recipe: FinetuneRecipe, num_classes: int, image_size: int) -> nn.Module:
    """The model of `recipe.model` for `num_classes` classes at `image_size`, from its checkpoint if one is set."""
    from cft.models import load_checkpoint, load_model, size_kwargs
    from cft.world.model import WorldModelConfig

    m = recipe.model
    if m.name == WORLD_VIT:
        model = WorldModelConfig(m.depth, m.embed_dim, m.num_heads, m.patch_size).create(num_classes, image_size)
    else:
        kwargs = {**size_kwargs(m.name, num_classes, image_size), **m.kwargs}
        try:
            model = load_model(m.name, pretrained=m.pretrained, **kwargs)
        except CftError as err:
            raise CftError(f"model.name: {err}") from None
    _check_patch_grid(model, image_size)
    if m.checkpoint is not None:
        try:
            load_checkpoint(model, m.checkpoint)
        except CftError as err:
            raise CftError(f"model.checkpoint: {err} (do the model fields match the checkpoint's model?)") from None
    return model


def _check_patch_grid(model: nn.Module, image_size: int) -> None:
    """A ViT's patches must tile the image: otherwise the last pixels are cut off and the relevance map, upsampled
    to the image, is stretched against the masks it is compared with."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    sizes = tuple(patch) if isinstance(patch, list | tuple) else (patch,)
    if all(isinstance(p, int) and p > 0 for p in sizes) and any(image_size % p for p in sizes):
        raise CftError(
            f"the image size {image_size} is not a multiple of the model's patch size {sizes[0]}: the patch grid "
            "would not cover the image and its relevance maps would be stretched; choose a multiple "
            "(data.image_size, or data.world.image_size)"
        )
