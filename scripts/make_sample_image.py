"""Draw the bundled sample image, src/cft/assets/sample.png: a bird on a branch against a textured sky.

Our own drawing (PIL + numpy, fixed seed), so the package ships no third-party picture. The bird has
distinct parts (head, eye, beak, breast, wing, tail, legs) so a relevance map has something to point at.

    python scripts/make_sample_image.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 224
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "cft" / "assets" / "sample.png"


def background(rng: np.random.Generator) -> Image.Image:
    """A blue-to-pale sky with soft cloud texture and foliage blobs in the lower corners."""
    y = np.linspace(0.0, 1.0, SIZE)[:, None, None]
    top, bottom = np.array([70, 130, 200]), np.array([190, 215, 235])
    sky = top * (1 - y) + bottom * y + np.zeros((SIZE, SIZE, 1))
    # Cloud texture: coarse noise upsampled smoothly, plus fine grain.
    coarse = rng.random((8, 8))
    clouds = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC))
    sky += (clouds[..., None] / 255.0 - 0.5) * 40
    sky += rng.normal(0, 4, (SIZE, SIZE, 1))
    img = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(40):  # leaves: green blobs along the bottom
        cx, cy = rng.integers(0, SIZE), rng.integers(175, SIZE + 10)
        r = int(rng.integers(8, 18))
        shade = (int(rng.integers(40, 80)), int(rng.integers(110, 160)), int(rng.integers(40, 70)))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=shade)
    return img.filter(ImageFilter.GaussianBlur(1.2))


def bird(img: Image.Image) -> Image.Image:
    """A perching bird facing left, on a diagonal brown branch."""
    draw = ImageDraw.Draw(img)
    # Branch, with a bit of bark texture.
    draw.line((0, 168, SIZE, 140), fill=(95, 60, 30), width=10)
    draw.line((150, 149, 200, 118), fill=(95, 60, 30), width=5)
    for x in range(5, SIZE, 17):
        y = 168 - 28 * x / SIZE
        draw.line((x, y - 3, x + 6, y - 1), fill=(70, 42, 20), width=2)
    # Tail: a dark wedge behind the body.
    draw.polygon([(138, 118), (192, 142), (188, 154), (132, 132)], fill=(60, 45, 40))
    # Legs and feet gripping the branch.
    for x in (100, 114):
        draw.line((x, 138, x - 2, 157), fill=(230, 150, 40), width=3)
        draw.line((x - 8, 158, x + 6, 156), fill=(230, 150, 40), width=3)
    # Body (brown back) and breast (orange-red, robin-like).
    draw.ellipse((70, 86, 150, 142), fill=(120, 85, 60))
    draw.ellipse((72, 96, 124, 142), fill=(225, 95, 45))
    # Wing: darker ellipse with feather lines.
    draw.ellipse((100, 94, 152, 126), fill=(85, 60, 45))
    for i in range(4):
        draw.arc((104 + 6 * i, 98, 150, 130), 20, 140, fill=(55, 38, 28), width=2)
    # Head, eye with highlight, beak.
    draw.ellipse((56, 60, 100, 102), fill=(110, 78, 55))
    draw.ellipse((64, 74, 76, 86), fill=(250, 250, 250))
    draw.ellipse((67, 77, 74, 84), fill=(10, 10, 10))
    draw.ellipse((68, 78, 70, 80), fill=(255, 255, 255))
    draw.polygon([(58, 78), (36, 85), (58, 90)], fill=(240, 190, 40))
    draw.line((38, 85, 58, 85), fill=(150, 110, 20), width=1)
    return img


def make(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return bird(background(rng))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    make().save(out, format="PNG", optimize=True)
    print(f"wrote {out} ({SIZE}x{SIZE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
