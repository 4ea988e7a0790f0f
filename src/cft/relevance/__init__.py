"""Batched, differentiable relevance maps for timm ViTs, Hugging Face ViT/DeiT/DINOv2 and ConvNeXt(-V2).

`relevance_with_logits` runs ONE forward pass and returns both the maps and the logits, so a training
step needs no second forward. Maps are patch-level (B, gh, gw), min-max normalised per image to [0, 1]
(a constant map gives zeros), and stay in the autograd graph: a loss on them trains the model.
Hugging Face models: see `cft.relevance.hf`; ConvNeXt (feature-map grid, gradcam and input-grad only): see
`cft.relevance.convnext`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cft.errors import CftError
from cft.relevance import convnext, hf, timm_vit  # noqa: F401 - each registers its backend in BACKENDS
from cft.relevance.capture import Captured, capture
from cft.relevance.methods import (
    BACKENDS,
    METHODS,
    Backend,
    Method,
    Trace,
    backends_in_order,
    register_backend,
    register_method,
)

__all__ = [
    "BACKENDS",
    "METHODS",
    "Captured",
    "capture",
    "normalize",
    "register_backend",
    "register_method",
    "relevance",
    "relevance_with_logits",
    "upsample",
]

Targets = torch.Tensor | int | Sequence[int] | None


def relevance_with_logits(
    model: nn.Module,
    images: torch.Tensor,
    targets: Targets = None,
    method: str = "grad-rollout",
    create_graph: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance maps (B, gh, gw) of `targets` (None: each image's predicted class) and the logits (B, classes).

    create_graph: differentiate through the gradients the method takes (exact second order). None takes the
    method's default: False for grad-rollout, attn-lrp and gradcam (the gradient is a constant, as in the
    reference code; the loss still reaches the parameters through the attention), True for input-grad and for
    ConvNeXt's gradcam.
    """
    return _backend_relevance(model, _backend(model), images, targets, method, create_graph)


def relevance(
    model: nn.Module,
    images: torch.Tensor,
    targets: Targets = None,
    method: str = "grad-rollout",
    create_graph: bool | None = None,
) -> torch.Tensor:
    """Relevance maps (B, gh, gw) in [0, 1]; see `relevance_with_logits`."""
    return relevance_with_logits(model, images, targets, method, create_graph)[0]


def normalize(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of (B, ...) to [0, 1] in float32 at least (bf16 under autocast would round the
    values near 1 to exactly 1); a constant map becomes zeros (never NaN)."""
    flat = maps.flatten(1).to(torch.promote_types(maps.dtype, torch.float32))
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (flat - low) / safe, torch.zeros_like(flat))
    return out.view_as(maps)


def upsample(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Patch-level maps (B, gh, gw) to image resolution (B, H, W); differentiable, stays in [0, 1]."""
    if maps.dim() != 3:
        raise CftError(f"maps must be (B, gh, gw), got shape {tuple(maps.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(maps[:, None], size=size, mode=mode, **kwargs)[:, 0]
    return out.clamp(0, 1) if mode == "bicubic" else out


def _method(name: str) -> Method:
    if name not in METHODS:
        raise CftError(f"unknown relevance method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def _backend(model: nn.Module) -> Backend:
    """The model's relevance backend: the first of BACKENDS, by priority, that takes it."""
    for _name, finder in backends_in_order():
        found = finder.find(model)
        if found is not None:
            return found
    known = "; ".join(f"{name} ({BACKENDS.description(name)})" for name, _finder in backends_in_order())
    raise CftError(f"unsupported model {type(model).__name__}: no relevance backend reads it; backends: {known}")


def _backend_relevance(
    model: nn.Module, backend: Backend, images: torch.Tensor, targets: Targets, method: str, create_graph: bool | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`relevance_with_logits` through a model family's backend: one forward pass, hooks only for the call."""
    _method(method)
    if method not in backend.methods:
        raise CftError(
            f"relevance method {method!r} is not available for {backend.family} models; "
            f"choose one of {', '.join(backend.methods)}"
        )
    spec = backend.methods[method]
    _check_batch(images, backend.channels)
    grid = backend.grid(tuple(images.shape[-2:]))
    create_graph = spec.create_graph_default if create_graph is None else bool(create_graph)
    with torch.enable_grad(), backend.capture(spec, create_graph) as captured:
        inputs = images
        if spec.input_gradient or not any(p.requires_grad for p in model.parameters()):
            inputs = images if images.requires_grad else images.detach().requires_grad_(True)
        logits = backend.forward(inputs)
        _check_captured(captured, backend, grid)
        chosen = _targets(targets, logits)
        score = logits.gather(1, chosen[:, None]).sum()
        trace = Trace(inputs, score, captured, backend.num_prefix_tokens, backend.reads_class_token, grid, create_graph)
        maps = spec.fn(trace)
    return normalize(maps), logits


def _check_batch(images: torch.Tensor, channels: int) -> None:
    if not isinstance(images, torch.Tensor):
        raise CftError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise CftError(f"images must be a floating-point tensor (normalised pixels), got dtype {images.dtype}")
    if images.dim() != 4 or images.shape[1] != channels:
        raise CftError(f"images must have shape (B, {channels}, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise CftError("images is an empty batch")


def _check_captured(captured: Captured, backend: Backend, grid: tuple[int, int]) -> None:
    """The token count / feature map size the model produced must match the prefix tokens and grid read."""
    if captured.attentions:
        tokens = captured.attentions[0].shape[-1]
        if tokens != backend.num_prefix_tokens + grid[0] * grid[1]:
            raise CftError(
                f"{backend.family} made {tokens} tokens, but its config says {backend.num_prefix_tokens} prefix "
                f"tokens and a {grid[0]}x{grid[1]} patch grid"
            )
    if captured.features is not None and tuple(captured.features.shape[-2:]) != tuple(grid):
        raise CftError(
            f"{backend.family} made a {tuple(captured.features.shape[-2:])} feature map, expected {tuple(grid)}"
        )


def _targets(targets: Targets, logits: torch.Tensor) -> torch.Tensor:
    b, classes = logits.shape
    if targets is None:
        return logits.detach().argmax(dim=1)
    t = torch.as_tensor(targets, device=logits.device)
    if t.dim() == 0:
        t = t.expand(b)
    if t.is_floating_point() or t.dim() != 1 or t.shape[0] != b:
        raise CftError(f"targets must be None, an int or {b} integer class indices, got {tuple(t.shape)} {t.dtype}")
    if bool(((t < 0) | (t >= classes)).any()):
        raise CftError(f"targets {t.tolist()} out of range: the model has {classes} classes (0..{classes - 1})")
    return t.long()
