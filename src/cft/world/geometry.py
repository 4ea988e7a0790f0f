"""Polygon primitives in object-local coordinates (x right, y down, object roughly inside [-1, 1]^2)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Jitter", "circle", "clip_to_ellipse", "ellipse", "mirror_x", "mirror_y", "polygon", "rect", "ribbon"]


def polygon(*points: tuple[float, float]) -> np.ndarray:
    """A polygon from its vertices, as a (k, 2) float array."""
    return np.asarray(points, dtype=np.float64)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """An axis-aligned rectangle from two opposite corners."""
    return polygon((x0, y0), (x1, y0), (x1, y1), (x0, y1))


@functools.lru_cache(maxsize=64)
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 20) -> np.ndarray:
    """An ellipse as an n-gon; `angle` (degrees) rotates it about its centre."""
    cos_t, sin_t = _unit_circle(n)
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    out = np.empty((n, 2))
    out[:, 0] = cx + (c * rx) * cos_t - (s * ry) * sin_t
    out[:, 1] = cy + (s * rx) * cos_t + (c * ry) * sin_t
    return out


def circle(cx: float, cy: float, r: float, n: int = 16) -> np.ndarray:
    """A circle as an n-gon."""
    return ellipse(cx, cy, r, r, 0.0, n)


def ribbon(points: Sequence[tuple[float, float]], width: float | Sequence[float]) -> np.ndarray:
    """A thick polyline (stem, leg, antenna) as one polygon; `width` is constant or given per point."""
    n = len(points)
    widths = [float(width)] * n if isinstance(width, (int, float)) else [float(w) for w in width]
    left, right = [], []
    for i, ((x, y), w) in enumerate(zip(points, widths, strict=True)):
        (x0, y0), (x1, y1) = points[max(i - 1, 0)], points[min(i + 1, n - 1)]
        dx, dy = x1 - x0, y1 - y0
        k = w / 2.0 / (math.hypot(dx, dy) + 1e-12)
        left.append((x - dy * k, y + dx * k))
        right.append((x + dy * k, y - dx * k))
    return np.array(left + right[::-1])


def mirror_x(poly: np.ndarray) -> np.ndarray:
    """The polygon mirrored about the vertical axis x = 0 (the other wing, the other ear)."""
    return poly * np.array([-1.0, 1.0])


def mirror_y(poly: np.ndarray) -> np.ndarray:
    """The polygon mirrored about the horizontal axis y = 0 (the other wing of an airplane seen from above)."""
    return poly * np.array([1.0, -1.0])


def clip_to_ellipse(x0: float, x1: float, cx: float, cy: float, rx: float, ry: float, n: int = 6) -> np.ndarray:
    """The vertical band x0 <= x <= x1 of an axis-aligned ellipse, as a polygon (a stripe on a fish)."""
    x = np.linspace(x0, x1, n)
    h = ry * np.sqrt(np.clip(1.0 - ((x - cx) / rx) ** 2, 0.0, None))
    top = np.stack([x, cy - h], axis=1)
    bottom = np.stack([x, cy + h], axis=1)[::-1]
    return np.concatenate([top, bottom])


class Jitter:
    """Random shape variation: `amount` 0 gives the canonical shape, 1 the default variation."""

    def __init__(self, rng: np.random.Generator, amount: float) -> None:
        self.rng = rng
        self.amount = amount
        self._buffer: list[float] = []

    def _unit(self) -> float:
        """A uniform number in [-1, 1), drawn from the generator 32 at a time (one call per draw is slow)."""
        if not self._buffer:
            self._buffer = (self.rng.random(32) * 2.0 - 1.0).tolist()
        return self._buffer.pop()

    def __call__(self, x: float, spread: float) -> float:
        """x plus a uniform offset in [-spread, spread] (scaled by the amount)."""
        return x + self.amount * spread * self._unit()

    def scale(self, x: float, rel: float) -> float:
        """x times a factor in [1 - rel, 1 + rel] (scaled by the amount)."""
        return x * (1.0 + self.amount * rel * self._unit())

    def integer(self, lo: int, hi: int) -> int:
        """A uniform integer in [lo, hi] (not scaled: a count such as the number of petals)."""
        return min(lo + int((self._unit() + 1.0) / 2.0 * (hi - lo + 1)), hi)

    def angle(self) -> float:
        """A uniform angle in [0, 360) degrees (not scaled)."""
        return (self._unit() + 1.0) * 180.0
