"""`cft demo` run: the original model, concepts, each variant fine-tuned by `run_finetune` on the same few
images, evaluation with the cue diagnostics, then results.json and the report."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cft.concepts.world import world_concepts
from cft.config import save_config, to_dict
from cft.data.fewshot import select_few_shot
from cft.demo.config import (
    PREMISE,
    TEST_SPLITS,
    DemoConfig,
    EvalConfig,
    fine_tuned_variants,
    make_world,
    variant_lr,
    variant_objective,
)
from cft.demo.model import model_key, original_model
from cft.demo.report import write_report
from cft.evaluate.metrics import (
    group_accuracies,
    mean_std,
    paired_differences,
    relevance_alignment,
    relevance_peak_inside,
    relevance_rank_accuracy,
    relevance_share,
    t_interval,
)
from cft.evaluate.oracle import predict_with_hidden_tokens
from cft.io import write_json_atomic
from cft.models import load_checkpoint
from cft.train import build_objective
from cft.train.model import WORLD_VIT
from cft.train.recipe import FinetuneRecipe, recipe_from_dict, run_finetune
from cft.train.sources.world import world_concept_masks as concept_masks
from cft.train.trainer import STATE_FILE
from cft.world import SyntheticWorld
from cft.world.datasets import split_images
from cft.world.model import normalize, relevance_maps
from cft.world.segmenter import WorldSegmenter


def run_key(cfg: DemoConfig, origin: str, concepts: dict[str, list[str]], selection: dict[str, Any]) -> str:
    """A hash of everything that determines a fine-tuning run, so a rerun resumes only its own runs."""
    payload = {
        "model": model_key(cfg),
        "origin": origin,
        "finetune": to_dict(cfg.finetune),
        "concepts": concepts,
        "selection": selection,
        "world": cfg.world,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def few_shot_selection(cfg: DemoConfig, labels: np.ndarray, seed: int, num_classes: int):
    """Seed `seed`'s few-shot split of the pool (what run_finetune draws from the same recipe fields)."""
    f = cfg.finetune
    return select_few_shot(labels, f.per_class, f.class_fraction, seed, num_classes=num_classes)


def variant_recipe(cfg: DemoConfig, variant: str, seed: int, checkpoint: Path) -> FinetuneRecipe:
    """The `cft finetune` recipe of one demo variant: the original model's checkpoint, few-shot world data of
    the pool, the variant's objective and masks (cft: concepts; object-masks and the masked baselines: object
    masks), the demo's optimiser, the last epoch kept."""
    f = cfg.finetune
    objective = variant_objective(cfg, variant)
    needs_mask = build_objective(objective).needs_mask
    masks = "concepts" if variant in ("cft", "cft-parts") else "object" if needs_mask else "none"
    data = {
        "source": "world",
        "world": dict(cfg.world),
        "train_split": "train",
        "n_train": f.pool,
        "val_split": None,
        "few_shot": {"per_class": f.per_class, "class_fraction": f.class_fraction, "seed": seed},
        "masks": masks,
        "concepts": to_dict(cfg.part_concepts if variant == "cft-parts" else cfg.concepts),
        "flip": True,
    }
    optim = {
        "lr": variant_lr(cfg, variant),
        "weight_decay": f.weight_decay,
        "lr_decay": f.lr_decay,
        "lr_decay_every": f.lr_decay_every,
    }
    return recipe_from_dict(
        {
            "model": {"name": WORLD_VIT, "checkpoint": str(checkpoint), **to_dict(cfg.model)},
            "data": data,
            "objective": to_dict(objective),
            "train": {
                "epochs": f.epochs,
                "batch_size": f.batch_size,
                "seed": seed,
                "select_by": "last",
                "optim": optim,
            },
        }
    )


