"""Hugging Face transformers image classifiers behind cft's relevance interface.

Supported: ViTForImageClassification, DeiTForImageClassification, DeiTForImageClassificationWithTeacher
(distilled), Dinov2ForImageClassification, Dinov2WithRegistersForImageClassification (all five relevance
methods) and ConvNextV2ForImageClassification (gradcam, input-grad; see `cft.relevance.convnext`).

Attention is read with forward hooks on each layer's attention module, whose output is
(attn_output, attn_weights): with eager attention, attn_weights is the post-softmax (post-dropout) A of shape
(B, heads, N, N) that multiplies the values, inside the autograd graph, so dS/dA and every map are exactly
those of the timm path. Other attention kernels (sdpa, flash) return no weights: a model must be loaded with
attn_implementation="eager" (`cft.load_model("hf:...")` does), otherwise a CftError says so. The hooks live
only for one call and are removed whatever happens.

The number of prefix tokens comes from the config: 1 (CLS) for ViT and DINOv2, 2 (CLS + distillation) for
every DeiT (transformers' DeiT embeddings always carry the distillation token), 1 + num_register_tokens for
DINOv2 with registers. The maps read the CLS row (row 0), as the timm path does for the class-token readers;
note that DINOv2's classification head also reads the mean of the patch tokens. The grid is
(H // patch, W // patch), patch from the config.

For ViT and DeiT in the transformers 5 layout (attention.o_proj, mlp), the last layer's output projection and MLP
compute only the prefix tokens during the call, as for timm ViTs (`cft.relevance.capture.leading_tokens_only`):
their output for the patch tokens reaches no logit. DINOv2's head reads the patch tokens' mean, so it runs whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from cft.errors import CftError
from cft.models.hf import (
    ALWAYS_INTERPOLATES,
    SUPPORTED,
    HFClassifier,
    is_transformers_model,
    logits,
    model_type,
    pair,
    prefix_tokens,
)
from cft.relevance.capture import Captured, leading_tokens_only
from cft.relevance.methods import METHODS, Backend, Method, register_backend

EAGER_HINT = (
    'load it with attn_implementation="eager" (cft.load_model("hf:<id or folder>") does, and so does '
    'Model.from_pretrained(..., attn_implementation="eager")), or call model.set_attn_implementation("eager")'
)


@register_backend(
    "hf",
    priority=10,
    description="Hugging Face ViT, DeiT, DINOv2 and ConvNeXt-V2 image classifiers (transformers, eager attention)",
)
def backend(model: nn.Module) -> Backend | None:
    """The relevance backend of a transformers classifier (raw or wrapped in HFClassifier); None otherwise."""
    if not is_transformers_model(model):
        return None
    interpolate = model.interpolate_pos_encoding if isinstance(model, HFClassifier) else False
    inner = model.model if isinstance(model, HFClassifier) else model
    kind = model_type(inner)
    config = inner.config
    if kind == "convnextv2":
        from cft.relevance.convnext import feature_backend

        reduction = pair(config.patch_size)[0] * 2 ** (len(config.depths) - 1)
        forward = _forward(inner, False)
        return feature_backend("transformers ConvNeXt-V2", config.num_channels, reduction, forward, _last_stage(inner))
    if config._attn_implementation != "eager":
        raise CftError(
            f"{type(inner).__name__} uses {config._attn_implementation!r} attention, which never returns the "
            f"attention probabilities that relevance reads; {EAGER_HINT}"
        )
    layers = _layers(inner)
    always_interpolates = kind in ALWAYS_INTERPOLATES
    return Backend(
        family=f"transformers {type(inner).__name__}",
        methods=dict(METHODS),
        channels=int(config.num_channels),
        grid=lambda hw: _grid(config, hw, interpolate or always_interpolates),
        forward=_forward(inner, interpolate),
        capture=lambda spec, _create_graph: _capture(layers, spec, _read_rows(kind, config)),
        num_prefix_tokens=prefix_tokens(kind, config),
        reads_class_token=True,
    )


def _forward(model: nn.Module, interpolate: bool):
    return lambda images: logits(model, images, interpolate)


def _grid(config: Any, image_hw: tuple[int, int], interpolates: bool) -> tuple[int, int]:
    """The patch grid (H // patch_h, W // patch_w); the image must have the config's size unless interpolating."""
    ph, pw = pair(config.patch_size)
    expected = pair(config.image_size)
    if not interpolates and tuple(image_hw) != expected:
        raise CftError(
            f"images are {tuple(image_hw)} pixels but the model takes {expected}; resize them, or wrap the model "
            "as HFClassifier(model, interpolate_pos_encoding=True)"
        )
    if image_hw[0] < ph or image_hw[1] < pw:
        raise CftError(f"images of {tuple(image_hw)} pixels are smaller than one {ph}x{pw} patch")
    return image_hw[0] // ph, image_hw[1] // pw


def _layers(model: nn.Module) -> list[nn.Module]:
    """The transformer layers in order: modules with an `attention` child and a pre-attention norm."""
    layers = [m for m in model.modules() if hasattr(m, "attention") and _norm(m) is not None]
    if len(layers) != model.config.num_hidden_layers:
        raise CftError(
            f"found {len(layers)} attention layers in {type(model).__name__}, expected "
            f"{model.config.num_hidden_layers}; supported: {SUPPORTED}"
        )
    return layers


def _norm(layer: nn.Module) -> nn.Module | None:
    """The norm in front of a layer's attention (ViT, DeiT: layernorm_before; DINOv2: norm1)."""
    for name in ("layernorm_before", "norm1"):
        norm = getattr(layer, name, None)
        if isinstance(norm, nn.Module):
            return norm
    return None


def _last_stage(model: nn.Module) -> nn.Module:
    return model.convnextv2.encoder.stages[-1]


def _read_rows(kind: str, config: Any) -> int | None:
    """The tokens the classifier reads when they are the prefix tokens alone (ViT, DeiT); None for DINOv2, whose
    head also reads the mean of the patch tokens."""
    return prefix_tokens(kind, config) if kind in ("vit", "deit") else None


def _per_token_tail(layer: nn.Module) -> list[nn.Module] | None:
    """The last layer's attention output projection and MLP, where each acts on each token alone and its output is
    added to that token's residual outside it (the transformers 5 layout: attention.o_proj, mlp); else None."""
    modules = [getattr(getattr(layer, "attention", None), "o_proj", None), getattr(layer, "mlp", None)]
    return modules if all(isinstance(m, nn.Module) for m in modules) else None


@contextlib.contextmanager
def _capture(layers: list[nn.Module], spec: Method, read_rows: int | None = None) -> Iterator[Captured]:
    """Record each layer's attention probabilities (and the last layer's normalised input) while active; with
    `read_rows`, the last layer's output projection and MLP compute only the tokens the classifier reads."""
    store = Captured()
    handles = []
    tail = _per_token_tail(layers[-1]) if read_rows else None
    rows = leading_tokens_only(tail, read_rows) if tail else contextlib.nullcontext()
    try:
        if spec.attentions:
            for layer in layers:
                handles.append(layer.attention.register_forward_hook(_keep_weights(store.attentions)))
        if spec.last_block_input:

            def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
                store.last_block_input = output

            handles.append(_norm(layers[-1]).register_forward_hook(keep))
        with rows:
            yield store
    finally:
        for handle in handles:
            handle.remove()


def _keep_weights(target: list[torch.Tensor]):
    def hook(module: nn.Module, _inputs: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise CftError(f"{type(module).__name__} returned no attention probabilities; {EAGER_HINT}")
        target.append(weights)

    return hook
