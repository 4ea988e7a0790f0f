"""timm Vision Transformers behind the same relevance backend interface as Hugging Face ViTs and ConvNeXt.

Attention is read by `cft.relevance.capture`: fused attention is switched off only for the blocks read and only
during the call (also when `create_graph` needs the unfused kernel's second derivative). The layout (prefix
tokens, whether the head reads the class token, the patch grid) comes from `cft.models.vit_layout`, which
raises a CftError naming the supported models for anything else.

For a model whose head reads only the prefix tokens (global_pool="token"), the last block's attention projection
and MLP run on those rows only during the call: no logit, attention matrix or block input depends on their output
for the patch tokens, so the logits, the maps and every gradient are unchanged, and the forward and both backward
passes of a training step skip that work (about 1/depth of the MLP and projection work).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from cft.errors import CftError
from cft.models import has_vit_parts, vit_layout
from cft.relevance.capture import Captured, capture, leading_tokens_only
from cft.relevance.methods import METHODS, Backend, Method, register_backend


@register_backend(
    "timm-vit",
    priority=30,
    description="timm VisionTransformer family: ViT, AugReg, DeiT (distilled too), DeiT-III, ViTs with register tokens",
)
def backend(model: nn.Module) -> Backend | None:
    """The relevance backend of a timm ViT; None for a model without ViT parts, a CftError (naming what is
    supported) for one whose blocks have no readable attention."""
    if not has_vit_parts(model):
        return None
    layout = vit_layout(model)
    proj = getattr(model.patch_embed, "proj", None)
    channels = int(proj.in_channels) if proj is not None and hasattr(proj, "in_channels") else 3

    def grid(image_hw: tuple[int, int]) -> tuple[int, int]:
        _check_size(model, image_hw)
        return layout.grid(model, image_hw)

    @contextlib.contextmanager
    def capture_call(spec: Method, create_graph: bool) -> Iterator[Captured]:
        with capture(model, spec.attentions, spec.last_block_input, create_graph) as captured:
            with last_block_on_rows(model):
                yield captured

    return Backend(
        family=f"timm {type(model).__name__}",
        methods=dict(METHODS),
        channels=channels,
        grid=grid,
        forward=model,
        capture=capture_call,
        num_prefix_tokens=layout.num_prefix_tokens,
        reads_class_token=layout.reads_class_token,
    )


@contextlib.contextmanager
def last_block_on_rows(model: nn.Module) -> Iterator[None]:
    """While active, the last block's attention projection and MLP compute only the prefix tokens, zeros elsewhere.

    Only for a model whose head reads the prefix tokens alone (`vit_layout(model).reads_class_token`) and only for
    timm's pre-norm `Block` (both modules act on each token alone and their outputs reach only that token's
    residual; the norm gradcam reads comes before them). The attention matrix and the keys and values stay whole.
    Otherwise (patch pooling, a post-norm `ResPostBlock`, any other block type) nothing changes."""
    layout = vit_layout(model)
    rows = layout.num_prefix_tokens if layout.reads_class_token else None
    block = model.blocks[-1] if rows else None
    modules = [getattr(getattr(block, "attn", None), "proj", None), getattr(block, "mlp", None)]
    if block is None or None in modules or type(block).__name__ != "Block":
        yield
        return
    with leading_tokens_only(modules, rows):
        yield


def _check_size(model: nn.Module, image_hw: tuple[int, int]) -> None:
    expected = tuple(getattr(model.patch_embed, "img_size", None) or ())
    dynamic = getattr(model, "dynamic_img_size", False) or not getattr(model.patch_embed, "strict_img_size", True)
    if expected and not dynamic and tuple(image_hw) != expected:
        raise CftError(
            f"images are {tuple(image_hw)} pixels but the model takes {expected}; resize them, or "
            "create the model with img_size=... or dynamic_img_size=True"
        )
