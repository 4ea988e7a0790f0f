"""`cft evaluate` behind the verb: every checkpoint on every evaluation set, aggregated, written as JSON, a markdown
table and a per-class CSV."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cft.distributed import Distributed
from cft.errors import CftError
from cft.evaluate.scoring import (
    RESULTS_FORMAT,
    EvalOptions,
    NonFiniteOutput,
    aggregate,
    csv_text,
    eval_transform,
    markdown_table,
    per_class_rows,
    predict_topk,
    score,
    segmentation_scores,
)
from cft.io import check_output_file, write_bytes_atomic, write_json_atomic


@dataclass
class EvalSpec:
    model: str
    eval_sets: dict[str, str]  # name -> root, as given to --eval-set NAME=PATH
    checkpoints: list[str] = field(default_factory=list)  # none: the model as created (pretrained or random)
    pretrained: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = None  # a run's split.json: seen_classes (and unseen_classes) as class indices
    options: EvalOptions = field(default_factory=EvalOptions)


def parse_eval_set_args(items: Sequence[str]) -> dict[str, str]:
    """["imagenet-a=/data/imagenet-a", ...] to {name: path}; a name given twice is an error."""
    from cft.data.evalsets import eval_set_names

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not name or not path.strip():
            raise CftError(f"--eval-set {item!r} must look like NAME=PATH (names: {', '.join(eval_set_names())})")
        if name in out:
            raise CftError(f"--eval-set {name} given twice")
        out[name] = path.strip()
    if not out:
        raise CftError(f"give at least one --eval-set NAME=PATH (names: {', '.join(eval_set_names())})")
    return out


def read_seen_classes(path: str | Path) -> set[int]:
    """The seen classes of a run's class split (split.json as `cft finetune` writes it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        ids = data["seen_classes"]
    except FileNotFoundError:
        raise CftError(f"class split {path}: no such file") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CftError(f"class split {path}: expected JSON with a 'seen_classes' list of class indices ({e})") from None
    bad = [c for c in ids if isinstance(c, bool) or not isinstance(c, int) or c < 0] if isinstance(ids, list) else [ids]
    if bad or not ids:
        raise CftError(
            f"class split {path}: seen_classes must be a non-empty list of class indices >= 0, got {bad[:3]}"
        )
    return set(ids)


def check_split_classes(seen: set[int], num_classes: int | None, path: str | Path) -> None:
    """Every seen class of the split must be an output of the model."""
    if num_classes and max(seen) >= num_classes:
        raise CftError(
            f"class split {path} names class {max(seen)} but the model has {num_classes} outputs (0..{num_classes - 1})"
        )


def _run_label(checkpoint: str | None, spec: EvalSpec) -> str:
    if checkpoint is None:
        return "pretrained" if spec.pretrained else "random-init"
    return str(checkpoint)


def evaluate_checkpoints(spec: EvalSpec, out: str | Path, log=print) -> dict[str, Any]:
    """Evaluate every checkpoint on every evaluation set; write OUT (JSON), OUT's .md and _per_class.csv siblings."""
    from cft.data.classes import imagenet_class_names
    from cft.data.evalsets import load_eval_set, read_seg_item
    from cft.models import load_model

    out = Path(out)
    first = Distributed.current().rank == 0
    if first:
        check_output_file(out)
    eval_sets = {name: load_eval_set(name, root) for name, root in spec.eval_sets.items()}  # fail early on layouts
    seen = read_seen_classes(spec.split) if spec.split else None
    for checkpoint in spec.checkpoints[1:]:  # every checkpoint is read and checked before the first is scored
        _check_classes(load_model(spec.model, checkpoint=checkpoint, **spec.model_kwargs), eval_sets)
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    infos = {b.name: b.info for bs in eval_sets.values() for b in bs}
    for checkpoint in spec.checkpoints or [None]:
        label = _run_label(checkpoint, spec)
        model = load_model(spec.model, pretrained=spec.pretrained, checkpoint=checkpoint, **spec.model_kwargs)
        _check_classes(model, eval_sets)
        if seen is not None:
            check_split_classes(seen, getattr(model, "num_classes", None), spec.split)
        transform = eval_transform(model, spec.options)
        runs[label] = {}
        for protocols in eval_sets.values():
            for eval_set in protocols:
                try:
                    result = _evaluate_one(model, eval_set, spec, transform, seen, rows, label, read_seg_item)
                except NonFiniteOutput as err:
                    scored = f"; the scores finished before it are in {out}" if any(runs.values()) else ""
                    raise CftError(
                        f"{label}: {err}: nothing is scored from non-finite logits (a diverged or overflowed "
                        f"model, or a zero --std){scored}"
                    ) from None
                runs[label][eval_set.name] = result
                if first:
                    log(f"{label}  {eval_set.name}: " + _brief(result))
                    _write_partial(out, runs)
    mean, std = aggregate(runs)
    names = imagenet_class_names()
    for row in rows:
        if row["name"] == str(row["class"]) and 0 <= row["class"] < 1000 and row.get("_imagenet"):
            row["name"] = names[row["class"]]
        row.pop("_imagenet", None)
    results = {
        "format": RESULTS_FORMAT,
        "eval_sets": mean,
        "std": std,
        "runs": runs,
        "model": spec.model,
        "checkpoints": [_run_label(c, spec) for c in spec.checkpoints or [None]],
        "split": spec.split,
        "eval_set_info": infos,
        "options": asdict(spec.options),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if Distributed.current().rank == 0:  # under torchrun every rank holds the same results; one writes them
        write_json_atomic(out, results)
        write_bytes_atomic(out.with_suffix(".md"), markdown_table(mean, std, len(runs)).encode())
        write_bytes_atomic(out.with_name(out.stem + "_per_class.csv"), csv_text(rows).encode())
    return results


def _write_partial(out: Path, runs: Mapping[str, Mapping[str, Any]]) -> None:
    """The scores finished so far, in OUT itself (marked partial): a later failure loses nothing."""
    write_json_atomic(out, {"partial": True, "runs": runs})


def _evaluate_one(model, eval_set, spec, transform, seen, rows, label, read_seg_item) -> dict:
    if eval_set.name.startswith("imagenet-seg"):
        return segmentation_scores(model, eval_set, spec.options, read_seg_item)
    top = predict_topk(model, eval_set, spec.options, transform)
    sizes = eval_set.info.get("train_group_sizes")
    result = score(eval_set, top, seen, {int(g): n for g, n in sizes.items()} if sizes else None)
    for row in per_class_rows(eval_set, top, None):
        rows.append({"run": label, **row, "_imagenet": eval_set.num_classes == 1000})
    return result


def _check_classes(model, eval_sets: Mapping[str, Any]) -> None:
    classes = getattr(model, "num_classes", None)
    for protocols in eval_sets.values():
        for eval_set in protocols:
            if classes is not None and eval_set.num_classes and classes != eval_set.num_classes and eval_set.samples:
                if eval_set.samples[0].targets:
                    raise CftError(
                        f"{eval_set.name} labels {eval_set.num_classes} classes but the model has {classes} outputs "
                        f"(pass --model-arg num_classes={eval_set.num_classes} with a checkpoint trained for them)"
                    )


def _brief(result: Mapping[str, Any]) -> str:
    keys = [k for k in ("top1", "top5", "worst_group", "pixel_accuracy", "miou", "map") if k in result]
    return ", ".join(f"{k} {100 * result[k]:.2f}" for k in keys) + f" (n={result.get('n')})"
