"""Tiny random timm ViTs for fast CPU tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

import cft
from tests.chat_server import serve  # noqa: F401 - the scripted chat-completions server fixture

TINY = dict(patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=7)


def tiny_vit(name: str = "vit_tiny_patch16_224", dtype: torch.dtype = torch.float32, seed: int = 0, **kwargs):
    """A small random model; weights are scaled up so attention is far from uniform and maps are informative."""
    torch.manual_seed(seed)
    model = cft.load_model(name, **{**TINY, "img_size": (32, 48), **kwargs}).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.fixture
def make_vit():
    return tiny_vit


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a fresh module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
