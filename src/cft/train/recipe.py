"""`cft finetune`: one recipe (YAML + `key.sub=value` overrides) for training from scratch and CFT fine-tuning.

recipe = load_recipe("world-cft", ["train.epochs=10"])  # a packaged recipe, or a path
result = run_finetune(recipe, "runs/cft")   # OUT/config.yaml, split.json, metrics.jsonl, best/last.safetensors

This module loads, checks, resumes and runs a recipe. Its sections belong to their components: `model` to
`cft.train.model`, `data` to the data source `data.source` names (`cft.train.sources`: each source's section adds its
own fields to the common ones), `objective` to the objective `objective.name` names (`cft.train.base`), `train` to
the trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cft.config import from_dict, load_config_data, load_yaml, save_config, to_dict
from cft.distributed import Distributed
from cft.errors import CftError
from cft.io import exclusive_folder, write_json_atomic
from cft.train.base import ObjectiveConfig, build_objective
from cft.train.model import WORLD_VIT, ModelSection, build_model
from cft.train.objectives import CFTSettings
from cft.train.sources import (
    DATA_SOURCES,
    DataSection,
    SourceData,
    WorldSection,
    register_data_source,
    section_class,
)
from cft.train.sources.decoy import DecoySection
from cft.train.trainer import FitResult, TrainConfig, Trainer, check_run_dir, check_train_config

# the names plug-ins written before the sources had their own modules import from here
__all__ = [
    "DATA_SOURCES",
    "WORLD_VIT",
    "FinetuneRecipe",
    "SourceData",
    "build_model",
    "check_recipe",
    "load_recipe",
    "recipe_from_dict",
    "register_data_source",
    "resume_conflicts",
    "run_finetune",
]

# Fields that may change between a run and its --resume: they do not change what is trained on or how.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.progress",
    "train.eval_batch_size",
    "train.save_every_steps",
)


@dataclass
class FinetuneRecipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=WorldSection)  # the section of data.source's source
    objective: ObjectiveConfig = field(default_factory=CFTSettings)  # the settings of objective.name's objective
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(FinetuneRecipe))


def recipe_from_dict(data: dict[str, Any] | None) -> FinetuneRecipe:
    """Build and check a recipe; errors name the field as it is written in YAML or --set (e.g. data.masks)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise CftError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise CftError(f"unknown section(s) {', '.join(unknown)} in the recipe; known: {', '.join(SECTIONS)}")
    hints = typing.get_type_hints(FinetuneRecipe)
    sections = {name: from_dict(hints[name], data.get(name), where=name) for name in SECTIONS}
    recipe = FinetuneRecipe(**sections)
    check_recipe(recipe)
    return recipe


def load_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> FinetuneRecipe:
    """The recipe file or packaged recipe (if any) with `key.sub=value` overrides on top."""
    return recipe_from_dict(load_config_data(path, overrides, kind="finetune"))


def check_recipe(recipe: FinetuneRecipe) -> None:
    """Checks that span fields (types were checked when the recipe was read)."""
    m, d = recipe.model, recipe.data
    section = section_class(d.source)  # a registered source
    if type(d) is not section:
        raise CftError(f"data.source {d.source!r} reads {section.__name__}, not {type(d).__name__}")
    check_train_config(recipe.train)
    objective = build_objective(recipe.objective)  # checks objective.*
    anchors = d.anchor_images if isinstance(d, DecoySection) else 0
    if anchors and (anchors < 0 or d.few_shot is None or getattr(recipe.objective, "cls_target", None) != "original"):
        raise CftError(
            f"data.anchor_images={anchors}: anchor images are for data.source=decoy with few_shot and "
            "objective.cls_target=original (the KL to the original model is taken on them); set it to 0 otherwise"
        )
    if objective.needs_mask and isinstance(d, WorldSection) and d.fresh_samples:
        raise CftError(
            f"objective {recipe.objective.name!r} is guided by masks but data.fresh_samples streams images without "
            "them; set data.fresh_samples=false (or use objective.name=erm / no-guidance)"
        )
    if objective.needs_mask and d.masks == "none":
        raise CftError(
            f"objective {recipe.objective.name!r} is guided by masks but data.masks is 'none'; "
            "set data.masks to concepts or object (or use objective.name=erm / no-guidance)"
        )
    m.check()
    d.check()  # data.* (data.world.*, data.decoy.*, the disk fields: the source's section)


