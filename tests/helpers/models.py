"""Tiny random timm ViTs for fast CPU tests."""

from __future__ import annotations

import torch

import cft

TINY = dict(patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=7)


def tiny_vit(name: str = "vit_tiny_patch16_224", dtype: torch.dtype = torch.float32, seed: int = 0, **kwargs):
    """A small random model; weights are scaled up so attention is far from uniform and maps are informative."""
    torch.manual_seed(seed)
    model = cft.load_model(name, **{**TINY, "img_size": (32, 48), **kwargs}).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model
