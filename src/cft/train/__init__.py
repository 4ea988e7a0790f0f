"""Fine-tuning: the objectives (a registry by name, filled by the modules imported here) and the one trainer."""

from cft.train.base import (
    OBJECTIVES,
    Objective,
    ObjectiveConfig,
    StepOutput,
    build_objective,
    objective_config,
    register_objective,
    settings_class,
)

# registration order is the order every message lists the objectives in
# isort: off
from cft.train.objectives import (
    CFTSettings,
    Classification,
    ConsistencyOnly,
    ConsistencySettings,
    ERMSettings,
    RelevanceGuided,
    RelevanceSettings,
)
from cft.train.baselines import RRDA, RRR, GradMask, GradMaskSettings, InputGradientSettings, RRDASettings, RRRSettings

# isort: on
from cft.train.recipe import FinetuneRecipe, load_recipe, run_finetune
from cft.train.trainer import FitResult, OptimConfig, TrainConfig, Trainer

__all__ = [
    "OBJECTIVES",
    "RRDA",
    "RRR",
    "CFTSettings",
    "Classification",
    "ConsistencyOnly",
    "ConsistencySettings",
    "ERMSettings",
    "FinetuneRecipe",
    "FitResult",
    "GradMask",
    "GradMaskSettings",
    "InputGradientSettings",
    "Objective",
    "ObjectiveConfig",
    "OptimConfig",
    "RRDASettings",
    "RRRSettings",
    "RelevanceGuided",
    "RelevanceSettings",
    "StepOutput",
    "TrainConfig",
    "Trainer",
    "build_objective",
    "load_recipe",
    "objective_config",
    "register_objective",
    "run_finetune",
    "settings_class",
]
