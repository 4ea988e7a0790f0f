"""Fine-tuning: the objectives and the one trainer."""

from cft.train.baselines import RRDA, RRR, GradMask
from cft.train.objectives import (
    OBJECTIVES,
    Classification,
    ConsistencyOnly,
    Objective,
    ObjectiveConfig,
    RelevanceGuided,
    StepOutput,
    build_objective,
)
from cft.train.recipe import FinetuneRecipe, load_recipe, run_finetune
from cft.train.trainer import FitResult, OptimConfig, TrainConfig, Trainer

__all__ = [
    "OBJECTIVES",
    "RRDA",
    "RRR",
    "Classification",
    "ConsistencyOnly",
    "FinetuneRecipe",
    "FitResult",
    "GradMask",
    "Objective",
    "ObjectiveConfig",
    "OptimConfig",
    "RelevanceGuided",
    "StepOutput",
    "TrainConfig",
    "Trainer",
    "build_objective",
    "load_recipe",
    "run_finetune",
]
