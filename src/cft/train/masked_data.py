"""Images on disk paired with their guidance masks from the mask store, under one geometric transform.

Training: resize to `resize` x `resize`, a random `size` x `size` crop and a random horizontal flip, the same
crop and flip for the image and its mask (docs/method.md: 256, 224). Evaluation: resize and the centre crop.
Randomness comes from torch's generator, so DataLoader workers and seeds behave as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cft.data.folders import ImageItem
from cft.data.images import load_image
from cft.errors import CftError
from cft.grounding.store import MaskStore


@dataclass(frozen=True)
class PairedTransform:
    size: int = 224
    resize: int = 256
    train: bool = True
    flip: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not 0 < self.size <= self.resize:
            raise CftError(f"crop size must be in (0, resize={self.resize}], got {self.size}")

    def geometry(self) -> tuple[int, int, bool]:
        """(top, left, mirrored) of the crop: drawn in training, centred in evaluation."""
        room = self.resize - self.size
        if not self.train:
            return room // 2, room // 2, False
        top, left = (int(v) for v in torch.randint(0, room + 1, (2,)))
        return top, left, bool(self.flip and torch.rand(()) < 0.5)

    def __call__(self, image: Image.Image, mask: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image as a normalised (3, size, size) float tensor and the mask (uint8 0..255, bool or float
        0..1) as (size, size) float in [0, 1], with the same resize, crop and flip (torchvision.transforms.v2:
        the image as a tv_tensors.Image is resampled bilinearly with antialiasing, the tv_tensors.Mask by
        nearest neighbour at pixel centres)."""
        top, left, mirrored = self.geometry()
        rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        x = self._geometry(tv_tensors.Image(rgb), top, left, mirrored)
        x = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(self.mean), list(self.std))
        if mask is None:
            return x.as_subclass(torch.Tensor), None
        m = self._geometry(tv_tensors.Mask(torch.from_numpy(_as_uint8(mask))[None]), top, left, mirrored)[0]
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).float().div_(255)

    def _geometry(self, t: torch.Tensor, top: int, left: int, mirrored: bool) -> torch.Tensor:
        # masks: nearest neighbour at pixel centres (NEAREST_EXACT, as PIL), aligned with the bilinear image
        mode = InterpolationMode.NEAREST_EXACT if isinstance(t, tv_tensors.Mask) else InterpolationMode.BILINEAR
        t = TF.resize(t, [self.resize, self.resize], interpolation=mode, antialias=True)
        t = TF.crop(t, top, left, self.size, self.size)
        return TF.horizontal_flip(t) if mirrored else t


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A mask as uint8 0..255: uint8 masks (the store's) as they are, bool and float ones (0..1) scaled."""
    mask = np.asarray(mask)
    if mask.dtype == np.uint8:
        return mask
    return np.rint(np.clip(mask.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


class StoreImageDataset(Dataset):
    """`items` (images with class names), labelled by `class_index`, with guidance masks read from `store`
    (None: images only). Items are dicts {"image", "label"[, "mask"]}, ready for torch's default collate."""

    def __init__(
        self,
        items: Sequence[ImageItem],
        class_index: Mapping[str, int],
        store: MaskStore | None,
        transform: PairedTransform,
    ) -> None:
        unknown = sorted({it.label for it in items} - set(class_index))
        if unknown:
            raise CftError(f"no class index for class(es) {', '.join(unknown[:5])}")
        self.items, self.class_index, self.store, self.transform = list(items), dict(class_index), store, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.items[i]
        image = load_image(item.path)
        mask = None if self.store is None else self.store.guidance(item.image_id)
        if mask is not None and mask.shape != (image.height, image.width):
            raise CftError(
                f"mask store {self.store.folder}: the mask of {item.image_id} is {mask.shape} but the image is "
                f"{(image.height, image.width)}; was the store made from another copy of the images?"
            )
        x, m = self.transform(image, mask)
        out = {"image": x, "label": torch.tensor(self.class_index[item.label])}
        if m is not None:
            out["mask"] = m
        return out
