"""The mark cue: a small coloured tag drawn on (or beside) the object, whose colour can carry the class.

A mark is a `size` x `size` square with a light one-pixel frame (so that it shows on a body of its own colour),
written into the part-label image before painting: it gets the same shading, noise and outline as every part,
and its pixels are known exactly. Colours 0..num_classes-1 belong
to the classes (in the biased splits class c wears colour c with probability `bias`); the rest are neutral.
"""

from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["MARK_COLOURS", "MARK_FRAME", "mark_colour", "place_mark"]

# 12 colours that stay apart under the world's shading and noise: ten saturated hues, then white and grey.
_HSV = [
    (0.0, 0.95, 0.95),
    (30.0, 0.95, 1.0),
    (58.0, 0.95, 1.0),
    (100.0, 0.9, 0.8),
    (150.0, 0.95, 0.75),
    (185.0, 0.95, 0.95),
    (220.0, 0.95, 1.0),
    (265.0, 0.85, 0.95),
    (300.0, 0.9, 0.95),
    (330.0, 0.6, 1.0),
    (0.0, 0.0, 1.0),
    (0.0, 0.0, 0.45),
]
MARK_FRAME = np.array((1.0, 1.0, 1.0), np.float32)
MARK_COLOURS = np.array([colorsys.hsv_to_rgb(h / 360.0, s, v) for h, s, v in _HSV], np.float32)


def mark_colour(value: int) -> np.ndarray:
    """The RGB colour (floats in [0, 1]) of cue value `value`."""
    return MARK_COLOURS[value]


def _window_counts(mask: np.ndarray, size: int) -> np.ndarray:
    """Pixels of `mask` in every size x size window, indexed by the window's top-left corner."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]


def place_mark(
    labels: np.ndarray, size: int, rng: np.random.Generator, carrier: int | None = None, grid: int = 1
) -> tuple[int, int]:
    """Top-left corner of a size x size mark: on the carrier part (label id `carrier`), or off the object (None).

    On the carrier: uniform over the windows with the most carrier pixels (all of them where the part is big
    enough), ties broken towards windows with more object pixels. Off the object: uniform over the windows with
    the fewest object pixels. Only corners on multiples of `grid` qualify (grid = the patch size puts the mark in
    patches of its own). One draw from `rng`.
    """
    objects = _window_counts(labels > 0, size)
    if carrier is None:
        score = -objects
    else:
        score = _window_counts(labels == carrier, size) * (size * size + 1) + objects
    score = score[::grid, ::grid]
    ys, xs = np.nonzero(score == score.max())
    k = int(rng.integers(len(ys)))
    return int(ys[k]) * grid, int(xs[k]) * grid
