"""Paired comparison of two results files (`cft compare`): variant A against variant B, run by run on the same
images, with the paired t interval of the per-run differences for each evaluation set.

Runs pair by seed when both files come from `cft run` (runs `seed0`, `seed1`, ...; the seeds must be the same), else
by position (`cft evaluate` lists its checkpoints in the order given; the counts must be the same). A pair must have
scored each evaluation set on as many images (`n`): a different count means different images, and the difference
would not be paired.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cft.errors import CftError
from cft.evaluate.metrics import is_number, t_interval


@dataclass
class ResultsFile:
    """The per-run scores of a results file: runs[label][eval set][metric]."""

    path: Path
    runs: dict[str, dict[str, dict[str, Any]]]
    by_seed: bool  # a `cft run` file: its runs are seeds


def read_results(path: str | Path) -> ResultsFile:
    """A `cft evaluate` OUT or a `cft run` results.json (or its folder), of any results format."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise CftError(f"{path} does not exist (expected a results file of cft evaluate, or a cft run folder)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CftError(f"{path} is not a JSON results file ({err})") from None
    if isinstance(data, dict) and "per_seed" in data and "paired" in data:
        raise CftError(
            f"{path} is a cft demo's results: its variants are already compared, paired, in its 'paired' field and "
            "report.md"
        )
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict) or not data["runs"]:
        raise CftError(f"{path} holds no runs (expected the results of cft evaluate or cft run)")
    if data.get("partial"):
        raise CftError(f"{path} is partial (cft evaluate stopped before it finished): rerun it, then compare")
    runs = data["runs"]
    if not all(isinstance(r, dict) and all(isinstance(s, dict) for s in r.values()) for r in runs.values()):
        raise CftError(f"{path}: runs must map each run to its evaluation sets' scores")
    return ResultsFile(path, runs, by_seed="seeds" in data)


def pair_runs(a: ResultsFile, b: ResultsFile) -> list[tuple[str, str]]:
    """(run of A, run of B) pairs: by seed for two `cft run` files, else by position."""
    if a.by_seed and b.by_seed:
        only_a, only_b = sorted(set(a.runs) - set(b.runs)), sorted(set(b.runs) - set(a.runs))
        if only_a or only_b:
            raise CftError(
                f"the two runs have different seeds (only in {a.path}: {', '.join(only_a) or 'none'}; only in "
                f"{b.path}: {', '.join(only_b) or 'none'}): a paired comparison needs the same seeds"
            )
        return [(seed, seed) for seed in a.runs]
    if len(a.runs) != len(b.runs):
        raise CftError(
            f"{a.path} has {len(a.runs)} run(s) and {b.path} {len(b.runs)}: runs pair by position (the order of "
            "--checkpoint), so both need as many"
        )
    pairs = list(zip(a.runs, b.runs, strict=True))
    for ra, rb in pairs:  # checkpoints named by seed (runs/cft/seed0/...): a pair must share its seed
        sa, sb = _seed_in(ra), _seed_in(rb)
        if sa is not None and sb is not None and sa != sb:
            raise CftError(
                f"runs pair by position, which puts {ra} (seed {sa}) with {rb} (seed {sb}): give cft evaluate the "
                "checkpoints of both variants in the same seed order"
            )
    return pairs


def _seed_in(label: str) -> str | None:
    """The seed a checkpoint's path names (a `seed<k>` folder or file name part), if it names one."""
    found = set(re.findall(r"(?:^|[/_.-])seed[_-]?(\d+)(?=$|[/_.-])", label))
    return found.pop() if len(found) == 1 else None


