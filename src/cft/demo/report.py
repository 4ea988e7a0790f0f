"""The demo's report: per-class figures, accuracy bars and a markdown summary with the spread over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cft.io import atomic_path, write_bytes_atomic
from cft.visualize import colormap

SCALE = 2
SPLIT_COLORS = {"test-id": (70, 130, 180), "test-ood": (220, 120, 40), "test-flipped": (150, 60, 150)}


def _save(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _tile(a: np.ndarray, scale: int = SCALE) -> Image.Image:
    img = Image.fromarray(a)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


FIGURE_VARIANTS = ("original", "cft", "cft-parts", "object-masks", "no-guidance")


def class_grid(world, tests, models, concepts, out: Path) -> Path:
    """Rows: one test-ood image per class. Columns: image | concept mask | cue | the relevance of each of
    original, cft, cft-parts, object-masks and no-guidance (those that ran) on that same image."""
    t = tests["test-ood"]
    idx = [int(np.flatnonzero(t["labels"][: len(t["concept_masks"])] == c)[0]) for c in range(len(world.classes))]
    x = t["images"][idx]
    from cft.world.model import relevance_maps

    variants = [v for v in FIGURE_VARIANTS if v in models]
    maps = {v: relevance_maps(models[v], x) for v in variants}
    masks = {"concepts": t["concept_masks"][idx], "cue": t["cue_masks"][idx]}
    rows = [world.classes[t["labels"][i]] for i in idx]
    return relevance_grid(x.permute(0, 2, 3, 1).numpy(), rows, masks, maps, out / "figures" / "relevance_grid.png")


def relevance_grid(
    images: np.ndarray,
    rows: list[str],
    masks: dict[str, np.ndarray],
    maps: dict[str, np.ndarray],
    path: Path,
    scale: int = SCALE,
) -> Path:
    """A figure: one row per image (labelled `rows`), columns image | each mask | each model's relevance map.
    images (N, H, W, 3) uint8; masks and maps (N, H, W), maps in [0, 1]."""
    cell = images.shape[1] * scale
    titles = ("image", *masks, *maps)
    canvas = Image.new("RGB", (len(titles) * (cell + 4) + 90, len(rows) * (cell + 4) + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):
        draw.text((90 + j * (cell + 4), 2), title, fill="black")
    white = np.array([255, 255, 255])
    for r, row in enumerate(rows):
        y = 18 + r * (cell + 4)
        draw.text((2, y + cell // 2 - 5), row, fill="black")
        panels = [
            images[r],
            *((m[r][..., None] * white).astype(np.uint8) for m in masks.values()),
            *(colormap(m[r]) for m in maps.values()),
        ]
        for j, p in enumerate(panels):
            canvas.paste(_tile(p, scale), (90 + j * (cell + 4), y))
    _save(canvas, path)
    return path


def accuracy_bars(metrics: dict[str, Any], std: dict[str, Any], out: Path) -> Path:
    """Top-1 per variant and split, with the standard deviation over seeds as a whisker."""
    variants = list(metrics)
    splits = list(SPLIT_COLORS)
    bar, gap, height = 22, 30, 220
    width = 60 + len(variants) * (len(splits) * bar + gap)
    canvas = Image.new("RGB", (width, height + 70), "white")
    draw = ImageDraw.Draw(canvas)
    base = height + 10
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = base - v * height
        draw.line((40, y, width - 10, y), fill=(225, 225, 225))
        draw.text((5, y - 6), f"{v:.2f}", fill="black")
    for i, variant in enumerate(variants):
        x0 = 50 + i * (len(splits) * bar + gap)
        for j, split in enumerate(splits):
            value, spread = metrics[variant][split]["top1"], std[variant][split]["top1"]
            x = x0 + j * bar
            draw.rectangle((x, base - value * height, x + bar - 4, base), fill=SPLIT_COLORS[split])
            mid = x + (bar - 4) / 2
            draw.line((mid, base - (value + spread) * height, mid, base - (value - spread) * height), fill="black")
        draw.text((x0, base + 6), variant, fill="black")
    for j, split in enumerate(splits):
        draw.rectangle((50 + j * 110, height + 45, 60 + j * 110, height + 55), fill=SPLIT_COLORS[split])
        draw.text((64 + j * 110, height + 44), split, fill="black")
    path = out / "figures" / "accuracy.png"
    _save(canvas, path)
    return path


def _fmt(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def format_interval(interval: dict[str, float], sign: bool = False) -> str:
    """A mean and its 95 % interval half-width in points (`sign`: with +/-)."""
    mean = f"{100 * interval['mean']:+.1f}" if sign else f"{100 * interval['mean']:.1f}"
    half = interval["half_width"]
    return mean if half != half else f"{mean} ± {100 * half:.1f}"


def paired_lines(paired: dict[str, dict[str, dict[str, float]]], splits: tuple[str, ...]) -> list[str]:
    """The table of paired differences: one row per pair, one column per split."""
    lines = ["| pair | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for pair, d in paired.items():
        lines.append(f"| {pair} | " + " | ".join(format_interval(d[sp], sign=True) for sp in splits) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    m, s = results["metrics"], results["std"]
    seeds = results["seeds"]
    lines = [
        "# cft demo report",
        "",
        f"Original model: {results['original_model']}. Seeds (class subsets and fine-tuning images): {seeds}. "
        "Figures in percent: top-1 as the mean over seeds ± the half-width of its 95 % t interval; other figures "
        "as mean ± standard deviation over seeds.",
        "",
        "## Top-1 and worst-group accuracy",
        "",
        "| variant | " + " | ".join(f"{sp} top-1 | {sp} worst group" for sp in SPLIT_COLORS) + " |",
        "|---|" + "---|---|" * len(SPLIT_COLORS),
    ]
    for v in m:
        cells = [
            f"{format_interval(results['interval'][v][sp])} | {_fmt(m[v][sp]['worst_group'], s[v][sp]['worst_group'])}"
            for sp in SPLIT_COLORS
        ]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Paired differences",
        "",
        "Top-1 of the first variant minus the second, in points, on the same images and seeds: the mean over seeds "
        "± the half-width of the paired 95 % t interval over seeds (a difference whose interval excludes 0 is "
        "significant at 5 %).",
        "",
        *paired_lines(results["paired"], tuple(SPLIT_COLORS)),
    ]
    lines += ["", "## Seen vs unseen classes (test-ood top-1)", "", "| variant | seen | unseen |", "|---|---|---|"]
    for v in m:
        o, so = m[v]["test-ood"], s[v]["test-ood"]
        lines.append(f"| {v} | {_fmt(o['seen_top1'], so['seen_top1'])} | {_fmt(o['unseen_top1'], so['unseen_top1'])} |")
    lines += _cue_section(results)
    lines += [
        "",
        "## Relevance on test-ood",
        "",
        "Share of relevance on the cue, on the concept parts (relevance mass accuracy) and on the object; the share "
        "of maps whose peak (the top token) lies on the cue and on the concept parts; relevance rank accuracy (the "
        "share of the |mask| most relevant pixels inside the concept mask); pixel accuracy, mIoU and mAP of the map "
        "binarised at its mean, against the object and the concept masks.",
        "",
        "| variant | on cue | on concepts | peak on cue | peak on concepts | concept rank acc. | on object | "
        "object PA | object mIoU | object mAP | concept PA | concept mIoU | concept mAP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in m:
        o = m[v]["test-ood"]
        ro, rc = o["relevance_object"], o["relevance_concepts"]
        cells = [
            o["relevance_share_cue"],
            o["relevance_share_concepts"],
            o.get("relevance_peak_cue", float("nan")),
            o.get("relevance_peak_concepts", float("nan")),
            o["relevance_rank_concepts"],
            o["relevance_share_object"],
            ro["pixel_accuracy"],
            ro["miou"],
            ro["map"],
            rc["pixel_accuracy"],
            rc["miou"],
            rc["map"],
        ]
        lines.append(f"| {v} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |")
    ranked = sorted(m, key=lambda v: -m[v]["test-ood"]["top1"])
    lines += [
        "",
        "## Ranking by test-ood top-1",
        "",
        "| rank | variant | test-ood top-1 | test-id top-1 |",
        "|---|---|---|---|",
    ]
    for i, v in enumerate(ranked, 1):
        lines.append(
            f"| {i} | {v} | {_fmt(m[v]['test-ood']['top1'], s[v]['test-ood']['top1'])} | "
            f"{_fmt(m[v]['test-id']['top1'], s[v]['test-id']['top1'])} |"
        )
    summary = [
        f"{pair}: test-ood {format_interval(d['test-ood'], True)} points, test-id {format_interval(d['test-id'], True)}"
        for pair, d in results["paired"].items()
        if pair.startswith(("cft - ", "cft-parts - "))
    ]
    lines += [
        "",
        "## Summary",
        "",
        "; ".join(summary) + " (paired 95 % t intervals over seeds).",
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in results["timings"].items()),
        "",
        "![accuracy](figures/accuracy.png)",
        "",
        "![relevance](figures/relevance_grid.png)",
        "",
    ]
    return "\n".join(lines)


def _cue_section(results: dict[str, Any]) -> list[str]:
    """The premise check of the original model and, per variant, how much the cue still decides (test-ood)."""
    d, m, s = results.get("diagnostics", {}), results["metrics"], results["std"]
    if "oracle" not in d:
        return []
    p, t = d["premise"], d["premise"]["thresholds"]
    o = m["original"]
    lines = [
        "",
        "## The premise: does the original model know the objects and lean on the cue?",
        "",
        f"- test-id {100 * o['test-id']['top1']:.1f} % (needs >= {100 * t['test_id']:.0f}), test-ood "
        f"{100 * o['test-ood']['top1']:.1f} % (needs <= {100 * t['test_ood']:.0f}): "
        f"{'leans on the cue' if p['leans_on_cue'] else 'does NOT lean on the cue enough'};",
        f"- oracle (test-ood with the cue neutralised) {100 * d['oracle']['top1']:.1f} % (needs >= "
        f"{100 * t['oracle']:.0f} and at most {100 * t['oracle_gap']:.0f} points below test-id): "
        f"{'strong object features' if p['object_features'] else 'object features too WEAK'}; attention oracle "
        f"(the cue's patches hidden from every attention) {100 * d['attention_oracle']['top1']:.1f} %.",
        "",
        "## How much the cue decides (test-ood)",
        "",
        "| variant | follows a conflicting cue | top-1, cue neutralised | top-1, cue's patches hidden |",
        "|---|---|---|---|",
    ]
    for v in m:
        ood, sd = m[v]["test-ood"], s[v]["test-ood"]
        lines.append(
            f"| {v} | {_fmt(ood['follow_cue'], sd['follow_cue'])} | {_fmt(ood['oracle_top1'], sd['oracle_top1'])} | "
            f"{_fmt(ood['attention_oracle_top1'], sd['attention_oracle_top1'])} |"
        )
    return lines


def write_report(results, out: Path, world, tests, models, concepts) -> None:
    accuracy_bars(results["metrics"], results["std"], out)
    if "cft" in models:
        class_grid(world, tests, models, concepts, out)
    write_bytes_atomic(out / "report.md", markdown(results).encode())
