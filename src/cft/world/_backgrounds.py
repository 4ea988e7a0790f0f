"""Procedural background textures and a fast bank of precomputed tiles to crop and colour-jitter per sample.

Textures come in colour families on purpose (blue: sky, water, night; green: forest, grass; warm: sand, brick,
lava; grey: road, snow, rock; carpet: any hue): each sample shifts its texture to a mean colour drawn from a range
that overlaps the ranges of its family, and jitters contrast, so the mean colour of an image narrows the
background down but does not give it away: its texture does.
Feature sizes are relative to the tile size, so textures look alike at any image size.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BACKGROUNDS", "TEXTURES", "Background", "BackgroundBank"]

Texture = Callable[[np.random.Generator, int], np.ndarray]
Rgb = tuple[float, float, float]


def _axis(cells: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, cells - 1.0, size)
    i = np.minimum(t.astype(np.int64), cells - 2)
    f = t - i
    return i, (f * f * (3.0 - 2.0 * f)).astype(np.float32)


def _noise(rng: np.random.Generator, size: int, cells_y: int, cells_x: int | None = None) -> np.ndarray:
    """Smooth value noise in [0, 1] with about cells_y x cells_x random knots."""
    grid = rng.random((max(cells_y, 1) + 1, max(cells_x or cells_y, 1) + 1), dtype=np.float32)
    iy, fy = _axis(grid.shape[0], size)
    ix, fx = _axis(grid.shape[1], size)
    rows = grid[iy] * (1.0 - fy)[:, None] + grid[iy + 1] * fy[:, None]
    return rows[:, ix] * (1.0 - fx) + rows[:, ix + 1] * fx


def _fractal(rng: np.random.Generator, size: int, cells: int, octaves: int = 4) -> np.ndarray:
    """Sum of noise octaves (each twice as fine, half as strong), normalised to [0, 1]."""
    total = sum(_noise(rng, size, cells * 2**k) * 0.5**k for k in range(octaves))
    return _unit(total)


def _unit(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo + 1e-8)).astype(np.float32)


def _smooth(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(t: np.ndarray, a: Rgb | np.ndarray, b: Rgb | np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours (or colour images) by t in [0, 1]."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _grain(rng: np.random.Generator, size: int, amount: float) -> np.ndarray:
    return ((rng.random((size, size), dtype=np.float32) - 0.5) * (2.0 * amount))[..., None]


def _rows(size: int) -> np.ndarray:
    return np.broadcast_to(np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None], (size, size))


def forest(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dense canopy: dark green leaf clumps with shadowed gaps and a leafy speckle."""
    canopy = _smooth(0.3, 0.7, _fractal(rng, size, 5, 3))
    leaves = _noise(rng, size, size // 3)
    img = _mix(canopy, (0.03, 0.12, 0.04), (0.2, 0.42, 0.12))
    return img + ((leaves - 0.5) * 0.2)[..., None] * np.array([0.6, 1.0, 0.4], np.float32)


def grass(rng: np.random.Generator, size: int) -> np.ndarray:
    """Meadow grass: thin vertical blades over lighter and darker patches."""
    blades = _noise(rng, size, size // 8, size // 2)
    patches = _fractal(rng, size, 3, 2)
    return _mix(0.65 * blades + 0.35 * patches, (0.15, 0.38, 0.06), (0.55, 0.8, 0.25))


def water(rng: np.random.Generator, size: int) -> np.ndarray:
    """Open water: wavy horizontal ripples with bright crests."""
    warp = _fractal(rng, size, 3, 3)
    phase = 2.0 * np.pi * rng.uniform(10.0, 16.0) * _rows(size) + 7.0 * warp
    wave = np.sin(phase + 0.6 * np.sin(phase * 0.5)) * 0.5 + 0.5
    img = _mix(0.35 * wave + 0.65 * warp, (0.04, 0.2, 0.42), (0.22, 0.52, 0.78))
    return _mix(_smooth(0.88, 1.0, wave) * 0.7, img, (0.8, 0.92, 1.0))


def sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """Daylight sky: a blue gradient, paler towards the horizon, with soft white clouds."""
    img = _mix(_rows(size), (0.2, 0.45, 0.88), (0.62, 0.8, 0.97))
    clouds = _smooth(0.45, 0.8, _fractal(rng, size, 3, 4))
    return _mix(clouds, img, (0.97, 0.97, 1.0))


def night(rng: np.random.Generator, size: int) -> np.ndarray:
    """Night sky: a dark navy gradient with faint haze and scattered stars."""
    img = _mix(_rows(size), (0.01, 0.02, 0.09), (0.07, 0.1, 0.26))
    img = img + (_fractal(rng, size, 3, 3) * 0.06)[..., None]
    stars = rng.random((size, size)) > 0.985
    img[stars] = rng.uniform(0.6, 1.0, (int(stars.sum()), 1)) * np.array([1.0, 0.97, 0.85], np.float32)
    return img


def sand(rng: np.random.Generator, size: int) -> np.ndarray:
    """Beach sand: gentle wind ripples and fine grain."""
    a = rng.uniform(-0.6, 0.6)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    warp = _fractal(rng, size, 3, 2)
    ripple = np.sin(2.0 * np.pi * (rng.uniform(14.0, 20.0) * (y * np.cos(a) + x * np.sin(a)) + 1.5 * warp))
    img = _mix(0.5 + 0.25 * ripple + 0.25 * (warp - 0.5), (0.62, 0.5, 0.3), (0.9, 0.8, 0.6))
    return img + _grain(rng, size, 0.07)


def snow(rng: np.random.Generator, size: int) -> np.ndarray:
    """Snow field: near white with soft blue shadows and sparkles."""
    shadow = _smooth(0.45, 0.85, _fractal(rng, size, 3, 3))
    img = _mix(shadow, (0.93, 0.95, 0.98), (0.66, 0.74, 0.88)) + _grain(rng, size, 0.025)
    img[rng.random((size, size)) > 0.994] = 1.0
    return img


def brick(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brick wall: staggered rows of bricks of varying red-brown with light mortar joints."""
    bh = max(size // int(rng.integers(9, 12)), 4)
    bw, mortar = 2 * bh + int(rng.integers(0, bh // 2 + 1)), max(1.0, bh / 7.0)
    y, x = np.mgrid[0:size, 0:size]
    row = y // bh
    xs = x + (row % 2) * (bw // 2)
    ids = row * (size // bw + 2) + xs // bw
    tint = rng.uniform(0.7, 1.15, int(ids.max()) + 1).astype(np.float32)
    img = np.array([0.62, 0.26, 0.17], np.float32) * tint[ids][..., None]
    joint = ((y % bh) < mortar) | ((xs % bw) < mortar)
    img[joint] = (0.72, 0.7, 0.64)
    return img + _grain(rng, size, 0.06)


def road(rng: np.random.Generator, size: int) -> np.ndarray:
    """Asphalt: coarse dark grey grain with worn patches and a dashed lane marking."""
    img = np.full((size, size, 3), 0.3, np.float32) + ((_fractal(rng, size, 4, 2) - 0.5) * 0.14)[..., None]
    img = img + _grain(rng, size, 0.1)
    y0, width, period = int(rng.integers(size // 8, size - size // 8)), max(size // 40, 2), size // 4
    x = np.arange(size)
    dash = (x + int(rng.integers(0, period))) % period < period // 2
    line = (0.95, 0.95, 0.9) if rng.random() < 0.5 else (0.95, 0.8, 0.2)
    img[y0 : y0 + width, dash] = line
    return img


def lava(rng: np.random.Generator, size: int) -> np.ndarray:
    """Lava field: dark cooled crust broken by glowing orange-yellow cracks."""
    ridge = 1.0 - np.abs(2.0 * _fractal(rng, size, 4, 4) - 1.0)
    crust = _mix(_noise(rng, size, size // 8), (0.07, 0.04, 0.03), (0.24, 0.12, 0.08))
    img = _mix(_smooth(0.8, 0.93, ridge), crust, (0.95, 0.45, 0.08))
    return _mix(_smooth(0.95, 1.0, ridge), img, (1.0, 0.85, 0.3))


def carpet(rng: np.random.Generator, size: int) -> np.ndarray:
    """Patterned carpet: a woven diamond lattice in three colours of a random hue."""
    period = size // int(rng.integers(6, 9))
    y, x = np.mgrid[0:size, 0:size]
    u, v = (x % period) / period - 0.5, (y % period) / period - 0.5
    band = (np.floor((np.abs(u) + np.abs(v)) * 6.0) % 3).astype(np.int64)
    h = rng.random()
    colours = np.array(
        [
            colorsys.hsv_to_rgb(h, 0.6, 0.55),
            colorsys.hsv_to_rgb((h + 0.5) % 1.0, 0.45, 0.8),
            colorsys.hsv_to_rgb((h + 0.08) % 1.0, 0.7, 0.3),
        ],
        np.float32,
    )
    weave = (((x + y) % 2) * 0.05 - 0.025).astype(np.float32)[..., None]
    return colours[band] + weave + _grain(rng, size, 0.04)


def rock(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stone pavement: irregular grey stones (Voronoi cells) with dark gaps between them."""
    k = int(rng.integers(18, 30))
    seeds = rng.uniform(0.0, size, (k, 2)).astype(np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2)
    part = np.partition(d, 1, axis=-1)
    cell = np.argmin(d, axis=-1)
    tone = rng.uniform(0.38, 0.68, k).astype(np.float32)[:, None] * rng.uniform(0.92, 1.08, (k, 3)).astype(np.float32)
    img = tone[cell] * (0.85 + 0.3 * _fractal(rng, size, 4, 2))[..., None]
    gap = _smooth(0.0, size / 50.0, part[..., 1] - part[..., 0])
    return _mix(gap, (0.12, 0.12, 0.12), img) + _grain(rng, size, 0.05)


@dataclass(frozen=True)
class Background:
    """A named texture and the range of its mean colour (HSV; hue in degrees) that samples are shifted to."""

    name: str
    texture: Texture
    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]


# The default order pairs class i with background i (bird-forest, fish-water, car-road, airplane-sky, boat-sand,
# house-snow, tree-grass, flower-brick, butterfly-night, cat-carpet); lava and rock are neutral by default.
# Mean colours overlap within the families blue (sky, water, night), green (forest, grass), warm (sand, brick, lava)
# and grey (road, snow, rock); carpet takes any hue.
BACKGROUNDS: dict[str, Background] = {
    b.name: b
    for b in [
        Background("forest", forest, (80.0, 130.0), (0.45, 0.8), (0.2, 0.55)),
        Background("water", water, (190.0, 230.0), (0.4, 0.85), (0.3, 0.75)),
        Background("road", road, (0.0, 360.0), (0.0, 0.12), (0.2, 0.55)),
        Background("sky", sky, (195.0, 230.0), (0.25, 0.7), (0.5, 0.92)),
        Background("sand", sand, (25.0, 48.0), (0.3, 0.65), (0.45, 0.88)),
        Background("snow", snow, (190.0, 230.0), (0.0, 0.18), (0.55, 0.95)),
        Background("grass", grass, (70.0, 120.0), (0.45, 0.8), (0.3, 0.7)),
        Background("brick", brick, (5.0, 35.0), (0.4, 0.75), (0.3, 0.7)),
        Background("night", night, (205.0, 245.0), (0.45, 0.85), (0.12, 0.5)),
        Background("carpet", carpet, (0.0, 360.0), (0.2, 0.7), (0.25, 0.75)),
        Background("lava", lava, (0.0, 35.0), (0.55, 0.9), (0.2, 0.55)),
        Background("rock", rock, (0.0, 360.0), (0.0, 0.15), (0.3, 0.7)),
    ]
}
TEXTURES: dict[str, Texture] = {name: b.texture for name, b in BACKGROUNDS.items()}


class BackgroundBank:
    """Tiles of each texture, precomputed once; `draw` crops, flips and re-colours one per sample."""

    def __init__(self, names: Sequence[str], tile_size: int, tiles: int, rng: np.random.Generator) -> None:
        self.specs = tuple(BACKGROUNDS[n] for n in names)
        self.tile_size = tile_size
        bank = [[b.texture(rng, tile_size) for _ in range(tiles)] for b in self.specs]
        self.tiles = (np.clip(np.array(bank, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        self.means = self.tiles.mean(axis=(2, 3), dtype=np.float64)  # (backgrounds, tiles, 3), 0..255

    def draw(
        self,
        background: int,
        rng: np.random.Generator,
        size: int,
        *,
        contrast: float,
        contrast_jitter: float,
        hue_jitter: float,
        saturation_jitter: float,
        brightness_jitter: float,
    ) -> np.ndarray:
        """A (size, size, 3) uint8 background: random tile, crop and flip, re-coloured.

        The texture's deviations from its tile's mean colour are scaled by the contrast (times a jitter factor)
        and added to a new mean colour drawn from the background's range, widened by the hue, saturation and
        brightness jitters.
        """
        spec, u = self.specs[background], rng.random(11)
        t = min(int(u[0] * self.tiles.shape[1]), self.tiles.shape[1] - 1)
        y0, x0 = (u[1:3] * (self.tile_size - size + 1)).astype(np.int64)
        crop = self.tiles[background, t, y0 : y0 + size, x0 : x0 + size]
        if u[3] < 0.5:
            crop = crop[:, ::-1]
        j = 2.0 * u[7:] - 1.0
        h = spec.hue[0] + (spec.hue[1] - spec.hue[0]) * u[4] + hue_jitter * j[0]
        s = (spec.sat[0] + (spec.sat[1] - spec.sat[0]) * u[5]) * (1.0 + saturation_jitter * j[1])
        v = (spec.val[0] + (spec.val[1] - spec.val[0]) * u[6]) * (1.0 + brightness_jitter * j[2])
        target = np.array(colorsys.hsv_to_rgb((h / 360.0) % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))
        k = contrast * (1.0 + contrast_jitter * j[3])
        offset = (target * 255.0 - k * self.means[background, t] + 0.5).astype(np.float32)
        out = crop.astype(np.float32) * np.float32(k)
        out += offset
        return np.clip(out, 0.0, 255.0, out=out).astype(np.uint8)