def compare_results(a: ResultsFile, b: ResultsFile, metric: str = "top1", level: float = 0.95) -> dict[str, Any]:
    """For each evaluation set both files scored: A's and B's `metric` (mean and t interval over runs) and the
    paired difference A - B (mean, half-width at `level`, per run). Sets that cannot be compared are listed under
    `skipped` with the reason."""
    if not 0.0 < level < 1.0:
        raise CftError(f"--level must be in (0, 1), got {level}")
    pairs = pair_runs(a, b)
    names = list(dict.fromkeys(name for run in (*a.runs.values(), *b.runs.values()) for name in run))
    compared: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in names:
        reason = _not_comparable(a, b, pairs, name, metric)
        if reason:
            skipped[name] = reason
            continue
        va = [float(a.runs[ra][name][metric]) for ra, _ in pairs]
        vb = [float(b.runs[rb][name][metric]) for _, rb in pairs]
        diffs = [x - y for x, y in zip(va, vb, strict=True)]
        compared[name] = {
            "a": t_interval(va, level),
            "b": t_interval(vb, level),
            "difference": {**t_interval(diffs, level), "per_run": diffs},
            "n": a.runs[pairs[0][0]][name].get("n"),
        }
    if not compared:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise CftError(f"nothing to compare in {a.path} and {b.path} ({why or 'no evaluation sets'})")
    return {
        "a": str(a.path),
        "b": str(b.path),
        "metric": metric,
        "level": level,
        "pairs": [list(pair) for pair in pairs],
        "training_images_differ": _training_images_differ(a, b, pairs),
        "eval_sets": compared,
        "skipped": skipped,
    }


def _training_images_differ(a: ResultsFile, b: ResultsFile, pairs: list[tuple[str, str]]) -> list[str] | None:
    """For two `cft run` folders: the seeds whose few-shot images (seed<k>/images.txt) differ between A and B (a
    paired comparison trains both variants on the same images); None where the files do not tell."""
    if not (a.by_seed and b.by_seed):
        return None
    differ = []
    for seed, _ in pairs:
        lists = [r.path.parent / seed / "images.txt" for r in (a, b)]
        if not all(f.is_file() for f in lists):
            return None
        if lists[0].read_text().split() != lists[1].read_text().split():
            differ.append(seed)
    return differ


def _not_comparable(a: ResultsFile, b: ResultsFile, pairs: list[tuple[str, str]], name: str, metric: str) -> str:
    """Why evaluation set `name` cannot be compared on `metric` ('' when it can)."""
    for results, side in ((a, 0), (b, 1)):
        for pair in pairs:
            scores = results.runs[pair[side]].get(name)
            if scores is None:
                return f"not scored in run {pair[side]} of {results.path}"
            if metric not in scores:
                known = ", ".join(k for k, v in scores.items() if is_number(v)) or "none"
                return f"no {metric!r} in run {pair[side]} of {results.path} (its numbers: {known})"
            value = scores[metric]
            if not is_number(value) or not math.isfinite(value):
                return f"{metric} is undefined ({value}) in run {pair[side]} of {results.path}"
    for ra, rb in pairs:
        na, nb = a.runs[ra][name].get("n"), b.runs[rb][name].get("n")
        if na != nb:
            raise CftError(
                f"{name}: run {ra} of {a.path} scored {na} images and run {rb} of {b.path} {nb}: not the same "
                "images, so not a paired comparison (evaluate both on the same evaluation set)"
            )
    return ""


def comparison_table(result: Mapping[str, Any]) -> str:
    """The comparison as a markdown table, in points (metrics are fractions)."""
    level = f"{100 * result['level']:g} %"
    lines = [
        f"{result['metric']} in points: A = {result['a']}, B = {result['b']}; mean over {len(result['pairs'])} "
        f"paired run(s) ± the half-width of the {level} t interval",
        "",
        "| evaluation set | n | A | B | A - B (paired) |",
        "|---|---|---|---|---|",
    ]
    for name, cell in result["eval_sets"].items():
        row = [_points(cell["a"]), _points(cell["b"]), _points(cell["difference"], sign=True)]
        lines.append(f"| {name} | {cell['n'] if cell['n'] is not None else ''} | " + " | ".join(row) + " |")
    for name, reason in result["skipped"].items():
        lines.append(f"\nskipped {name}: {reason}")
    if result.get("training_images_differ"):
        lines.append(
            f"\nnote: A and B fine-tuned on other images in {', '.join(result['training_images_differ'])} "
            "(seed<k>/images.txt differ): the test images are paired, the training images are not"
        )
    return "\n".join(lines) + "\n"


def _points(interval: Mapping[str, Any], sign: bool = False) -> str:
    mean = f"{100 * interval['mean']:{'+' if sign else ''}.2f}"
    half = interval["half_width"]
    return mean if half is None or half != half else f"{mean} ± {100 * half:.2f}"
