"""Fine-tuning: the objectives and the one trainer."""

from cft.train.objectives import (
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
    "Classification",
    "ConsistencyOnly",
    "FinetuneRecipe",
    "FitResult",
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
