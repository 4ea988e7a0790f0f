"""Object categories built from named parts, rasterised into an exact part-label image, then painted.

Each category is a builder that returns polygons in object-local coordinates (x right, y down, the object facing
right and roughly inside [-1, 1]^2) as (part name, polygon) pairs in z-order: later polygons are drawn on top.
Several polygons of one name (two wheels) form one part. Rasterising writes part ids into a label image without
anti-aliasing, so each pixel belongs to exactly one part or to the background; the RGB image is painted from the
label image afterwards, which makes every part mask exactly the pixels drawn for that part.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cft.world.geometry import (
    Jitter,
    circle,
    clip_to_ellipse,
    ellipse,
    mirror_x,
    mirror_y,
    polygon,
    rect,
    ribbon,
)

__all__ = ["CATEGORIES", "Category", "Colour", "Like", "draw_labels", "paint", "sample_palette"]

Part = tuple[str, np.ndarray]


@dataclass(frozen=True)
class Colour:
    """A class-typical colour: one of `hues` (degrees), saturation and value drawn from their ranges."""

    hues: tuple[float, ...]
    sat: tuple[float, float]
    val: tuple[float, float]


@dataclass(frozen=True)
class Like:
    """The colour of another part of the same object, with its brightness times `value` (fur, a darker wing)."""

    part: str
    value: float = 1.0


@dataclass(frozen=True)
class Category:
    """An object class: part names in z-order, a polygon builder, a colour rule per part and the part a mark
    cue is drawn on (its largest, least telling region: a body, a wall, a hull)."""

    name: str
    parts: tuple[str, ...]
    build: Callable[[Jitter], list[Part]]
    colours: Mapping[str, Colour | Like]
    carrier: str


BLACK = Colour((0.0,), (0.0, 0.2), (0.03, 0.15))
WHITE = Colour((40.0,), (0.0, 0.12), (0.88, 1.0))


def _bird(j: Jitter) -> list[Part]:
    bx, by = j(-0.1, 0.05), j(0.08, 0.05)
    rx, ry = j.scale(0.55, 0.12), j.scale(0.3, 0.15)
    hx, hy, hr = bx + 0.85 * rx, by - 0.95 * ry, j.scale(0.23, 0.15)
    tail_len, tail_dy, tail_w = j.scale(0.4, 0.3), j(-0.15, 0.15), j.scale(0.15, 0.3)
    legs = [ribbon([(x, by + 0.6 * ry), (x - 0.03, 0.8), (x + 0.12, 0.82)], 0.09) for x in (bx - 0.12, bx + 0.12)]
    tx = bx - 0.75 * rx
    tail = polygon(
        (tx, by - 0.12), (tx - tail_len, by + tail_dy - tail_w), (tx - tail_len, by + tail_dy + tail_w), (tx, by + 0.1)
    )
    wl = j.scale(1.0, 0.2)
    wing = polygon(
        (bx + 0.45 * rx, by - 0.25 * ry),
        (bx, by - 0.6 * ry),
        (bx - 0.6 * rx, by - 0.4 * ry),
        (bx - 1.15 * wl * rx, by - 0.05 * ry),
        (bx - 0.35 * rx, by + 0.45 * ry),
        (bx + 0.3 * rx, by + 0.3 * ry),
    )
    beak_len = j.scale(0.28, 0.25)
    beak = polygon(
        (hx + 0.75 * hr, hy - 0.45 * hr), (hx + hr + beak_len, hy + j(0.0, 0.06)), (hx + 0.75 * hr, hy + 0.45 * hr)
    )
    return [
        *[("leg", leg) for leg in legs],
        ("tail", tail),
        ("body", ellipse(bx, by, rx, ry, j(-8.0, 8.0))),
        ("wing", wing),
        ("head", circle(hx, hy, hr)),
        ("beak", beak),
        ("eye", circle(hx + 0.35 * hr, hy - 0.25 * hr, max(0.07, 0.3 * hr), 10)),
    ]


def _fish(j: Jitter) -> list[Part]:
    rx, ry = j.scale(0.72, 0.12), j.scale(0.36, 0.2)
    tl, th = j.scale(0.38, 0.25), j.scale(0.4, 0.25)
    tail = polygon((-0.8 * rx, 0.0), (-rx - tl, -th), (-rx - 0.55 * tl, 0.0), (-rx - tl, th))
    dh = j.scale(0.28, 0.3)
    dorsal = polygon((-0.45 * rx, -0.8 * ry), (-0.35 * rx - 0.15, -ry - dh), (0.3 * rx, -0.85 * ry))
    pelvic = polygon((-0.1 * rx, 0.8 * ry), (-0.3 * rx - 0.1, ry + 0.6 * dh), (0.2 * rx, 0.85 * ry))
    n = j.integer(1, 3)
    width = 0.13 * rx
    centres = np.linspace(-0.45 * rx, 0.2 * rx, n) if n > 1 else [j(-0.15 * rx, 0.1)]
    stripes = [clip_to_ellipse(c - width / 2, c + width / 2, 0.0, 0.0, rx * 0.99, ry * 0.99) for c in centres]
    return [
        ("tail fin", tail),
        ("dorsal fin", dorsal),
        ("pelvic fin", pelvic),
        ("body", ellipse(0.0, 0.0, rx, ry, 0.0, 24)),
        *[("stripe", s) for s in stripes],
        ("eye", circle(0.62 * rx, -0.2 * ry, 0.08, 10)),
    ]


def _car(j: Jitter) -> list[Part]:
    half, top, wr = j.scale(1.0, 0.06), j(-0.12, 0.04), j.scale(0.22, 0.12)
    c0, c1, ct = j(-0.55, 0.1), j(0.55, 0.1), j(-0.55, 0.08)
    t0, t1 = c0 + j(0.25, 0.1), c1 - j(0.3, 0.1)
    mid = (t0 + t1) / 2.0
    yb, yt = top - 0.02, ct + 0.07
    windows = [
        polygon((c0 + 0.12, yb), (t0 + 0.07, yt), (mid - 0.04, yt), (mid - 0.04, yb)),
        polygon((mid + 0.04, yb), (mid + 0.04, yt), (t1 - 0.07, yt), (c1 - 0.12, yb)),
    ]
    body = polygon((-half, 0.0), (-half + 0.05, top), (0.85 * half, top), (half, 0.04), (half, 0.3), (-half, 0.3))
    return [
        ("cabin", polygon((c0, top + 0.01), (t0, ct), (t1, ct), (c1, top + 0.01))),
        *[("window", w) for w in windows],
        ("body", body),
        *[("wheel", circle(x * half, 0.3, wr)) for x in (-0.58, 0.58)],
        ("headlight", rect(half - 0.1, 0.06, half, 0.14)),
    ]


def _airplane(j: Jitter) -> list[Part]:
    half, fw = j.scale(1.0, 0.05), j.scale(0.12, 0.15)
    root, chord, sweep, span = j(0.2, 0.08), j.scale(0.4, 0.15), j(0.45, 0.15), j.scale(0.95, 0.1)
    tip = 0.2 * chord + 0.08
    wing = polygon((root, -0.8 * fw), (root - sweep, -span), (root - sweep - tip, -span), (root - chord, -0.8 * fw))
    tx, tspan = -0.68 * half, j.scale(0.38, 0.15)
    tail = polygon((tx, -0.6 * fw), (tx - 0.2, -tspan), (tx - 0.32, -tspan), (-0.95 * half, -0.4 * fw))
    ex, ey = root - 0.45 * sweep - 0.05, 0.45 * span
    return [
        *[("wing", w) for w in (wing, mirror_y(wing))],
        *[("tail fin", t) for t in (tail, mirror_y(tail))],
        ("fuselage", ellipse(0.0, 0.0, half, fw, 0.0, 28)),
        *[("engine", ellipse(ex, y, 0.15, 0.065, 0.0, 12)) for y in (-ey, ey)],
        ("cockpit", ellipse(0.72 * half, 0.0, 0.13, 0.6 * fw, 0.0, 12)),
    ]


def _boat(j: Jitter) -> list[Part]:
    half, depth, deck = j.scale(1.0, 0.08), j.scale(0.36, 0.15), 0.22
    mx, mh = j(0.0, 0.1), j.scale(0.95, 0.08)
    sw, jw = j.scale(0.7, 0.15), j.scale(0.5, 0.2)
    cx, cw, ch = j(-0.65, 0.08), j.scale(0.32, 0.2), j.scale(0.2, 0.2)
    bottom = deck + depth
    hull = polygon((-half, deck - 0.03), (1.05 * half, deck - 0.1), (0.75 * half, bottom), (-0.75 * half, bottom))
    return [
        ("mast", rect(mx - 0.035, -mh, mx + 0.035, deck)),
        ("sail", polygon((mx + 0.06, -mh + 0.05), (mx + 0.06, 0.1), (mx + sw, 0.1))),
        ("sail", polygon((mx - 0.06, -0.8 * mh), (mx - 0.06, -0.08), (mx - jw, -0.08))),
        ("cabin", rect(cx, deck - ch, cx + cw, deck)),
        ("hull", hull),
    ]


def _house(j: Jitter) -> list[Part]:
    ww, bottom, top, rh, over = j.scale(0.72, 0.1), 0.9, -0.1, j.scale(0.7, 0.2), j(0.2, 0.06)
    apex = top - rh
    chx = j(0.45, 0.1) * ww
    roof_y = top - rh * (1.0 - abs(chx) / (ww + over))
    chimney = rect(chx - 0.09, roof_y - j.scale(0.3, 0.3), chx + 0.09, roof_y + 0.1)
    dx, dw, dh = j(0.0, 0.12), j.scale(0.15, 0.2), j.scale(0.5, 0.15)
    ws, wy = j.scale(0.26, 0.15), j(0.05, 0.04)
    windows = [rect(x - ws / 2, wy, x + ws / 2, wy + ws) for x in (-0.48 * ww, 0.48 * ww)]
    return [
        ("chimney", chimney),
        ("roof", polygon((-ww - over, top), (ww + over, top), (0.0, apex))),
        ("wall", rect(-ww, top, ww, bottom)),
        ("door", rect(dx - dw, bottom - dh, dx + dw, bottom)),
        *[("window", w) for w in windows],
    ]


def _tree(j: Jitter) -> list[Part]:
    tw, cy, cr = j.scale(0.12, 0.2), j(-0.4, 0.06), j.scale(0.48, 0.12)
    blobs = [
        circle(j(0.0, 0.05), cy, cr, 20),
        circle(j(-0.38, 0.06), cy + j(0.2, 0.06), j.scale(0.34, 0.15)),
        circle(j(0.38, 0.06), cy + j(0.2, 0.06), j.scale(0.34, 0.15)),
        circle(j(0.0, 0.08), cy - j(0.38, 0.06), j.scale(0.32, 0.15)),
    ]
    by0, by1 = j(0.4, 0.05), j(0.28, 0.05)
    branches = [
        ribbon([(0.0, by0), (-0.3, by0 - 0.18), (j(-0.55, 0.08), by0 - j(0.38, 0.08))], [0.1, 0.08, 0.06]),
        ribbon([(0.0, by1), (0.3, by1 - 0.18), (j(0.55, 0.08), by1 - j(0.38, 0.08))], [0.1, 0.08, 0.06]),
    ]
    return [
        ("trunk", polygon((-tw - 0.03, 1.0), (tw + 0.03, 1.0), (0.7 * tw, cy), (-0.7 * tw, cy))),
        *[("branch", b) for b in branches],
        *[("crown", b) for b in blobs],
    ]


def _flower(j: Jitter) -> list[Part]:
    cx, cy, n = j(0.0, 0.05), j(-0.45, 0.05), j.integer(5, 8)
    pr, pw, cr = j.scale(0.27, 0.12), j.scale(0.11, 0.2), j.scale(0.14, 0.15)
    a0 = j.angle()
    angles = a0 + 360.0 / n * np.arange(n)
    petals = [
        ellipse(cx + pr * np.cos(np.deg2rad(a)), cy + pr * np.sin(np.deg2rad(a)), 0.23, pw, a, 14) for a in angles
    ]
    bend = j(0.06, 0.06)
    stem = ribbon([(0.0, 1.0), (bend, 0.35), (cx, cy)], 0.08)
    ly0, ly1 = j(0.55, 0.08), j(0.35, 0.08)
    leaves = [ellipse(-0.2, ly0, 0.22, 0.08, j(-30.0, 10.0), 14), ellipse(0.24, ly1, 0.22, 0.08, j(30.0, 10.0), 14)]
    return [
        ("stem", stem),
        *[("leaf", lf) for lf in leaves],
        *[("petal", p) for p in petals],
        ("center", circle(cx, cy, cr)),
    ]


def _butterfly(j: Jitter) -> list[Part]:
    fx, fy, frx, fry = j(-0.48, 0.05), j(-0.3, 0.05), j.scale(0.5, 0.1), j.scale(0.33, 0.12)
    hx, hy, hrx, hry = j(-0.36, 0.05), j(0.33, 0.05), j.scale(0.37, 0.12), j.scale(0.3, 0.12)
    fa, ha = j(-28.0, 8.0), j(35.0, 8.0)
    fore, hind = ellipse(fx, fy, frx, fry, fa, 20), ellipse(hx, hy, hrx, hry, ha, 20)
    spots = [circle(fx - 0.1, fy - 0.06, j.scale(0.1, 0.2), 10), circle(hx - 0.05, hy + 0.04, j.scale(0.08, 0.2), 10)]
    ant = ribbon([(-0.03, -0.42), (-0.15, -0.72), (j(-0.3, 0.06), j(-0.95, 0.05))], 0.06)
    knob = circle(float(ant[2, 0]) - 0.03, float(ant[2, 1]), 0.06, 8)
    body = ellipse(0.0, 0.05, 0.08, j.scale(0.52, 0.08), 0.0, 16)
    return [
        *[("wing", w) for w in (fore, hind, mirror_x(fore), mirror_x(hind))],
        *[("spot", s) for s in (*spots, *map(mirror_x, spots))],
        ("body", body),
        *[("antenna", a) for a in (ant, mirror_x(ant), knob, mirror_x(knob))],
    ]


def _cat(j: Jitter) -> list[Part]:
    bx, by, rx, ry = j(-0.15, 0.04), j(0.08, 0.04), j.scale(0.55, 0.1), j.scale(0.26, 0.12)
    hx, hy, hr = bx + rx + j(0.05, 0.04), by - ry - j(0.05, 0.05), j.scale(0.26, 0.12)
    curl = j(0.0, 0.15)
    tail = ribbon([(bx - 0.85 * rx, by - 0.05), (-0.9, by - 0.2), (-0.98 + curl, -0.5), (-0.85 + curl, -0.78)], 0.1)
    feet = (bx - 0.7 * rx, bx - 0.35 * rx, bx + 0.4 * rx, bx + 0.72 * rx)
    legs = [rect(x - 0.05, by + 0.2 * ry, x + 0.05, 0.8) for x in feet]
    eh = j.scale(0.28, 0.2)
    ears = [
        polygon((hx - 0.85 * hr, hy - 0.3 * hr), (hx - 0.65 * hr, hy - hr - eh), (hx - 0.05 * hr, hy - 0.85 * hr)),
        polygon((hx + 0.05 * hr, hy - 0.85 * hr), (hx + 0.65 * hr, hy - hr - eh), (hx + 0.85 * hr, hy - 0.3 * hr)),
    ]
    eyes = [circle(hx + dx * hr, hy - 0.15 * hr, 0.065, 10) for dx in (-0.35, 0.4)]
    wx, wy = hx + 0.55 * hr, hy + 0.35 * hr
    whiskers = [ribbon([(wx, wy), (wx + 0.4, wy + dy)], 0.045) for dy in (-0.08, 0.06)]
    return [
        ("tail", tail),
        *[("leg", leg) for leg in legs],
        ("body", ellipse(bx, by, rx, ry, 0.0, 24)),
        *[("ear", e) for e in ears],
        ("head", circle(hx, hy, hr, 20)),
        *[("eye", e) for e in eyes],
        *[("whisker", w) for w in whiskers],
    ]


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        Category(
            "bird",
            ("leg", "tail", "body", "wing", "head", "beak", "eye"),
            _bird,
            {
                "leg": Colour((30.0,), (0.5, 0.8), (0.5, 0.75)),
                "tail": Like("wing"),
                "body": Colour((0.0, 50.0, 215.0, 25.0), (0.55, 0.9), (0.55, 0.9)),
                "wing": Like("body", 0.65),
                "head": Like("body", 1.1),
                "beak": Colour((42.0,), (0.8, 1.0), (0.85, 1.0)),
                "eye": BLACK,
            },
            "body",
        ),
        Category(
            "fish",
            ("tail fin", "dorsal fin", "pelvic fin", "body", "stripe", "eye"),
            _fish,
            {
                "tail fin": Like("body", 0.7),
                "dorsal fin": Like("body", 0.7),
                "pelvic fin": Like("body", 0.7),
                "body": Colour((25.0, 50.0, 185.0, 350.0), (0.7, 0.95), (0.75, 1.0)),
                "stripe": WHITE,
                "eye": BLACK,
            },
            "body",
        ),
        Category(
            "car",
            ("cabin", "window", "body", "wheel", "headlight"),
            _car,
            {
                "cabin": Like("body", 0.9),
                "window": Colour((200.0,), (0.15, 0.35), (0.75, 0.95)),
                "body": Colour((0.0, 220.0, 50.0, 130.0), (0.65, 0.95), (0.55, 0.9)),
                "wheel": BLACK,
                "headlight": Colour((55.0,), (0.3, 0.6), (0.95, 1.0)),
            },
            "body",
        ),
        Category(
            "airplane",
            ("wing", "tail fin", "fuselage", "engine", "cockpit"),
            _airplane,
            {
                "wing": Like("fuselage", 0.8),
                "tail fin": Colour((0.0, 220.0), (0.7, 0.95), (0.55, 0.85)),
                "fuselage": Colour((210.0,), (0.0, 0.1), (0.8, 0.97)),
                "engine": Colour((210.0,), (0.0, 0.1), (0.35, 0.5)),
                "cockpit": Colour((220.0,), (0.5, 0.8), (0.2, 0.4)),
            },
            "fuselage",
        ),
        Category(
            "boat",
            ("mast", "sail", "cabin", "hull"),
            _boat,
            {
                "mast": Colour((28.0,), (0.55, 0.75), (0.3, 0.45)),
                "sail": WHITE,
                "cabin": Colour((35.0,), (0.2, 0.4), (0.75, 0.9)),
                "hull": Colour((0.0, 220.0, 25.0), (0.6, 0.9), (0.35, 0.65)),
            },
            "hull",
        ),
        Category(
            "house",
            ("chimney", "roof", "wall", "door", "window"),
            _house,
            {
                "chimney": Colour((10.0,), (0.55, 0.75), (0.45, 0.6)),
                "roof": Colour((5.0, 15.0), (0.6, 0.85), (0.4, 0.65)),
                "wall": Colour((40.0, 25.0), (0.12, 0.4), (0.75, 0.95)),
                "door": Colour((25.0,), (0.55, 0.75), (0.3, 0.45)),
                "window": Colour((200.0,), (0.3, 0.5), (0.85, 1.0)),
            },
            "wall",
        ),
        Category(
            "tree",
            ("trunk", "branch", "crown"),
            _tree,
            {
                "trunk": Colour((25.0,), (0.55, 0.75), (0.3, 0.45)),
                "branch": Like("trunk", 1.0),
                "crown": Colour((100.0, 125.0, 80.0), (0.6, 0.9), (0.4, 0.7)),
            },
            "crown",
        ),
        Category(
            "flower",
            ("stem", "leaf", "petal", "center"),
            _flower,
            {
                "stem": Colour((110.0,), (0.6, 0.8), (0.4, 0.55)),
                "leaf": Colour((100.0,), (0.6, 0.85), (0.5, 0.7)),
                "petal": Colour((0.0, 300.0, 52.0, 275.0, 20.0), (0.6, 0.95), (0.85, 1.0)),
                "center": Colour((45.0, 30.0), (0.75, 1.0), (0.55, 0.85)),
            },
            "petal",
        ),
        Category(
            "butterfly",
            ("wing", "spot", "body", "antenna"),
            _butterfly,
            {
                "wing": Colour((28.0, 210.0, 55.0, 300.0), (0.7, 0.95), (0.7, 0.95)),
                "spot": Colour((0.0,), (0.0, 0.15), (0.05, 0.95)),
                "body": Colour((30.0,), (0.3, 0.5), (0.1, 0.2)),
                "antenna": Like("body", 1.0),
            },
            "wing",
        ),
        Category(
            "cat",
            ("tail", "leg", "body", "ear", "head", "eye", "whisker"),
            _cat,
            {
                "tail": Like("body", 0.9),
                "leg": Like("body", 0.9),
                "body": Colour((28.0, 0.0, 35.0), (0.0, 0.7), (0.2, 0.9)),
                "ear": Like("body", 0.85),
                "head": Like("body", 1.05),
                "eye": Colour((75.0,), (0.8, 1.0), (0.75, 0.95)),
                "whisker": WHITE,
            },
            "body",
        ),
    ]
}


def sample_palette(
    category: Category, rng: np.random.Generator, hue_jitter: float, value_jitter: float
) -> dict[str, tuple[float, float, float]]:
    """One RGB colour in [0, 1] per part: a class-typical hue, saturation and value, jittered."""
    k = len(category.parts)
    u = rng.random((k, 4)).tolist()
    z = rng.standard_normal(k).tolist()
    hsv: dict[str, tuple[float, float, float]] = {}

    def resolve(name: str) -> tuple[float, float, float]:
        if name not in hsv:
            rule = category.colours[name]
            if isinstance(rule, Like):
                h, s, v = resolve(rule.part)
                hsv[name] = (h, s, min(v * rule.value, 1.0))
            else:
                r, n = u[category.parts.index(name)], z[category.parts.index(name)]
                h = rule.hues[min(int(r[0] * len(rule.hues)), len(rule.hues) - 1)] + hue_jitter * n
                s = rule.sat[0] + (rule.sat[1] - rule.sat[0]) * r[1]
                v = (rule.val[0] + (rule.val[1] - rule.val[0]) * r[2]) * (1.0 + value_jitter * (2.0 * r[3] - 1.0))
                hsv[name] = ((h / 360.0) % 1.0, s, min(max(v, 0.0), 1.0))
        return hsv[name]

    return {name: colorsys.hsv_to_rgb(*resolve(name)) for name in category.parts}


def _pose(
    points: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale_range: tuple[float, float],
    max_rotation: float,
    flip: bool,
) -> np.ndarray:
    """Flip, rotate, scale (longest bounding-box side = a fraction of the image) and place the object in frame."""
    u = rng.random(5)
    a = math.radians(max_rotation * (2.0 * u[0] - 1.0))
    c, s = math.cos(a), math.sin(a)
    mirror = -1.0 if flip and u[1] < 0.5 else 1.0
    points = points @ np.array([[mirror * c, mirror * s], [-s, c]])
    lo, hi = points.min(axis=0), points.max(axis=0)
    scale = (scale_range[0] + (scale_range[1] - scale_range[0]) * u[2]) * (size - 2) / float((hi - lo).max())
    free = np.maximum(size - 2.0 - (hi - lo) * scale, 0.0)
    return (points - lo) * scale + (1.0 + u[3:] * free)


def draw_labels(
    category: Category,
    part_ids: Mapping[str, int],
    rng: np.random.Generator,
    size: int,
    *,
    scale_range: tuple[float, float],
    max_rotation: float,
    flip: bool,
    shape_jitter: float,
) -> np.ndarray:
    """Rasterise one randomly posed, jittered object into a (size, size) uint8 image of part ids (0: background)."""
    parts = category.build(Jitter(rng, shape_jitter))
    points = _pose(np.concatenate([p for _, p in parts]), rng, size, scale_range, max_rotation, flip)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    flat = points.ravel().tolist()
    start = 0
    for name, poly in parts:
        end = start + 2 * len(poly)
        draw.polygon(flat[start:end], fill=part_ids[name])
        start = end
    return np.asarray(image).copy()


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """A fixed table of standard normal numbers: per-sample pixel noise is a random slice of it (fast)."""
    return np.random.default_rng(20240601).standard_normal(1 << 20, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-1, 1] along the longer side, centred."""
    r = max(h, w) / 2.0
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return (x - w / 2.0) / r, (y - h / 2.0) / r


