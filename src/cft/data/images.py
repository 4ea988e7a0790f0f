"""Image files in, model-ready tensors out, using the model's own timm data config."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from cft.errors import CftError

__all__ = ["Preprocessor", "load_image", "preprocessor", "sample_image_path", "to_rgb"]


def sample_image_path() -> Path:
    """The bundled sample picture (224 x 224 RGB, a bird on a branch; drawn by scripts/make_sample_image.py)."""
    return Path(str(resources.files("cft") / "assets" / "sample.png"))


def load_image(path: str | Path, orient: bool = True) -> Image.Image:
    """Read an image file as RGB, turned upright as its EXIF orientation says (a phone photo as a person sees it;
    `orient=False` reads the pixels raw, as the published evaluation protocols do); a missing, unreadable or
    non-image file raises a CftError that names it."""
    path = Path(path)
    if not path.exists():
        raise CftError(f"image {path} does not exist")
    if not path.is_file():
        raise CftError(f"image {path} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img) if orient else img)
    except Exception as err:  # PIL raises many types for foreign or truncated files
        raise CftError(f"cannot read image {path} ({type(err).__name__}: {err})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB: 16- and 32-bit integer images scaled (not clipped) to 0..255, float images
    in [0, 1] or [0, 255] scaled or clipped, transparency (RGBA, LA, palettes with a transparent colour)
    composited over white, CMYK, greyscale and palettes converted."""
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif img.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        grey = np.rint(np.clip(arr, 0, 255)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


class Preprocessor:
    """The model's eval transform (resize, centre crop, normalise), which also returns the crop it feeds in.

    The crop matters for pictures: a relevance map covers what the model saw, not the original file.
    """

    def __init__(self, config: dict) -> None:
        from timm.data import create_transform

        self.config = dict(config)
        channels = self.config["input_size"][0]
        # Same resize and crop, no normalisation: a tensor in [0, 1] that can be shown as it is.
        unit = {**self.config, "mean": (0.0,) * channels, "std": (1.0,) * channels}
        self._to_unit = create_transform(**unit)
        self.mean = torch.tensor(self.config["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.config["std"], dtype=torch.float32)[:, None, None]

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model's input."""
        return tuple(self.config["input_size"][1:])

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
        """The normalised model input (C, H, W) and the crop it shows, as (H, W, 3) uint8."""
        unit = self._to_unit(image.convert("RGB"))
        shown = (unit * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return (unit - self.mean) / self.std, shown


def preprocessor(model: nn.Module) -> Preprocessor:
    """The eval preprocessing of `model`: timm's resolved data config, at the size the model really takes.

    timm's config reports the pretrained default (e.g. 224) even for a model built with img_size=64, so the
    input size comes from the model's patch embedding unless the model accepts any size (dynamic_img_size).
    """
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    patch_embed = getattr(model, "patch_embed", None)
    proj = getattr(patch_embed, "proj", None)
    channels = getattr(proj, "in_channels", config["input_size"][0])
    if channels != 3:
        raise CftError(f"the model takes {channels}-channel images; cft reads image files as 3-channel RGB")
    img_size = getattr(patch_embed, "img_size", None)
    if img_size and not getattr(model, "dynamic_img_size", False):
        config["input_size"] = (channels, *img_size)
    return Preprocessor(config)
