"""The demo's original model: the shipped world ViTs (found by the config they were made with) or one pretrained
from scratch on fresh world samples."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch

from cft.config import to_dict
from cft.demo.config import DemoConfig, make_world
from cft.errors import CftError
from cft.models import load_checkpoint, save_checkpoint
from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective
from cft.world import SyntheticWorld
from cft.world.datasets import ArrayDataset, WorldStream, make_collate
from cft.world.world import world_config

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


def pretrain(cfg: DemoConfig, out: Path, progress: bool = True) -> Path:
    """Train the original model from scratch, stage by stage; returns its safetensors path (resumable)."""
    base = make_world(cfg).config
    classes = base.num_classes
    model = cfg.model.create(classes, base.image_size)
    path = out / "original.safetensors"
    for k, stage in enumerate(cfg.pretrain.stages):
        world = SyntheticWorld(world_config({**cfg.world, **stage.world}, f"demo config pretrain.stages[{k}].world"))
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