def paint(
    background: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float,
    shading: float,
    outline: float,
) -> np.ndarray:
    """Paint the object of a label image over a (H, W, 3) uint8 background; background pixels stay untouched.

    palette: (num_ids, 3) float RGB in [0, 1] by part id. Each object pixel gets its part's colour times a linear
    light gradient (strength `shading`), darkened by `outline` where a 4-neighbour has a lower id (the object's
    silhouette and the edge of a part drawn over another: ids follow z-order), plus Gaussian noise of std `noise`.
    """
    lower = np.zeros(labels.shape, dtype=bool)
    lower[1:] |= labels[:-1] < labels[1:]
    lower[:-1] |= labels[1:] < labels[:-1]
    lower[:, 1:] |= labels[:, :-1] < labels[:, 1:]
    lower[:, :-1] |= labels[:, 1:] < labels[:, :-1]
    idx = np.flatnonzero(labels)
    gx, gy = _grid(*labels.shape)
    d = rng.standard_normal(2)
    d *= shading / (math.hypot(d[0], d[1]) + 1e-12)
    light = gx.take(idx) * np.float32(d[0]) + gy.take(idx) * np.float32(d[1]) + np.float32(1.0)
    light[lower.ravel().take(idx)] *= np.float32(1.0 - outline)
    table, count = _noise_table(), 4 * len(idx)
    if count < len(table):
        start = int(rng.integers(0, len(table) - count))
        z = table[start : start + count].reshape(-1, 4) * np.float32(noise * 255.0)
    else:  # a huge image: draw fresh noise
        z = rng.standard_normal((len(idx), 4), dtype=np.float32) * np.float32(noise * 255.0)
    colour = palette.take(labels.ravel().take(idx), axis=0) * (light * np.float32(255.0))[:, None]
    colour += z[:, :1] + z[:, 1:] * np.float32(0.5) + np.float32(0.5)
    out = background.copy()
    out.reshape(-1, 3)[idx] = np.minimum(np.maximum(colour, 0.0, out=colour), 255.0, out=colour).astype(np.uint8)
    return out
