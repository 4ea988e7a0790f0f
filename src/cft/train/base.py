"""What every training objective shares: its step output, its protocol, its settings and the registry by name.

Objectives register a builder (settings -> Objective) under their name, with the dataclass of the settings it
reads (`@register_objective("rrr", settings=RRRSettings)`); `ObjectiveConfig` is their common base (just `name`).
A recipe's `objective:` section stays flat: `from_dict(ObjectiveConfig, {"name": "rrr", ...})` picks the
dataclass by `name`, and a key that belongs to another objective is an error naming the field and its owners.
`build_objective` checks the settings and calls the builder. The objectives live in `cft.train.objectives` (erm,
cft, no-guidance, robustvit) and `cft.train.baselines` (rrr, gradmask, rrda); both import this module, never each
other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from cft.config import from_dict
from cft.errors import CftError
from cft.registry import SettingsRegistry

# the consistency term's target: the model's own argmax (the paper), the label, or the original model's prediction
CLS_TARGETS = ("self", "label", "original")


@dataclass
class StepOutput:
    terms: dict[str, torch.Tensor]  # "loss" is the total that is minimised
    logits: torch.Tensor


class Objective(Protocol):
    needs_mask: bool

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput: ...


@dataclass
class ObjectiveConfig:
    """Which objective (`name`); the base of every objective's settings dataclass, which adds the fields that
    objective reads. `objective_config(name, **settings)` builds the right one; `from_dict(ObjectiveConfig, data)`
    picks it by `data["name"]` (default cft, the paper's CFT settings). A plug-in objective registered without a
    settings dataclass gets this one: `name` alone."""

    name: str = "cft"

    @classmethod
    def config_variant(cls, data: dict[str, Any], where: str) -> type:
        """The settings dataclass of the objective `data["name"]` names (for `cft.config.from_dict`)."""
        return OBJECTIVES.settings_of(data, where, "name", _default_name(cls)) or cls

    def check(self) -> None:
        """Checks that span fields or need the registries (each error names the objective.* field)."""


def _default_name(cls: type) -> str:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "name")


def check_weights(cfg: Any, names: tuple[str, ...]) -> None:
    """Each of these weights (None allowed) is a finite number >= 0."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise CftError(f"objective.{name} must be a finite number >= 0, got {value}")


def check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise CftError(f"objective.temperature must be > 0, got {temperature}")


ObjectiveBuilder = Callable[[Any], Objective]  # (its settings dataclass) -> Objective
# filled by the modules that define objectives, each with its settings dataclass
OBJECTIVES: SettingsRegistry[ObjectiveBuilder] = SettingsRegistry("objective", ObjectiveConfig, ObjectiveConfig)


def register_objective(
    name: str, description: str | None = None, settings: type[ObjectiveConfig] | None = None
) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Decorator: register a builder (settings -> Objective) as the objective `name`; description: one line for
    `cft ls objectives` (None: the builder's docstring); settings: the dataclass of the settings it reads, a
    subclass of ObjectiveConfig whose `name` defaults to `name` (None: ObjectiveConfig, the name alone)."""
    return lambda builder: OBJECTIVES.add(name, builder, description, settings)


def settings_class(name: str) -> type[ObjectiveConfig]:
    """The settings dataclass of the registered objective `name`."""
    return OBJECTIVES.settings(name, "objective.name")


def objective_config(name: str, where: str = "objective", **settings: Any) -> ObjectiveConfig:
    """The settings of objective `name` from plain values, checked as a recipe's `objective:` section is."""
    return from_dict(ObjectiveConfig, {"name": name, **settings}, where)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective `cfg.name` with its settings; a bad value raises CftError naming the objective.* field.
    A bare ObjectiveConfig(name=...) gets that objective's default settings."""
    cls = settings_class(cfg.name)
    if type(cfg) is not cls:
        if type(cfg) is not ObjectiveConfig:
            raise CftError(
                f"objective {cfg.name!r} reads {cls.__name__}, not {type(cfg).__name__}; build its settings with "
                f"objective_config({cfg.name!r}, ...)"
            )
        cfg = cls(name=cfg.name)
    cfg.check()
    return OBJECTIVES[cfg.name](cfg)
