"""`cft demo --data decoy`: the method on real images, Decoy-FashionMNIST (or Decoy-MNIST) in Ross et al.'s style.

The original model (shipped in cft/assets, or any checkpoint) reads a 4 x 4 grey square in a corner whose shade
names the class; out of distribution the shade names another class. Each variant is a `cft finetune` recipe on
the same few images (the world demo's protocol: 3 images from half of the classes per seed), evaluated on the id,
ood and neutral (no square: the oracle) splits, with seen / unseen classes, how often a conflicting square
decides, and where the relevance sits. `phase: val` scores the held-out val splits (for choosing settings),
`phase: test` the test file. Paired intervals: per-seed differences of each variant against no-guidance.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cft.config import from_dict, load_config_data, merge, save_config, to_dict
from cft.data.decoy import NEUTRAL, DecoyConfig, DecoyImages, DecoySource
from cft.demo.report import relevance_grid
from cft.errors import CftError
from cft.evaluate.metrics import mean_std, relevance_share, t_interval
from cft.evaluate.oracle import predict_with_hidden_tokens
from cft.io import write_bytes_atomic, write_json_atomic
from cft.models import load_checkpoint
from cft.train.model import WORLD_VIT
from cft.train.recipe import recipe_from_dict, run_finetune
from cft.train.trainer import STATE_FILE
from cft.world.model import WorldModelConfig, normalize, relevance_maps

SHIPPED = {"fashion-mnist": "decoy_fashion_mnist_vit.safetensors"}
PRETRAIN_RECIPES = {"fashion-mnist": "decoy/fashion-mnist-pretrain"}
PHASES = {"val": ("val", "val-ood", "val-neutral"), "test": ("test-id", "test-ood", "test-neutral")}
ID, OOD, NEUTRAL_SPLIT = 0, 1, 2

# The variants every run compares; `variants` in the config adds entries or changes fields of these. A variant is a
# partial `cft finetune` recipe merged over the base (`finetune`, whose learning rate was chosen on val): its
# objective, and whatever else it changes. cft-paper-lr is the paper's loss at the world demo's protocol rate
# (1e-4), which collapses the in-distribution accuracy of this model (docs/decoy.md); cft-anchored is the fix.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "cft": {"objective": {"name": "cft"}},
    "no-guidance": {"objective": {"name": "no-guidance"}},
    "cft-paper-lr": {"objective": {"name": "cft"}, "train": {"optim": {"lr": 1e-4}}},
    # the best val-ood within 1 point of val top-1 over every lever tried (docs/decoy.md, round 5): the paper's loss
    # with its consistency term anchored to the original model on the batch and on 240 unlabelled pool images
    "cft-anchored": {
        "objective": {"name": "cft", "cls_target": "original", "anchor_weight": 5.0},
        "data": {"anchor_images": 240},
        "train": {"optim": {"lr": 4e-5}},
    },
}
# Each baseline's settings chosen on val by cft's rule (the best val-ood within 1 point of no-guidance's val top-1,
# 3 seeds; scripts/decoy/baselines.yaml and baselines2.yaml, tables in docs/decoy.md). Under AdamW the input-gradient
# penalty's weight stops mattering once the penalty dominates the loss, so rrr and gradmask were also given 4x the rate.
BASELINE_VARIANTS: dict[str, dict[str, Any]] = {
    "robustvit": {
        "objective": {"name": "robustvit", "align_weight": 0.95, "cls_weight": 0.05},
        "train": {"optim": {"lr": 6e-5}},
    },
    "rrr": {"objective": {"name": "rrr", "input_grad_weight": 1e3}, "train": {"optim": {"lr": 1e-4}}},
    "gradmask": {"objective": {"name": "gradmask", "input_grad_weight": 1e4}, "train": {"optim": {"lr": 1e-4}}},
    "rrda": {"objective": {"name": "rrda", "rrda_original_weight": 0.0}},
}
# the learning rate of every variant but cft-paper-lr: chosen on val (the best val-ood among the rates that cost cft
# at most 1 point of val top-1, mean of 3 seeds; docs/decoy.md has the table)
DECOY_LR = 2.5e-5


def _base_finetune() -> dict[str, Any]:
    """The world demo's fine-tuning protocol (the paper's loss and schedule), as a recipe fragment."""
    return {
        "data": {"few_shot": {"per_class": 3, "class_fraction": 0.5}, "n_train": 50_000, "flip": True},
        "objective": {"name": "cft"},
        "train": {
            "epochs": 50,
            "batch_size": 8,
            "select_by": "last",
            "optim": {"lr": DECOY_LR, "weight_decay": 1e-4, "lr_decay": 0.85, "lr_decay_every": 2},
        },
    }


@dataclass
class DecoyBenchConfig:
    decoy: DecoyConfig = field(default_factory=DecoyConfig)  # dataset and root; the decoy's rules
    checkpoint: str | None = None  # the original model; null: the one shipped for decoy.dataset
    model: WorldModelConfig = field(default_factory=lambda: WorldModelConfig(patch_size=4))
    finetune: dict[str, Any] = field(default_factory=_base_finetune)  # the base recipe of every variant
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # new variants, or changes to DEFAULT_VARIANTS
    only: list[str] | None = None  # run just these variants (null: all)
    phase: str = "test"  # test | val (choose settings on val only)
    n_eval: int | None = None  # images per evaluation split (null: all 10,000)
    n_relevance: int = 200  # images whose relevance maps are scored
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epoch_trace: int = 0  # >0: also score every k-th epoch's checkpoint on the id split (seen / unseen)


QUICK = {"seeds": [0], "n_eval": 1000, "n_relevance": 50, "finetune": {"train": {"epochs": 10}}}


def decoy_bench_config(overrides: dict[str, Any] | None = None, quick: bool = False) -> DecoyBenchConfig:
    data = merge(QUICK if quick else {}, overrides or {})
    cfg = from_dict(DecoyBenchConfig, data, where="decoy benchmark config")
    cfg.finetune = merge(_base_finetune(), cfg.finetune)  # a partial `finetune` changes only the fields it names
    if cfg.phase not in PHASES:
        raise CftError(f"decoy benchmark config phase must be one of {', '.join(PHASES)}, got {cfg.phase!r}")
    if not cfg.seeds:
        raise CftError("decoy benchmark config seeds must list at least one seed")
    for name in variant_names(cfg):
        variant_recipe(cfg, name, cfg.seeds[0], Path("original.safetensors"), check=False)
    return cfg


def variant_names(cfg: DecoyBenchConfig) -> list[str]:
    names = list(dict.fromkeys([*DEFAULT_VARIANTS, *cfg.variants]))
    if cfg.only is not None:
        unknown = [n for n in cfg.only if n not in names]
        if unknown:
            raise CftError(f"decoy benchmark config only: unknown variant(s) {', '.join(unknown)}; known: {names}")
        names = [n for n in names if n in cfg.only]
    return names


def variant_recipe(cfg: DecoyBenchConfig, name: str, seed: int, checkpoint: Path, check: bool = True):
    """The `cft finetune` recipe of variant `name` for `seed` (the few-shot split and the data order)."""
    if name not in cfg.variants and name not in DEFAULT_VARIANTS:
        raise CftError(f"unknown decoy benchmark variant {name!r}")
    spec = merge(DEFAULT_VARIANTS.get(name, {}), cfg.variants.get(name, {}))  # a default's fields can be changed
    base = merge(
        cfg.finetune,
        {
            "model": {"name": WORLD_VIT, "checkpoint": str(checkpoint), **to_dict(cfg.model)},
            "data": {
                "source": "decoy",
                "decoy": to_dict(cfg.decoy),
                "train_split": "train",
                "val_split": None,
                "masks": "object",
                "few_shot": {"seed": seed},
            },
            "train": {"seed": seed},
        },
    )
    data = merge(base, spec)
    if not check:  # the checkpoint need not exist yet
        data = merge(data, {"model": {"checkpoint": None}})
    try:
        return recipe_from_dict(data)
    except CftError as err:
        raise CftError(f"decoy benchmark variant {name!r}: {err}") from None


# ---- the original model ----------------------------------------------------------------------------------
def original_checkpoint(cfg: DecoyBenchConfig) -> Path:
    if cfg.checkpoint is not None:
        if not Path(cfg.checkpoint).is_file():
            raise CftError(f"decoy benchmark config checkpoint {cfg.checkpoint} does not exist")
        return Path(cfg.checkpoint)
    name = SHIPPED.get(cfg.decoy.dataset)
    path = Path(str(resources.files("cft") / "assets")) / name if name else None
    make = (
        "make one with `cft finetune --config decoy/fashion-mnist-pretrain --set data.decoy.dataset="
        f"{cfg.decoy.dataset} --set data.decoy.size={cfg.decoy.size} --out runs/orig` and pass "
        "--set checkpoint=runs/orig/last.safetensors"
    )
    if path is None or not path.is_file():
        raise CftError(f"no shipped original model for decoy.dataset={cfg.decoy.dataset}; {make}")
    made_with = from_dict(DecoyConfig, load_config_data(PRETRAIN_RECIPES[cfg.decoy.dataset])["data"]["decoy"])
    if cfg.decoy.size != made_with.size:
        raise CftError(f"the shipped model was trained with decoy.size={made_with.size}, not {cfg.decoy.size}; {make}")
    return path


# ---- evaluation ------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    model.eval()
    return torch.cat(
        [model(normalize(images[i : i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    ).numpy()


@dataclass
class EvalSplit:
    name: str
    planted: DecoyImages
    images: torch.Tensor  # (N, 3, H, W) uint8


def load_eval_splits(source: DecoySource, cfg: DecoyBenchConfig) -> list[EvalSplit]:
    out = []
    for name in PHASES[cfg.phase]:
        planted = source.split(name, cfg.n_eval)
        out.append(EvalSplit(name, planted, torch.from_numpy(planted.rgb())))
    return out


def evaluate_model(model, splits: list[EvalSplit], seen: set[int], n_relevance: int) -> dict[str, dict[str, float]]:
    """Top-1 (all, seen, unseen classes) on each split; on the ood split also how often the conflicting square
    decides, the attention oracle (the square's token hidden) and the relevance on the square and the object."""
    out = {}
    for k, s in enumerate(splits):
        p = s.planted
        preds = predict(model, s.images)
        correct = preds == p.labels
        is_seen = np.isin(p.labels, sorted(seen))
        row = {
            "top1": float(correct.mean()),
            "seen_top1": float(correct[is_seen].mean()) if is_seen.any() else float("nan"),
            "unseen_top1": float(correct[~is_seen].mean()) if (~is_seen).any() else float("nan"),
        }
        if k == OOD:
            conflict = (p.cues != p.labels) & (p.cues != NEUTRAL)
            n = min(n_relevance, len(p))
            maps = relevance_maps(model, s.images[:n])
            hidden = predict_with_hidden_tokens(model, normalize(s.images), torch.from_numpy(p.cue_masks()), 1000)
            row.update(
                follow_decoy=float((preds[conflict] == p.cues[conflict]).mean()),
                attention_oracle_top1=float((hidden.numpy() == p.labels).mean()),
                relevance_share_decoy=relevance_share(maps, p.cue_masks()[:n]),
                relevance_share_object=relevance_share(maps, p.foreground[:n]),
            )
        out[s.name] = row
    return out


def epoch_trace(run: Path, model, split: EvalSplit, seen: set[int], every: int) -> list[dict[str, float]]:
    """Top-1 on the id split (all, seen, unseen) after every `every`-th epoch of a run kept with epoch files."""
    rows = []
    for path in sorted(run.glob("epoch_*.safetensors")):
        epoch = int(path.stem.split("_")[1])
        if epoch % every:
            continue
        r = evaluate_model(load_checkpoint(model, path), [split], seen, 0)[split.name]
        rows.append({"epoch": epoch, **r})
    return rows


# ---- the run ---------------------------------------------------------------------------------------------
def _key(recipe) -> str:
    return hashlib.sha256(json.dumps(to_dict(recipe), sort_keys=True).encode()).hexdigest()[:10]


def run_decoy_benchmark(cfg: DecoyBenchConfig, out: str | Path, progress: bool = True, log=print) -> dict[str, Any]:
    """Fine-tune every variant on each seed's few images, evaluate, write OUT/results.json and OUT/report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml", kind="decoy-demo")
    start = time.perf_counter()
    source = DecoySource(cfg.decoy)
    classes = list(source.classes)
    checkpoint = original_checkpoint(cfg)
    original = load_checkpoint(cfg.model.create(len(classes), 28), checkpoint)
    splits = load_eval_splits(source, cfg)
    names = variant_names(cfg)
    per_seed: dict[int, dict[str, Any]] = {}
    models: dict[str, torch.nn.Module] = {"original": original}
    traces: dict[str, Any] = {}
    for seed in cfg.seeds:
        results: dict[str, Any] = {}
        seen: set[int] = set()
        for name in names:
            recipe = variant_recipe(cfg, name, seed, checkpoint)
            if cfg.epoch_trace:
                recipe.train.keep_epoch_checkpoints = True
            run = out / "runs" / f"seed{seed}" / f"{name}-{_key(recipe)}"
            result = run_finetune(recipe, run, resume=(run / STATE_FILE).is_file(), progress=progress)
            seen = set(json.loads((run / "split.json").read_text())["seen_classes"])
            if "original" not in results:
                results["original"] = evaluate_model(original, splits, seen, cfg.n_relevance)
            model = load_checkpoint(cfg.model.create(len(classes), 28), result.last_path)
            results[name] = evaluate_model(model, splits, seen, cfg.n_relevance)
            models[name] = model
            if cfg.epoch_trace:
                scratch = cfg.model.create(len(classes), 28)
                traces.setdefault(name, {})[str(seed)] = epoch_trace(run, scratch, splits[ID], seen, cfg.epoch_trace)
            log(f"seed {seed} {name}: " + ", ".join(f"{s} {results[name][s]['top1']:.4f}" for s in results[name]))
        per_seed[seed] = results
    mean, std = mean_std(list(per_seed.values()))
    results = {
        "metrics": mean,
        "std": std,
        "premise": premise(mean["original"], PHASES[cfg.phase]),
        "paired": paired_table(per_seed, cfg),
        "per_seed": {str(s): r for s, r in per_seed.items()},
        "epoch_trace": traces,
        "seeds": list(cfg.seeds),
        "original_model": str(checkpoint),
        "splits": list(PHASES[cfg.phase]),
        "seconds": time.perf_counter() - start,
        "config": to_dict(cfg),
    }
    write_json_atomic(out / "results.json", results)
    relevance_figure(splits[OOD], classes, models, out / "figures" / "relevance_grid.png")
    write_bytes_atomic(out / "report.md", markdown(results).encode())
    return results


def relevance_figure(split: EvalSplit, classes: list[str], models: dict[str, torch.nn.Module], path: Path) -> Path:
    """One ood image per class: the image, its foreground (the guidance), the square, and each model's relevance
    of its prediction (the last seed's fine-tuned models)."""
    p = split.planted
    idx = [int(np.flatnonzero(p.labels == c)[0]) for c in range(len(classes)) if (p.labels == c).any()]
    x = split.images[idx]
    maps = {name: relevance_maps(model, x) for name, model in models.items()}
    masks = {"foreground": p.foreground[idx], "decoy": p.cue_masks()[idx]}
    rows = [f"{classes[p.labels[i]]} / {classes[p.cues[i]]}" for i in idx]
    return relevance_grid(x.permute(0, 2, 3, 1).numpy(), rows, masks, maps, path, scale=4)


# the benchmark's premise for the original model: it knows the objects (top-1 without the square at least
# `oracle`) and leans on the square (id top-1 at least `id`, ood top-1 at most `ood`)
PREMISE = {"oracle": 0.80, "id": 0.90, "ood": 0.50}


def premise(original: dict[str, Any], splits: tuple[str, str, str]) -> dict[str, Any]:
    """Does the original model meet CFT's premise on these splits (PREMISE's thresholds)?"""
    top1 = {k: original[s]["top1"] for k, s in zip(("id", "ood", "oracle"), splits, strict=True)}
    met = top1["oracle"] >= PREMISE["oracle"] and top1["id"] >= PREMISE["id"] and top1["ood"] <= PREMISE["ood"]
    return {**top1, "met": bool(met), "thresholds": dict(PREMISE)}


def paired_table(per_seed: dict[int, dict[str, Any]], cfg: DecoyBenchConfig) -> dict[str, dict[str, Any]]:
    """Each variant minus no-guidance and minus the original, per seed, on the id and ood splits' top-1."""
    id_split, ood_split = PHASES[cfg.phase][ID], PHASES[cfg.phase][OOD]
    variants = list(next(iter(per_seed.values())))
    table: dict[str, dict[str, Any]] = {}
    for ref in ("no-guidance", "original"):
        if ref not in variants:
            continue
        for v in variants:
            if v == ref:
                continue
            table.setdefault(v, {})[f"vs {ref}"] = {
                split: t_interval([r[v][split]["top1"] - r[ref][split]["top1"] for r in per_seed.values()])
                for split in (id_split, ood_split)
            }
    return table


def _pct(mean: float, std: float | None = None) -> str:
    if mean != mean:
        return "-"
    return f"{100 * mean:.1f}" + ("" if std is None or std != std or not std else f" ± {100 * std:.1f}")


def markdown(results: dict[str, Any]) -> str:
    m, s, p = results["metrics"], results["std"], results["paired"]
    id_split, ood_split, neutral = results["splits"]
    pr = results["premise"]
    lines = [
        "# Decoy benchmark report",
        "",
        f"Original model: {results['original_model']}. Seeds: {results['seeds']}. Top-1 in percent, mean ± std "
        "over seeds; paired differences with their 95 % t interval.",
        "",
        f"The premise: the original model scores {_pct(pr['id'])} on {id_split} (needs >= "
        f"{_pct(pr['thresholds']['id'])}), {_pct(pr['ood'])} on {ood_split} (needs <= {_pct(pr['thresholds']['ood'])})"
        f" and {_pct(pr['oracle'])} without the square (the oracle; needs >= {_pct(pr['thresholds']['oracle'])}): "
        + ("met." if pr["met"] else "NOT met: the comparison below says little about the method."),
        "",
        f"| variant | {id_split} | {ood_split} | {neutral} (oracle after) | {ood_split} seen / unseen | "
        f"{id_split} seen / unseen | follows the decoy | relevance on the decoy | on the object | attention oracle |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in m:
        i, o, n = m[v][id_split], m[v][ood_split], m[v][neutral]
        si, so, sn = s[v][id_split], s[v][ood_split], s[v][neutral]
        lines.append(
            f"| {v} | {_pct(i['top1'], si['top1'])} | {_pct(o['top1'], so['top1'])} | {_pct(n['top1'], sn['top1'])} | "
            f"{_pct(o['seen_top1'])} / {_pct(o['unseen_top1'])} | {_pct(i['seen_top1'])} / {_pct(i['unseen_top1'])} | "
            f"{_pct(o['follow_decoy'], so['follow_decoy'])} | {_pct(o['relevance_share_decoy'])} | "
            f"{_pct(o['relevance_share_object'])} | {_pct(o['attention_oracle_top1'])} |"
        )
    lines += ["", "Paired differences (points, mean over seeds ± 95 % t half-width):", ""]
    lines += [f"| variant | vs | {id_split} | {ood_split} |", "|---|---|---|---|"]
    for v, refs in p.items():
        for ref, d in refs.items():
            cells = [f"{100 * d[k]['mean']:+.1f} ± {100 * d[k]['half_width']:.1f}" for k in (id_split, ood_split)]
            lines.append(f"| {v} | {ref.removeprefix('vs ')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Rows: one ood image per class (label / the class its square names); columns: the image, its foreground (the "
        "guidance), the square, and each model's relevance of its prediction (last seed).",
        "",
        "![relevance](figures/relevance_grid.png)",
        "",
        f"Time: {results['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
