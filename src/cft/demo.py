"""`cft demo`: the whole method on the synthetic world, on a laptop CPU, with no downloads.

make the world -> the original model (shipped, or pretrained with --from-scratch) -> concepts per class ->
masks from the world's segmenter -> fine-tune each variant on the same few images -> evaluate -> report.
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

from cft.concepts.world import WorldConceptConfig, world_concepts
from cft.config import from_dict, merge, save_config, to_dict
from cft.data.fewshot import select_few_shot
from cft.errors import CftError
from cft.evaluate.metrics import (
    group_accuracies,
    mean_std,
    relevance_alignment,
    relevance_rank_accuracy,
    relevance_share,
)
from cft.evaluate.oracle import predict_with_hidden_tokens
from cft.grounding.guidance import segment_guidance
from cft.io import write_json_atomic
from cft.models import load_checkpoint, save_checkpoint
from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective
from cft.world import SyntheticWorld, WorldConfig
from cft.world.segmenter import WorldSegmenter
from cft.world.training import (
    ArrayDataset,
    WorldModelConfig,
    WorldStream,
    make_collate,
    normalize,
    relevance_maps,
    split_images,
)

VARIANTS = ("original", "cft", "object-masks", "no-guidance")
# `cft demo --all-baselines`: every baseline objective of cft.train on the same images; all but erm are guided
# by the object's mask (RobustViT's MSE on relevance, RRR's and GradMask's input-gradient penalties, RRDA's pastes).
BASELINES = ("erm", "robustvit", "rrr", "gradmask", "rrda")
TEST_SPLITS = ("test-id", "test-ood", "test-flipped")
SHIPPED_MODELS = "world_vit*.safetensors"  # in cft/assets: each records the model_key it was made with
# CFT's premise for the original model: object features (top-1 with the cue neutralised at least `oracle`, at most
# `oracle_gap` below test-id) and reliance on the cue (test-id at least `test_id`, test-ood at most `test_ood`)
PREMISE = {"oracle": 0.90, "oracle_gap": 0.02, "test_id": 0.95, "test_ood": 0.70}


@dataclass
class PretrainStage:
    """A pretraining stage: `images` fresh samples of the demo's world with the WorldConfig fields in `world`
    changed (the pretraining knobs bias, context_only, neutral_cue), in `epochs` epochs of images / epochs each."""

    world: dict[str, Any] = field(default_factory=dict)
    images: int = 640_000
    epochs: int = 50
    lr: float = 1e-3
    schedule: str = "cosine"  # cosine (to 0 over the stage's epochs) | step (x lr_decay every epoch)
    lr_decay: float = 0.7
    warmup_epochs: int = 1


@dataclass
class PretrainConfig:
    """Training the original model from scratch: stages run in order, each on samples no other stage sees.

    The default is one stage on a world that makes a model know the objects and lean on the mark: the mark always
    wears the label's colour (bias 1.0); 30 % of the images hide the object (only the mark tells the label) and
    30 % wear a neutral mark (only the object tells it), so the model must learn both.
    """

    batch_size: int = 128
    weight_decay: float = 0.05
    seed: int = 0
    n_val: int = 1000
    stages: list[PretrainStage] = field(
        default_factory=lambda: [PretrainStage(world={"bias": 1.0, "context_only": 0.3, "neutral_cue": 0.3})]
    )


@dataclass
class FinetuneConfig:
    per_class: int = 3
    class_fraction: float = 0.5
    pool: int = 2000  # the train-split images the few-shot sets are drawn from
    epochs: int = 50
    batch_size: int = 8
    # chosen on val (scripts/tune_demo.py): the best top-1 on val images off their class's cue among the
    # learning rates that cost cft at most 1 point of val top-1 (tried 3e-5, 5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4)
    lr: float = 2e-4
    weight_decay: float = 1e-4
    lr_decay: float = 0.85
    lr_decay_every: int = 2
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    object_objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # ObjectiveConfig fields per baseline of --all-baselines. The penalty weights were chosen on val as lr was
    # (scripts/tune_demo.py; rrr tried 1e-4 .. 1e4, gradmask 0.4 .. 4e5): none beat plain fine-tuning there
    baseline_settings: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"rrr": {"input_grad_weight": 1e-4}, "gradmask": {"input_grad_weight": 400.0}}
    )


@dataclass
class EvalConfig:
    n_test: int = 2000
    n_relevance: int = 100
    min_group_size: int = 10  # groups (class x background) smaller than this are left out of worst-group accuracy
    batch_size: int = 500


def _demo_world() -> dict[str, Any]:
    """The demo's world: each class wears its own colour of mark, on the object's body, 95 % of the time."""
    return {"cue": "mark", "mark_place": "object", "mark_grid": 8}


@dataclass
class DemoConfig:
    world: dict[str, Any] = field(default_factory=_demo_world)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    concepts: WorldConceptConfig = field(default_factory=WorldConceptConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baselines: list[str] = field(default_factory=list)  # any of BASELINES, run after the four variants


QUICK = {
    "seeds": [0],
    "finetune": {"epochs": 20, "pool": 600},
    "evaluate": {"n_test": 600, "n_relevance": 40, "min_group_size": 3},
}


def demo_config(overrides: dict[str, Any] | None = None, quick: bool = False) -> DemoConfig:
    data = merge(QUICK if quick else {}, overrides or {})
    cfg = from_dict(DemoConfig, data, where="demo config")
    unknown = [b for b in [*cfg.baselines, *cfg.finetune.baseline_settings] if b not in BASELINES]
    if unknown:
        raise CftError(f"demo config: unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    make_world(cfg)  # validate the world fields now
    for baseline in cfg.baselines:
        build_objective(variant_objective(cfg, baseline))
    return cfg


def make_world(cfg: DemoConfig) -> SyntheticWorld:
    try:
        return SyntheticWorld(WorldConfig(**cfg.world))
    except TypeError as err:
        raise CftError(f"demo config world: {err}") from None


# ---- the original model ----------------------------------------------------------------------------------
def model_key(cfg: DemoConfig) -> str:
    """A hash of everything that determines the pretrained model."""
    payload = json.dumps(
        {"world": cfg.world, "model": to_dict(cfg.model), "pretrain": to_dict(cfg.pretrain)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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


def shipped_models() -> dict[str, Path]:
    """The world models shipped in the package, by the model_key recorded in each file."""
    from safetensors import safe_open

    found = {}
    for path in sorted(Path(str(resources.files("cft") / "assets")).glob(SHIPPED_MODELS)):
        with safe_open(str(path), "pt") as f:
            key = (f.metadata() or {}).get("model_key")
        if key:
            found[key] = path
    return found


# pretraining samples start here (stage k at (k + 1) * PRETRAIN_OFFSET): far from the demo's own train samples
PRETRAIN_OFFSET = 10_000_000


def pretrain(cfg: DemoConfig, out: Path, progress: bool = True) -> Path:
    """Train the original model from scratch, stage by stage; returns its safetensors path (resumable)."""
    base = make_world(cfg).config
    classes = base.num_classes
    model = cfg.model.create(classes, base.image_size)
    path = out / "original.safetensors"
    for k, stage in enumerate(cfg.pretrain.stages):
        try:
            world = SyntheticWorld(WorldConfig(**{**cfg.world, **stage.world}))
        except TypeError as err:
            raise CftError(f"demo config pretrain.stages[{k}].world: {err}") from None
        per_epoch = max(stage.images // stage.epochs, 1)
        train = WorldStream(world, "train", per_epoch, offset=(k + 1) * PRETRAIN_OFFSET)
        val = ArrayDataset.from_split(world.split("val", cfg.pretrain.n_val))
        optim = OptimConfig(
            lr=stage.lr,
            weight_decay=cfg.pretrain.weight_decay,
            schedule=stage.schedule,
            lr_decay=stage.lr_decay,
            lr_decay_every=1,
            warmup_epochs=stage.warmup_epochs,
        )
        tcfg = TrainConfig(
            epochs=stage.epochs,
            batch_size=cfg.pretrain.batch_size,
            seed=cfg.pretrain.seed + k,
            optim=optim,
            select_by="last",
            progress=progress,
        )
        run = out / f"stage{k + 1}"
        trainer = Trainer(model, build_objective(ObjectiveConfig(name="erm")), tcfg, run, make_collate(flip=True))
        done = (run / "last.safetensors").is_file() and _epochs_done(run) >= stage.epochs
        if done:
            load_checkpoint(model, run / "last.safetensors")
        else:
            trainer.fit(train, val, resume=(run / "state.pt").is_file())
    save_checkpoint(model, path, {"model_key": model_key(cfg)})
    return path


def _epochs_done(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def original_model(cfg: DemoConfig, out: Path, from_scratch: bool, progress: bool) -> tuple[torch.nn.Module, str]:
    world = make_world(cfg).config
    model = cfg.model.create(world.num_classes, world.image_size)
    if not from_scratch:
        shipped = shipped_models().get(model_key(cfg))
        if shipped is None:
            raise CftError(
                "no shipped world model was trained with this world/model/pretrain config; "
                "run `cft demo --from-scratch` to pretrain one for it"
            )
        return load_checkpoint(model, shipped), f"shipped ({shipped.name})"
    return load_checkpoint(model, pretrain(cfg, out / "pretrain", progress)), "pretrained from scratch"


# ---- concepts and masks ----------------------------------------------------------------------------------
def concept_masks(
    samples: list[dict], concepts: dict[str, list[str]], classes: tuple[str, ...], segmenter: WorldSegmenter
) -> list[np.ndarray]:
    """The guidance masks of world samples: each sample's class concepts as the world's segmenter finds them."""
    phrases = [concepts[classes[s["label"]]] for s in samples]
    return segment_guidance(segmenter, samples, phrases, samples[0]["object_mask"].shape)


# ---- fine-tuning and evaluation --------------------------------------------------------------------------
def finetune(
    model: torch.nn.Module,
    data: ArrayDataset,
    objective: ObjectiveConfig,
    cfg: FinetuneConfig,
    seed: int,
    run: Path,
    progress: bool,
) -> torch.nn.Module:
    optim = OptimConfig(
        lr=cfg.lr, weight_decay=cfg.weight_decay, lr_decay=cfg.lr_decay, lr_decay_every=cfg.lr_decay_every
    )
    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed, optim=optim, select_by="last", progress=progress
    )
    trainer = Trainer(model, build_objective(objective), tcfg, run, make_collate(flip=True))
    trainer.fit(data, None, resume=(run / "state.pt").is_file())
    return model


def variant_objective(cfg: DemoConfig, variant: str) -> ObjectiveConfig:
    """The objective a demo variant fine-tunes with."""
    if variant == "cft":
        return cfg.finetune.objective
    if variant == "object-masks":
        return cfg.finetune.object_objective
    if variant == "no-guidance":
        return ObjectiveConfig(name="no-guidance", temperature=cfg.finetune.objective.temperature)
    try:
        return ObjectiveConfig(name=variant, **cfg.finetune.baseline_settings.get(variant, {}))
    except TypeError as err:
        raise CftError(f"demo config finetune.baseline_settings.{variant}: {err}") from None


def few_shot_set(
    cfg: DemoConfig,
    world: SyntheticWorld,
    pool,
    labels: np.ndarray,
    seed: int,
    concepts: dict[str, list[str]],
    segmenter: WorldSegmenter,
):
    """Seed `seed`'s few-shot images of the pool: (selection, samples, {"cft": concept masks, "object-masks": ...})."""
    f = cfg.finetune
    sel = select_few_shot(labels, f.per_class, f.class_fraction, seed, num_classes=len(world.classes))
    samples = [pool.sample(i) for i in sel.indices]
    masks = {
        "cft": concept_masks(samples, concepts, world.classes, segmenter),
        "object-masks": [s["object_mask"].astype(np.float32) for s in samples],
    }
    return sel, samples, masks


