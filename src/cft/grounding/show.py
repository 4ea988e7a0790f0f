"""`cft masks show`: a sheet of store entries for a visual check: image | each concept's mask | guidance mask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cft.data.images import load_image
from cft.grounding.store import Entry, MaskStore
from cft.visualize import blend, colormap


def _tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image dimmed outside the mask, kept inside it."""
    dim = (image * 0.25).astype(np.uint8)
    return np.where(mask[..., None] > 0, image, dim)


def _row(image: np.ndarray, entry: Entry, max_concepts: int) -> tuple[list[np.ndarray], list[str]]:
    tiles, titles = [image], [f"{entry.meta.get('class', '')}"]
    for k, name in enumerate(entry.names[:max_concepts]):
        c = entry.meta.get("concepts", {}).get(name, {})
        tiles.append(_tint(image, entry.concepts[k]))
        titles.append(f"{name} {c.get('score', 0):.2f}")
    tiles.append(blend(image, colormap(entry.guidance)))
    flag = " SUSPECT" if entry.meta.get("suspect") else ""
    titles.append(f"guidance {entry.meta.get('guidance_fraction', 0):.0%}{flag}")
    return tiles, titles


def masks_sheet(
    store: MaskStore, images_root: str | Path, image_ids: Sequence[str], tile: int = 160, max_concepts: int = 6
) -> Image.Image:
    """One row per image: the image, each concept's mask (the image kept inside it) titled with the concept and
    its score, and the guidance mask as a heat map (titled with its foreground fraction)."""
    font = ImageFont.load_default()
    rows = []
    for image_id in image_ids:
        entry = store.read(image_id, verify=True)  # a corrupt entry is reported with its path
        image = np.asarray(load_image(Path(images_root) / image_id))
        rows.append(_row(image, entry, max_concepts))
    cols = max(len(t) for t, _ in rows)
    head = 14
    sheet = Image.new("RGB", (cols * (tile + 4), len(rows) * (tile + head + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (tiles, titles) in enumerate(rows):
        y = r * (tile + head + 4)
        for c, (t, title) in enumerate(zip(tiles, titles, strict=True)):
            x = c * (tile + 4)
            draw.text((x + 2, y + 1), title[:26], fill=(0, 0, 0), font=font)
            sheet.paste(Image.fromarray(t).resize((tile, tile), Image.NEAREST), (x, y + head))
    return sheet
