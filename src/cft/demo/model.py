"""The demo's original model: the shipped world ViTs (found by the config they were made with) or one pretrained
from scratch on fresh world samples, each pretraining stage a `cft finetune` recipe (`data.fresh_samples`) that
`run_finetune` runs from the previous stage's last checkpoint."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from cft.config import to_dict
from cft.demo.config import DemoConfig, make_world
from cft.errors import CftError
from cft.models import load_checkpoint, save_checkpoint
from cft.train.model import WORLD_VIT
from cft.train.recipe import FinetuneRecipe, recipe_from_dict, run_finetune
from cft.train.trainer import STATE_FILE

SHIPPED_MODELS = "world_vit*.safetensors"  # in cft/assets: each records the model_key it was made with


# ---- the original model ----------------------------------------------------------------------------------
def model_key(cfg: DemoConfig) -> str:
    """A hash of everything that determines the pretrained model."""
    payload = json.dumps(
        {"world": cfg.world, "model": to_dict(cfg.model), "pretrain": to_dict(cfg.pretrain)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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


def pretrain_recipe(cfg: DemoConfig, k: int, checkpoint: Path | None) -> FinetuneRecipe:
    """The `cft finetune` recipe of pretraining stage `k`: erm on fresh samples of the demo's world with the stage's
    world fields changed (images / epochs new ones each epoch, from sample (k + 1) * PRETRAIN_OFFSET on, so no stage
    sees another's), validated on the world's val split, starting from `checkpoint` (the previous stage's weights)."""
    p, stage = cfg.pretrain, cfg.pretrain.stages[k]
    data: dict[str, Any] = {
        "source": "world",
        "world": {**cfg.world, **stage.world},
        "train_split": "train",
        "n_train": max(stage.images // max(stage.epochs, 1), 1),  # images per epoch
        "fresh_samples": True,
        "first_sample": (k + 1) * PRETRAIN_OFFSET,
        "val_split": "val",
        "n_val": p.n_val,
        "few_shot": None,
        "masks": "none",
        "flip": True,
    }
    optim = {
        "lr": stage.lr,
        "weight_decay": p.weight_decay,
        "schedule": stage.schedule,
        "lr_decay": stage.lr_decay,
        "lr_decay_every": 1,
        "warmup_epochs": stage.warmup_epochs,
    }
    train = {
        "epochs": stage.epochs,
        "batch_size": p.batch_size,
        "seed": p.seed + k,
        "select_by": "last",
        "optim": optim,
    }
    model = {"name": WORLD_VIT, "checkpoint": None if checkpoint is None else str(checkpoint), **to_dict(cfg.model)}
    try:
        return recipe_from_dict({"model": model, "data": data, "objective": {"name": "erm"}, "train": train})
    except CftError as err:
        raise CftError(f"demo config pretrain.stages[{k}]: {err}") from None


def pretrain(cfg: DemoConfig, out: Path, progress: bool = True) -> Path:
    """Train the original model from scratch, stage by stage, each stage's recipe run by `run_finetune` in
    OUT/stage<k> from the previous stage's last checkpoint; returns its safetensors path (resumable). The first stage
    starts from the weights the model is created with here, by torch's global RNG as it stands (run_demo seeds it):
    OUT/initial.safetensors (a resumed first stage reads its saved state instead)."""
    world = make_world(cfg).config
    model = cfg.model.create(world.num_classes, world.image_size)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "initial.safetensors"
    if not (out / "stage1" / STATE_FILE).is_file():
        save_checkpoint(model, checkpoint)
    for k in range(len(cfg.pretrain.stages)):
        run = out / f"stage{k + 1}"
        result = run_finetune(
            pretrain_recipe(cfg, k, checkpoint), run, resume=(run / STATE_FILE).is_file(), progress=progress
        )
        checkpoint = result.last_path
    path = out / "original.safetensors"
    save_checkpoint(load_checkpoint(model, checkpoint), path, {"model_key": model_key(cfg)})
    return path


def original_model(cfg: DemoConfig, out: Path, from_scratch: bool, progress: bool) -> tuple[torch.nn.Module, str, Path]:
    """The original model, how it was made, and its checkpoint (shipped, or pretrained under OUT/pretrain)."""
    world = make_world(cfg).config
    model = cfg.model.create(world.num_classes, world.image_size)
    if not from_scratch:
        shipped = shipped_models().get(model_key(cfg))
        if shipped is None:
            raise CftError(
                "no shipped world model was trained with this world/model/pretrain config; "
                "run `cft demo --from-scratch` to pretrain one for it"
            )
        return load_checkpoint(model, shipped), f"shipped ({shipped.name})", shipped
    path = pretrain(cfg, out / "pretrain", progress)
    return load_checkpoint(model, path), "pretrained from scratch", path
