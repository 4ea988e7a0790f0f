"""The one autocast rule for training and evaluation: bf16 on CUDA devices that support it, or as asked."""

from __future__ import annotations

import contextlib

import torch

from cft.errors import CftError

AMP_MODES = ("auto", "bf16", "none")


def uses_bf16(device: torch.device, mode: str) -> bool:
    """Whether `mode` ("auto" | "bf16" | "none") means bf16 autocast on `device`."""
    if mode not in AMP_MODES:
        raise CftError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return mode == "bf16"


def autocast(device: torch.device, mode: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `uses_bf16`, else a no-op context."""
    if uses_bf16(device, mode):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
