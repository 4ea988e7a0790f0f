"""Pictures of relevance maps without matplotlib: a jet colormap in numpy, blending, and a 3-panel figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from cft.data.images import Preprocessor, preprocessor
from cft.errors import CftError
from cft.relevance import relevance_with_logits, upsample

__all__ = ["GAP_COLOR", "Explanation", "blend", "colormap", "explain", "explanation_panel", "heat_image"]

GAP_COLOR = (255, 255, 255)

# A jet colormap as piecewise-linear channels: (position, value) anchors per channel. It runs dark blue ->
# blue -> cyan -> green -> yellow -> red -> dark red. Unlike matplotlib's jet (red fades from 0.89), red holds
# until green is gone at 0.91, so the hue never increases with the value.
_JET = {
    "r": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.91, 1.0), (1.0, 0.5)),
    "g": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "b": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def _to_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def colormap(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Map values in [0, 1] (any shape S) to jet RGB colours, uint8 of shape S + (3,).

    Values outside [0, 1] are clipped and NaN counts as 0: 0 is dark blue, 1 is dark red.
    """
    x = np.nan_to_num(_to_numpy(values), nan=0.0).clip(0.0, 1.0)
    channels = []
    for name in ("r", "g", "b"):
        xp, fp = zip(*_JET[name], strict=True)
        channels.append(np.interp(x, xp, fp))
    return np.rint(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def blend(image_rgb_uint8: np.ndarray, heat_rgb: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(1 - alpha) * image + alpha * heat, both (H, W, 3) uint8; alpha 0 gives the image back unchanged."""
    image = np.asarray(image_rgb_uint8)
    heat = np.asarray(heat_rgb)
    if image.shape != heat.shape or image.ndim != 3 or image.shape[-1] != 3:
        raise CftError(f"blend needs two (H, W, 3) images of one shape, got {image.shape} and {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise CftError(f"alpha must be in [0, 1], got {alpha}")
    mixed = (1.0 - alpha) * image.astype(np.float64) + alpha * heat.astype(np.float64)
    return np.rint(mixed).clip(0, 255).astype(np.uint8)


def heat_image(relevance_map: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A patch-level map (gh, gw) or (1, gh, gw), upsampled bilinearly to size (H, W), as jet RGB uint8."""
    maps = relevance_map if isinstance(relevance_map, torch.Tensor) else torch.as_tensor(_to_numpy(relevance_map))
    maps = maps.detach().float().cpu()
    if maps.dim() == 2:
        maps = maps[None]
    if maps.dim() != 3 or maps.shape[0] != 1:
        raise CftError(f"relevance map must be (gh, gw) or (1, gh, gw), got shape {tuple(maps.shape)}")
    return colormap(upsample(maps, size, mode="bilinear")[0].clamp(0, 1))


def explanation_panel(
    image: Image.Image | np.ndarray,
    relevance_map: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    gap: int = 4,
) -> Image.Image:
    """Side by side: the image | its relevance map as a heat map at the image's size | the two blended.

    The panels are separated by `gap` white pixels, so the result is (3 * W + 2 * gap) x H.
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise CftError(f"image must be a PIL image or an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    if gap < 0:
        raise CftError(f"gap must be >= 0, got {gap}")
    h, w = rgb.shape[:2]
    heat = heat_image(relevance_map, (h, w))
    panel = np.empty((h, 3 * w + 2 * gap, 3), dtype=np.uint8)
    panel[:] = GAP_COLOR
    for i, part in enumerate((rgb, heat, blend(rgb, heat, alpha))):
        left = i * (w + gap)
        panel[:, left : left + w] = part
    return Image.fromarray(panel)


@dataclass
class Explanation:
    """One image explained: the 3-panel picture, the patch-level map and the class it explains."""

    panel: Image.Image
    relevance: torch.Tensor  # (gh, gw) in [0, 1], detached, on the CPU
    class_index: int  # the class the map explains: the target if one was given, else the prediction
    predicted: int  # the model's top-1 class for this image


def explain(
    model: nn.Module,
    image: Image.Image,
    method: str = "grad-rollout",
    target: int | None = None,
    preprocess: Preprocessor | None = None,
    alpha: float = 0.5,
) -> Explanation:
    """Explain `model`'s decision on one RGB image (target None: its predicted class) with a relevance method.

    The image goes through the model's own eval preprocessing (`cft.data.preprocessor`); the panel shows the
    crop the model saw, its map, and the blend. The model is used as it is (call .eval() first).
    """
    preprocess = preprocess or preprocessor(model)
    pixels, shown = preprocess(image)
    first = next(model.parameters(), None)
    if first is not None:
        pixels = pixels.to(device=first.device, dtype=first.dtype)
    targets: Sequence[int] | None = None if target is None else [int(target)]
    maps, logits = relevance_with_logits(model, pixels[None], targets, method)
    predicted = int(logits[0].detach().argmax())
    chosen = predicted if target is None else int(target)
    relevance_map = maps[0].detach().float().cpu()
    return Explanation(explanation_panel(shown, relevance_map, alpha=alpha), relevance_map, chosen, predicted)
