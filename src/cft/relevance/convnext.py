"""ConvNeXt / ConvNeXt-V2 behind cft's relevance interface: activations x gradients on the last feature map.

Families: timm's ConvNeXt class (`convnextv2_*`, and `convnext_*` too, the same class) and transformers'
ConvNextV2ForImageClassification (through `cft.relevance.hf`). Methods:

- "gradcam" (Grad-CAM, Selvaraju et al. 2017) on F, the output of the LAST STAGE (B, C, h, w), before the
  head's pooling and norm: alpha_c = mean over (h, w) of dS/dF_c, map = relu(sum_c alpha_c * F_c), at the
  feature-map grid (h, w) = (H // r, W // r), r the network's total stride (32, or output_stride).
  It is channel-weighted activations x gradients. Because the ConvNeXt heads read F only through global
  average pooling, dS/dF_c is the same at every position, so this equals the elementwise activation x
  gradient map relu(sum_c F_c * dS/dF_c) up to the factor h*w that normalisation removes. Its default is
  create_graph=True: alpha is differentiated too, so a loss on the map has the exact gradient with respect
  to every parameter before and inside the last stage (the ViT gradcam defaults to the references' constant
  gradient instead).
- "input-grad": |sum_c x_c * dS/dx_c| per pixel, averaged over each cell of the feature grid.

Maps are min-max normalised per image by `cft.relevance` and stay in the autograd graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from cft.errors import CftError
from cft.models import is_timm_convnext
from cft.relevance.capture import Captured
from cft.relevance.methods import METHODS, Backend, Method, Trace, register_backend


def feature_gradcam(trace: Trace) -> torch.Tensor:
    """relu(sum_c alpha_c F_c) with alpha_c = mean_hw dS/dF_c, F the last stage's output; (B, h, w)."""
    features = trace.captured.features
    (grad,) = torch.autograd.grad(trace.score, [features], retain_graph=True, create_graph=trace.create_graph)
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return (alpha * features).sum(dim=1).clamp(min=0)


# a registered method's implementation on a feature map, where it differs from the token one
FEATURE_VARIANTS: dict[str, Method] = {
    "gradcam": Method(feature_gradcam, False, False, True, feature_gradcam.__doc__ or ""),
}


def feature_methods() -> dict[str, Method]:
    """The methods of METHODS (in its order) that a feature-map backend runs: its variant of a method where it has
    one (gradcam), else every method that reads neither attention nor tokens (input-grad)."""
    methods = {}
    for name, method in METHODS.items():
        if name in FEATURE_VARIANTS:
            methods[name] = FEATURE_VARIANTS[name]
        elif not (method.attentions or method.last_block_input):
            methods[name] = method
    return methods


@register_backend("timm-convnext", priority=20, description="timm ConvNeXt and ConvNeXt-V2 (convnext_*, convnextv2_*)")
def backend(model: nn.Module) -> Backend | None:
    """The relevance backend of a timm ConvNeXt; None for other models."""
    if not is_timm_convnext(model):
        return None
    reduction = int(model.feature_info[-1]["reduction"])
    return feature_backend("timm ConvNeXt", int(model.in_chans), reduction, model, model.stages[-1])


def feature_backend(
    family: str,
    channels: int,
    reduction: int,
    forward: Callable[[torch.Tensor], torch.Tensor],
    feature_module: nn.Module,
) -> Backend:
    """A backend reading the output of `feature_module` (B, C, h, w), the grid being the image size // reduction."""
    return Backend(
        family=family,
        methods=feature_methods(),
        channels=channels,
        grid=lambda hw: _grid(hw, reduction),
        forward=forward,
        capture=lambda _spec, _create_graph: _capture(feature_module),
    )


def _grid(image_hw: tuple[int, int], reduction: int) -> tuple[int, int]:
    if image_hw[0] < reduction or image_hw[1] < reduction:
        raise CftError(f"images of {tuple(image_hw)} pixels are smaller than the network's stride {reduction}")
    return image_hw[0] // reduction, image_hw[1] // reduction


@contextlib.contextmanager
def _capture(feature_module: nn.Module) -> Iterator[Captured]:
    """Record the output of `feature_module` while active; the hook is removed whatever happens."""
    store = Captured()

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        store.features = output

    handle = feature_module.register_forward_hook(keep)
    try:
        yield store
    finally:
        handle.remove()
