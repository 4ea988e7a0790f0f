"""The demo's configuration: the world, the model, pretraining, concepts, fine-tuning and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cft.concepts.world import WorldConceptConfig
from cft.config import from_dict, merge
from cft.errors import CftError
from cft.train import OBJECTIVES, CFTSettings, ConsistencySettings, ObjectiveConfig, build_objective, objective_config
from cft.train.sources.world import make_world as build_world
from cft.train.trainer import OptimConfig, check_optim
from cft.world import SyntheticWorld
from cft.world.model import WorldModelConfig

VARIANTS = ("original", "cft", "object-masks", "no-guidance")

# the variants `variants:` may list: cft with the bank's concepts, cft with each class's part names
# (`part_concepts`), the object's mask under cft's loss, and fine-tuning without guidance
FINETUNED = ("cft", "cft-parts", "object-masks", "no-guidance")

# `cft demo --all-baselines`: every baseline objective of cft.train on the same images; all but erm are guided
# by the object's mask (RobustViT's MSE on relevance, RRR's and GradMask's input-gradient penalties, RRDA's pastes).
BASELINES = tuple(name for name in OBJECTIVES if name not in FINETUNED)  # erm, robustvit, rrr, gradmask, rrda

TEST_SPLITS = ("test-id", "test-ood", "test-flipped")

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
    # a variant's own learning rate, chosen on val like `lr` (variants not listed use `lr`); no-guidance: the best
    # val top-1 off the cue of 5e-5 .. 4e-4 (all within 1 point of val top-1), object-masks: 2e-4 like cft
    lrs: dict[str, float] = field(default_factory=lambda: {"no-guidance": 5e-5})
    objective: ObjectiveConfig = field(default_factory=CFTSettings)  # cft and cft-parts (flat, as a recipe's)
    object_objective: ObjectiveConfig = field(default_factory=CFTSettings)  # object-masks
    # each baseline's own settings (its objective's fields) for --all-baselines. The penalty weights were chosen on
    # val as lr was (scripts/tune_demo.py; rrr tried 1e-4 .. 1e4, gradmask 0.4 .. 4e5): none beat plain fine-tuning
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
    # the concepts of the cft-parts variant: each class's part names (no language model)
    part_concepts: WorldConceptConfig = field(default_factory=lambda: WorldConceptConfig(source="parts"))
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: ["cft", "object-masks", "no-guidance"])  # of FINETUNED
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
    bad = [v for v in cfg.variants if v not in FINETUNED]
    if bad or len(set(cfg.variants)) < len(cfg.variants):
        what = f"unknown variant(s) {', '.join(bad)}" if bad else "a variant listed twice"
        raise CftError(f"demo config variants: {what}; choose from {', '.join(FINETUNED)}")
    make_world(cfg)  # validate the world fields now
    if not cfg.seeds:
        raise CftError("demo config seeds must list at least one seed")
    f = cfg.finetune
    optim = OptimConfig(lr=f.lr, weight_decay=f.weight_decay, lr_decay=f.lr_decay, lr_decay_every=f.lr_decay_every)
    check_optim(optim, where="demo config finetune")
    for variant, lr in f.lrs.items():
        if variant not in (*FINETUNED, *BASELINES):
            raise CftError(
                f"demo config finetune.lrs.{variant}: not a variant; choose from {', '.join((*FINETUNED, *BASELINES))}"
            )
        check_optim(replace(optim, lr=lr), where=f"demo config finetune.lrs.{variant}")
    for name in ("epochs", "batch_size", "per_class", "pool"):
        if getattr(f, name) < 1:
            raise CftError(f"demo config finetune.{name} must be >= 1, got {getattr(f, name)}")
    if not 0 < f.class_fraction <= 1:
        raise CftError(f"demo config finetune.class_fraction must be in (0, 1], got {f.class_fraction}")
    for baseline in dict.fromkeys([*cfg.baselines, *f.baseline_settings]):
        build_objective(variant_objective(cfg, baseline))
    return cfg


def make_world(cfg: DemoConfig) -> SyntheticWorld:
    """The demo's world (built where every world is: cft.train.sources.world.make_world)."""
    return build_world(cfg.world, "demo config world")


# ---- fine-tuning and evaluation --------------------------------------------------------------------------
def fine_tuned_variants(cfg: DemoConfig) -> list[str]:
    """The variants a demo run fine-tunes, in order: `variants`, then `baselines`."""
    return [*cfg.variants, *cfg.baselines]


def variant_lr(cfg: DemoConfig, variant: str) -> float:
    """The learning rate a variant fine-tunes with: its own in `finetune.lrs`, else `finetune.lr`."""
    return cfg.finetune.lrs.get(variant, cfg.finetune.lr)


def variant_objective(cfg: DemoConfig, variant: str) -> ObjectiveConfig:
    """The objective a demo variant fine-tunes with."""
    if variant in ("cft", "cft-parts"):
        return cfg.finetune.objective
    if variant == "object-masks":
        return cfg.finetune.object_objective
    if variant == "no-guidance":  # cft's temperature (1.0 where finetune.objective's objective has none)
        return ConsistencySettings(temperature=getattr(cfg.finetune.objective, "temperature", 1.0))
    settings = cfg.finetune.baseline_settings.get(variant, {})
    if "name" in settings:
        raise CftError(
            f"demo config finetune.baseline_settings.{variant}.name: the baseline names its objective; delete it"
        )
    return objective_config(variant, f"demo config finetune.baseline_settings.{variant}", **settings)
