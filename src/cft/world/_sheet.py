"""A contact sheet of world samples next to their coloured part masks, for eyeballing the drawing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from cft.world.world import WorldSplit

__all__ = ["PART_COLOURS", "contact_sheet"]

PART_COLOURS = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
    ],
    np.uint8,
)


def _overlay(image: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """The image greyed and dimmed, each part painted in its colour (by position in the class's part list)."""
    grey = (image.mean(axis=2, keepdims=True) * 0.35).astype(np.uint8)
    out = np.repeat(grey, 3, axis=2)
    for k, mask in enumerate(masks.values()):
        out[mask] = PART_COLOURS[k % len(PART_COLOURS)]
    return out


def contact_sheet(split: WorldSplit, n: int = 16, cols: int = 4, scale: int = 3, start: int = 0) -> Image.Image:
    """Tile samples start..start+n-1: each as picture | part masks, titled with class and background, and a
    legend of part names in their mask colours."""
    n = min(n, len(split) - start)
    font = ImageFont.load_default()
    first = split.sample(start)
    size = first["image"].shape[1] * scale
    legend_lines, line_h = 3, 12
    cell_w, cell_h = 2 * size + 12, size + 16 + legend_lines * line_h + 6
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        s = split.sample(start + k)
        x0, y0 = (k % cols) * cell_w + 4, (k // cols) * cell_h + 2
        image = s["image"].transpose(1, 2, 0)
        title = f"#{s['index']} {split.classes[s['label']]} / {split.backgrounds[s['background']]}"
        draw.text((x0, y0), title, fill=(0, 0, 0), font=font)
        for j, tile in enumerate((image, _overlay(image, s["part_masks"]))):
            big = Image.fromarray(tile).resize((size, size), Image.NEAREST)
            sheet.paste(big, (x0 + j * (size + 4), y0 + 14))
        tx, ty = x0, y0 + 16 + size
        for j, (name, mask) in enumerate(s["part_masks"].items()):
            label = f"{name}({int(mask.sum())}) "
            width = draw.textlength(label, font=font)
            if tx + width > x0 + 2 * size:
                tx, ty = x0, ty + line_h
            draw.text(
                (tx, ty), label, fill=tuple(int(v) for v in PART_COLOURS[j % len(PART_COLOURS)] // 4 * 3), font=font
            )
            tx += width
    return sheet