def finetune_variant(
    cfg: DemoConfig,
    world: SyntheticWorld,
    variant: str,
    state: dict[str, torch.Tensor],
    samples: list[dict],
    masks: dict[str, list[np.ndarray]],
    seed: int,
    run: Path,
    progress: bool,
) -> torch.nn.Module:
    """A copy of the original model (its `state`) fine-tuned as `variant` on the few-shot samples (resumable)."""
    model = cfg.model.create(len(world.classes), world.config.image_size)
    model.load_state_dict(state)
    objective = variant_objective(cfg, variant)
    mask = masks.get(variant, masks["object-masks"] if build_objective(objective).needs_mask else None)
    return finetune(model, ArrayDataset.from_samples(samples, mask), objective, cfg.finetune, seed, run, progress)


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


def run_demo(
    cfg: DemoConfig, out: str | Path, from_scratch: bool = False, progress: bool = True, log=print
) -> dict[str, Any]:
    """Run the demo; write results.json, report.md and figures under `out`; return the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(0)
    world = make_world(cfg)
    original, origin = original_model(cfg, out, from_scratch, progress)
    timings["original_model"] = time.perf_counter() - start
    log(f"original model: {origin}")

    t = time.perf_counter()
    concepts = world_concepts(world, cfg.concepts, out)
    log("concepts: " + "; ".join(f"{c}: {', '.join(v)}" for c, v in concepts.items()))
    timings["concepts"] = time.perf_counter() - t
    t = time.perf_counter()
    segmenter = WorldSegmenter(cfg.concepts.threshold, cfg.concepts.filters.text_model)
    pool = world.split("train", cfg.finetune.pool).materialize()
    labels, cues = pool.labels_and_cues()
    train_groups = {int(g): int(n) for g, n in zip(*np.unique(labels * 100 + cues, return_counts=True), strict=True)}
    tests = load_tests(world, concepts, cfg.evaluate, segmenter)
    timings["data"] = time.perf_counter() - t

    per_seed: dict[int, dict] = {}
    selections = {}
    models: dict[str, torch.nn.Module] = {"original": original}
    state = {k: v.clone() for k, v in original.state_dict().items()}
    t_eval = 0.0
    t_ft = 0.0
    for seed in cfg.seeds:
        sel, samples, masks = few_shot_set(cfg, world, pool, labels, seed, concepts, segmenter)
        selections[seed] = sel.to_dict()
        seen = set(sel.seen_classes)
        t = time.perf_counter()
        results = {"original": evaluate_model(original, tests, seen, cfg.evaluate, train_groups)}
        t_eval += time.perf_counter() - t
        for variant in (*VARIANTS[1:], *cfg.baselines):
            t = time.perf_counter()
            run = out / "runs" / f"seed{seed}" / f"{variant}-{run_key(cfg, origin, concepts, sel.to_dict())}"
            model = finetune_variant(cfg, world, variant, state, samples, masks, seed, run, progress)
            t_ft += time.perf_counter() - t
            t = time.perf_counter()
            results[variant] = evaluate_model(model, tests, seen, cfg.evaluate, train_groups)
            t_eval += time.perf_counter() - t
            models[variant] = model
            log(f"seed {seed} {variant}: " + ", ".join(f"{s} {results[variant][s]['top1']:.3f}" for s in TEST_SPLITS))
        per_seed[seed] = results
    timings["finetune"], timings["evaluate"] = t_ft, t_eval
    mean, std = mean_std(list(per_seed.values()))
    from cft.report import write_report

    timings["total"] = time.perf_counter() - start
    results = {
        "metrics": mean,
        "std": std,
        "diagnostics": diagnostics(mean),
        "per_seed": {str(s): r for s, r in per_seed.items()},
        "seeds": list(cfg.seeds),
        "selections": {str(s): v for s, v in selections.items()},
        "concepts": concepts,
        "original_model": origin,
        "timings": timings,
        "config": to_dict(cfg),
    }
    write_report(results, out, world, tests, models, concepts)
    write_json_atomic(out / "results.json", results)
    return results