def finetune_variant(
    cfg: DemoConfig, variant: str, seed: int, checkpoint: Path, run: Path, progress: bool
) -> torch.nn.Module:
    """The original model (`checkpoint`) fine-tuned as `variant` by `run_finetune` in `run` (resumable)."""
    recipe = variant_recipe(cfg, variant, seed, checkpoint)
    result = run_finetune(recipe, run, resume=(run / STATE_FILE).is_file(), progress=progress)
    world = make_world(cfg).config
    return load_checkpoint(cfg.model.create(world.num_classes, world.image_size), result.last_path)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model(normalize(images[i : i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    )


def evaluate_model(
    model, tests: dict[str, dict], seen: set[int], cfg: EvalConfig, train_groups: dict[int, int]
) -> dict[str, dict[str, Any]]:
    """Accuracy, group accuracy, seen/unseen and relevance metrics on every test split; on test-ood also the
    cue diagnostics (the image and attention oracles, how often a conflicting cue wins)."""
    out = {}
    for name, t in tests.items():
        preds = predict(model, t["images"], cfg.batch_size).numpy()
        correct = preds == t["labels"]
        groups = t["labels"] * 100 + t["cues"]
        g = group_accuracies(correct, groups, train_groups, cfg.min_group_size)
        is_seen = np.isin(t["labels"], list(seen))
        k = min(cfg.n_relevance, len(preds))
        maps = relevance_maps(model, t["images"][:k])
        out[name] = {
            "top1": float(correct.mean()),
            "worst_group": g["worst_group"],
            "group_average": g["average"],
            "seen_top1": float(correct[is_seen].mean()) if is_seen.any() else float("nan"),
            "unseen_top1": float(correct[~is_seen].mean()) if (~is_seen).any() else float("nan"),
            "relevance_object": relevance_alignment(maps, t["object_masks"][:k]),
            "relevance_concepts": relevance_alignment(maps, t["concept_masks"][:k]),
            "relevance_share_object": relevance_share(maps, t["object_masks"][:k]),
            "relevance_share_concepts": relevance_share(maps, t["concept_masks"][:k]),
            "relevance_rank_concepts": relevance_rank_accuracy(maps, t["concept_masks"][:k]),
            "relevance_share_cue": relevance_share(maps, t["cue_masks"][:k]),
            "relevance_peak_cue": relevance_peak_inside(maps, t["cue_masks"][:k]),
            "relevance_peak_concepts": relevance_peak_inside(maps, t["concept_masks"][:k]),
        }
        if "neutral_images" in t:
            out[name].update(cue_diagnostics(model, t, preds, cfg))
    return out


def cue_diagnostics(model, t: dict, preds: np.ndarray, cfg: EvalConfig) -> dict[str, float]:
    """oracle_top1: top-1 on the same images with the cue neutralised; attention_oracle_top1: top-1 with the
    patches touching the cue hidden from every attention; follow_cue: the share of images whose cue names
    another class that are predicted as that class."""
    neutral = predict(model, t["neutral_images"], cfg.batch_size).numpy()
    hidden = predict_with_hidden_tokens(
        model, normalize(t["images"]), torch.from_numpy(t["all_cue_masks"]), cfg.batch_size
    ).numpy()
    conflict = (t["cues"] != t["labels"]) & (t["cues"] < t["num_classes"])
    return {
        "oracle_top1": float((neutral == t["labels"]).mean()),
        "attention_oracle_top1": float((hidden == t["labels"]).mean()),
        "follow_cue": float((preds[conflict] == t["cues"][conflict]).mean()) if conflict.any() else float("nan"),
    }


def diagnostics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a sceptical reader checks first: does the original model meet CFT's premise (strong object features,
    reliance on the cue), and where does each variant's relevance sit on test-ood (mean over seeds)."""
    ood, test_id = metrics["original"]["test-ood"], metrics["original"]["test-id"]
    out: dict[str, Any] = {
        "relevance_share_cue": {v: m["test-ood"]["relevance_share_cue"] for v, m in metrics.items()},
        "relevance_share_concepts": {v: m["test-ood"]["relevance_share_concepts"] for v, m in metrics.items()},
        "relevance_rank_concepts": {v: m["test-ood"]["relevance_rank_concepts"] for v, m in metrics.items()},
        "relevance_peak_cue": {v: m["test-ood"]["relevance_peak_cue"] for v, m in metrics.items()},
        "relevance_peak_concepts": {v: m["test-ood"]["relevance_peak_concepts"] for v, m in metrics.items()},
    }
    if "oracle_top1" not in ood:  # a world without neutral cue values
        return out
    oracle = ood["oracle_top1"]
    out["oracle"] = {"top1": oracle, "what": "the original model on test-ood with the cue neutralised"}
    out["attention_oracle"] = {
        "top1": ood["attention_oracle_top1"],
        "what": "the original model on test-ood with the patches touching the cue hidden from every attention",
    }
    out["follow_cue"] = {v: m["test-ood"]["follow_cue"] for v, m in metrics.items()}
    out["premise"] = {
        "object_features": bool(oracle >= PREMISE["oracle"] and test_id["top1"] - oracle <= PREMISE["oracle_gap"]),
        "leans_on_cue": bool(test_id["top1"] >= PREMISE["test_id"] and ood["top1"] <= PREMISE["test_ood"]),
        "thresholds": dict(PREMISE),
    }
    return out


def load_tests(
    world: SyntheticWorld, concepts: dict[str, list[str]], cfg: EvalConfig, segmenter: WorldSegmenter
) -> dict[str, dict]:
    """The test splits with labels, cue values, masks for the first n_relevance images (object, concepts, cue)
    and, for test-ood, the same images with the cue neutralised and every image's cue mask."""
    tests = {}
    for name in TEST_SPLITS:
        split = world.split(name, cfg.n_test).materialize()
        k = min(cfg.n_relevance, cfg.n_test)
        samples = [split.sample(i) for i in range(k)]
        labels, cues = split.labels_and_cues()
        tests[name] = {
            "images": split_images(split),
            "labels": labels,
            "cues": cues,
            "num_classes": len(world.classes),
            "object_masks": np.stack([s["object_mask"] for s in samples]),
            "cue_masks": np.stack([s["cue_mask"] for s in samples]),
            "concept_masks": np.stack(concept_masks(samples, concepts, world.classes, segmenter)) > 0,
        }
        if name == "test-ood" and len(world.backgrounds) > len(world.classes):
            label_maps = split._arrays["label_maps"]
            tests[name]["neutral_images"] = split_images(world.split(name, cfg.n_test, neutral_cue=True))
            tests[name]["all_cue_masks"] = np.stack([split.masks(m)[1] for m in label_maps])
    return tests


def variant_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """The paired comparisons of a run: each fine-tuned variant against the original, then every two fine-tuned
    variants in the order they ran (the earlier one first)."""
    pairs = [(v, "original") for v in variants]
    return pairs + [(a, b) for i, a in enumerate(variants) for b in variants[i + 1 :]]


def run_demo(
    cfg: DemoConfig, out: str | Path, from_scratch: bool = False, progress: bool = True, log=print
) -> dict[str, Any]:
    """Run the demo; write results.json, report.md and figures under `out`; return the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml", kind="demo")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(0)
    world = make_world(cfg)
    original, origin, checkpoint = original_model(cfg, out, from_scratch, progress)
    timings["original_model"] = time.perf_counter() - start
    log(f"original model: {origin}")

    t = time.perf_counter()
    concepts = world_concepts(world, cfg.concepts, out)
    log("concepts: " + "; ".join(f"{c}: {', '.join(v)}" for c, v in concepts.items()))
    variants = fine_tuned_variants(cfg)
    parts = world_concepts(world, cfg.part_concepts, out) if "cft-parts" in variants else None
    if parts is not None:
        log("part concepts: " + "; ".join(f"{c}: {', '.join(v)}" for c, v in parts.items()))
    timings["concepts"] = time.perf_counter() - t
    t = time.perf_counter()
    segmenter = cfg.concepts.make_segmenter()
    pool = world.split("train", cfg.finetune.pool).materialize()
    labels, cues = pool.labels_and_cues()
    train_groups = {int(g): int(n) for g, n in zip(*np.unique(labels * 100 + cues, return_counts=True), strict=True)}
    tests = load_tests(world, concepts, cfg.evaluate, segmenter)
    timings["data"] = time.perf_counter() - t

    per_seed: dict[int, dict] = {}
    selections = {}
    models: dict[str, torch.nn.Module] = {"original": original}
    t_eval = 0.0
    t_ft = 0.0
    for seed in cfg.seeds:
        sel = few_shot_selection(cfg, labels, seed, len(world.classes))
        selections[seed] = sel.to_dict()
        seen = set(sel.seen_classes)
        t = time.perf_counter()
        results = {"original": evaluate_model(original, tests, seen, cfg.evaluate, train_groups)}
        t_eval += time.perf_counter() - t
        for variant in variants:
            t = time.perf_counter()
            key = run_key(cfg, origin, parts if variant == "cft-parts" else concepts, sel.to_dict())
            run = out / "runs" / f"seed{seed}" / f"{variant}-{key}"
            model = finetune_variant(cfg, variant, seed, checkpoint, run, progress)
            t_ft += time.perf_counter() - t
            t = time.perf_counter()
            results[variant] = evaluate_model(model, tests, seen, cfg.evaluate, train_groups)
            t_eval += time.perf_counter() - t
            models[variant] = model
            log(f"seed {seed} {variant}: " + ", ".join(f"{s} {results[variant][s]['top1']:.3f}" for s in TEST_SPLITS))
        per_seed[seed] = results
    timings["finetune"], timings["evaluate"] = t_ft, t_eval
    mean, std = mean_std(list(per_seed.values()))
    timings["total"] = time.perf_counter() - start
    results = {
        "metrics": mean,
        "std": std,
        "interval": {
            v: {s: t_interval([r[v][s]["top1"] for r in per_seed.values()]) for s in TEST_SPLITS} for v in mean
        },
        "paired": paired_differences(list(per_seed.values()), variant_pairs(variants), TEST_SPLITS),
        "diagnostics": diagnostics(mean),
        "per_seed": {str(s): r for s, r in per_seed.items()},
        "seeds": list(cfg.seeds),
        "selections": {str(s): v for s, v in selections.items()},
        "concepts": concepts,
        "part_concepts": parts,
        "original_model": origin,
        "timings": timings,
        "config": to_dict(cfg),
    }
    write_report(results, out, world, tests, models, concepts)
    write_json_atomic(out / "results.json", results)
    return results