# ---- the run ---------------------------------------------------------------------------------------------
def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and k != "kwargs" and k != "world":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resume(recipe: FinetuneRecipe, path: Path) -> None:
    """A resumed run must train on the same data with the same model and objective as the run it continues."""
    changed = resume_conflicts(recipe, path)
    if changed:
        raise CftError(
            f"--resume with a recipe that differs from the run's {path} in {', '.join(changed)}; "
            "only train.epochs (and logging fields) may change when resuming"
        )


def resume_conflicts(recipe: FinetuneRecipe, path: Path) -> list[str]:
    """The fields (e.g. `train.optim.lr`) in which `recipe` differs from the run recipe saved at `path`, except
    those a resumed run may change (RESUMABLE_CHANGES); empty: the run can be resumed with `recipe`. A field the
    saved recipe lacks (added since) counts as its default; a saved field the recipe's objective or data source
    does not have (another one's, or one removed since) is never read, so it cannot differ."""
    if not path.is_file():
        return []
    saved = load_yaml(path.read_text(), f"the saved recipe {path}") or {}
    saved = _flat({k: v for k, v in saved.items() if k != "kind"} if isinstance(saved, dict) else {})
    now = _flat(to_dict(recipe))
    defaults = _flat(to_dict(FinetuneRecipe(**{s: _defaults_of(getattr(recipe, s)) for s in SECTIONS})))
    fields = {f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(recipe, s))}
    return sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUMABLE_CHANGES
        and ".".join(k.split(".")[:2]) in fields
        and (saved[k] if k in saved else defaults.get(k)) != now.get(k)
    )


def _defaults_of(section: Any) -> Any:
    """A section of the same dataclass (the same objective, the same data source) at its defaults."""
    try:
        return type(section)()
    except TypeError:  # a plug-in's dataclass with required fields: no defaults to compare with
        return section


def run_finetune(recipe: FinetuneRecipe, out_dir: str | Path, resume: bool = False, progress: bool = True) -> FitResult:
    """Train as `recipe` says; write OUT/config.yaml (and split.json) first, then checkpoints and metrics."""
    out = Path(out_dir)
    check_recipe(recipe)
    first = Distributed.current().rank == 0  # under torchrun rank 0 holds the folder's lock for the job
    with exclusive_folder(out, "--out") if first else contextlib.nullcontext():
        return _run_finetune(recipe, out, resume, progress)


def _run_finetune(recipe: FinetuneRecipe, out: Path, resume: bool, progress: bool) -> FitResult:
    check_run_dir(out, resume)  # before anything is built or written
    if resume:
        _check_resume(recipe, out / "config.yaml")
    objective = build_objective(recipe.objective)
    tcfg = dataclasses.replace(recipe.train, progress=recipe.train.progress and progress)
    torch.manual_seed(recipe.train.seed)  # the initial weights of a model trained from scratch
    source = DATA_SOURCES[recipe.data.source](recipe, objective.needs_mask, out)
    if getattr(objective, "wants_reference", False):
        objective.bind_reference(source.model)  # the starting weights (a resumed state loads after this)
    trainer = Trainer(source.model, objective, tcfg, out, source.collate, source.eval_collate)

    def write_run_files() -> None:  # after a resumed state has loaded: a failed --resume changes nothing
        save_config(recipe, out / "config.yaml", kind="finetune")
        selection, classes = source.selection, source.classes
        if selection is not None:
            split = {
                **selection.to_dict(),
                "seen_class_names": [classes[c] for c in selection.seen_classes],
                "unseen_class_names": [classes[c] for c in selection.unseen_classes],
                **source.where,
            }
            write_json_atomic(out / "split.json", split)

    return trainer.fit(source.train, source.val, resume=resume, before_training=write_run_files)
