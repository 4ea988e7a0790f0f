"""timm Vision Transformers behind the same relevance backend interface as Hugging Face ViTs and ConvNeXt.

Attention is read by `cft.relevance.capture`: fused attention is switched off only for the blocks read and only
during the call (also when `create_graph` needs the unfused kernel's second derivative). The layout (prefix
tokens, whether the head reads the class token, the patch grid) comes from `cft.models.vit_layout`, which
raises a CftError naming the supported models for anything else.
"""

from __future__ import annotations

from torch import nn

from cft.errors import CftError
from cft.models import vit_layout
from cft.relevance.capture import capture
from cft.relevance.methods import METHODS, Backend


def backend(model: nn.Module) -> Backend:
    """The relevance backend of a timm ViT; a CftError (naming what is supported) for any other model."""
    layout = vit_layout(model)
    proj = getattr(model.patch_embed, "proj", None)
    channels = int(proj.in_channels) if proj is not None and hasattr(proj, "in_channels") else 3

    def grid(image_hw: tuple[int, int]) -> tuple[int, int]:
        _check_size(model, image_hw)
        return layout.grid(model, image_hw)

    return Backend(
        family=f"timm {type(model).__name__}",
        methods=dict(METHODS),
        channels=channels,
        grid=grid,
        forward=model,
        capture=lambda spec, create_graph: capture(model, spec.attentions, spec.last_block_input, create_graph),
        num_prefix_tokens=layout.num_prefix_tokens,
        reads_class_token=layout.reads_class_token,
    )


def _check_size(model: nn.Module, image_hw: tuple[int, int]) -> None:
    expected = tuple(getattr(model.patch_embed, "img_size", None) or ())
    dynamic = getattr(model, "dynamic_img_size", False) or not getattr(model.patch_embed, "strict_img_size", True)
    if expected and not dynamic and tuple(image_hw) != expected:
        raise CftError(
            f"images are {tuple(image_hw)} pixels but the model takes {expected}; resize them, or "
            "create the model with img_size=... or dynamic_img_size=True"
        )
