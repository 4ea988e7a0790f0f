"""The attention oracle: a timm ViT's predictions when no token may read the patches of a region (the cue).

Each block's attention gets a key mask: the patch tokens that touch the region are removed from every softmax,
so their content reaches neither the class token nor any other token, while the rest of the computation is the
model's own. If a model's errors come from reading a cue, this raises its accuracy; if they come from weak object
features, it does not. It is a diagnostic of what relevance guidance can achieve, not a training method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cft.errors import CftError
from cft.models import vit_layout

__all__ = ["hidden_tokens", "predict_with_hidden_tokens"]


def hidden_tokens(regions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) pixel masks to (B, gh * gw) patch flags: a patch is hidden if any of its pixels is in the region."""
    if regions.dim() != 3:
        raise CftError(f"regions must be (B, H, W) masks, got shape {tuple(regions.shape)}")
    pooled = F.adaptive_max_pool2d(regions[:, None].float(), grid)[:, 0]
    return pooled.flatten(1) > 0


@torch.no_grad()
def predict_with_hidden_tokens(
    model: nn.Module, images: torch.Tensor, regions: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Top-1 predictions (B,) of `model` on normalised `images` with the patches touching `regions` hidden from
    every attention (see the module docstring). Prefix tokens (class, register) are never hidden."""
    layout = vit_layout(model)
    if len(images) != len(regions):
        raise CftError(f"{len(images)} images but {len(regions)} region masks")
    model.eval()
    preds = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        grid = layout.grid(model, tuple(x.shape[-2:]))
        hidden = hidden_tokens(regions[i : i + batch_size].to(x.device), grid)
        keep = torch.cat([hidden.new_zeros(len(x), layout.num_prefix_tokens), hidden], dim=1).logical_not()
        bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, float("-inf"))
        logits = model.forward_head(model.forward_features(x, attn_mask=bias[:, None, None, :]))
        preds.append(logits.argmax(1))
    return torch.cat(preds)
