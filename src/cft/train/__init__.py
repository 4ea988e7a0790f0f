"""Fine-tuning: the objectives (a registry by name, filled by the modules imported here) and the one trainer."""

from cft.train.base import OBJECTIVES, Objective, ObjectiveConfig, StepOutput, build_objective, register_objective

# registration order is the order every message lists the objectives in
# isort: off
from cft.train.objectives import Classification, ConsistencyOnly, RelevanceGuided
from cft.train.baselines import RRDA, RRR, GradMask

# isort: on
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
    "register_objective",
    "run_finetune",
]
