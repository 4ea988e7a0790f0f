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
from cft.train.trainer import FitResult, OptimConfig, TrainConfig, Trainer

__all__ = [
    "Classification",
    "ConsistencyOnly",
    "FitResult",
    "Objective",
    "ObjectiveConfig",
    "OptimConfig",
    "RelevanceGuided",
    "StepOutput",
    "TrainConfig",
    "Trainer",
    "build_objective",
]
