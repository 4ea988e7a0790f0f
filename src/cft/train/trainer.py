"""One training loop for pretraining and fine-tuning: AdamW, step decay, checkpoints, resume, best by val.

Deterministic on the CPU: the data order of epoch e comes from (seed, e), and the RNG state is saved with
every resumable checkpoint, so a resumed run ends with the same weights as an uninterrupted one.

Distributed (torchrun): every rank sees the same global batch order and takes its share of each batch
(positions rank, rank + W, ...). The loss and its gradient are computed on the plain module, never through
DistributedDataParallel: relevance maps take torch.autograd.grad inside the step, which DDP's reducer does not
expect. The gradients are then all-reduced by hand, each rank's weighted by its share of the global batch, so
every rank holds the gradient of the global-batch mean loss and takes the same optimizer step as one process
would on the whole batch. Rank 0 writes checkpoints, metrics and the resumable state; validation is sharded.
"""

from __future__ import annotations

import fnmatch
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from cft.distributed import Distributed, device_for
from cft.errors import CftError
from cft.io import atomic_path, json_text, remove_orphans, write_bytes_atomic
from cft.models import check_finite, read_state_dict, save_checkpoint
from cft.precision import AMP_MODES, autocast
from cft.progress import progress_bar
from cft.train.base import Objective

STATE_FILE = "state.pt"


@dataclass
class OptimConfig:
    lr: float = 5e-7
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "step"  # step: x lr_decay every lr_decay_every epochs | cosine: to 0 over the epochs
    lr_decay: float = 0.85  # multiply the learning rate by this ...
    lr_decay_every: int = 2  # ... every this many epochs
    warmup_epochs: int = 0  # linear warm-up from lr / 10 (0: none)
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    REMOVED: ClassVar[dict[str, str]] = {
        "num_workers": "the trainer batches its in-memory datasets itself and never used it",
        "log_every_steps": "the progress bar shows every step; it was never read",
    }

    epochs: int = 50
    batch_size: int = 8
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    select_by: str = "val_loss"  # val_loss (lowest) | val_top1 (highest) | last (the final epoch)
    eval_batch_size: int = 256
    save_every_steps: int = 0  # also save a resumable state every N steps (0: at epoch ends only)
    keep_epoch_checkpoints: bool = False
    progress: bool = True
    device: str = "auto"  # auto: cuda (this rank's LOCAL_RANK under torchrun) when available, else cpu
    amp: str = "auto"  # auto: bf16 autocast on CUDA devices that support it | bf16 | none
    # parameters trained, as fnmatch patterns of their names (e.g. "blocks.*.attn.*"); null: all. The others are
    # frozen (requires_grad off, not in the optimiser); each pattern must match at least one parameter
    trainable: list[str] | None = None


@dataclass
class FitResult:
    best_path: Path
    last_path: Path
    best_epoch: int
    best_value: float
    history: list[dict[str, Any]]


Collate = Callable[[list[Any]], dict[str, torch.Tensor]]


class Trainer:
    """Train `model` with `objective`; write checkpoints and metrics under `run_dir`."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        cfg: TrainConfig,
        run_dir: str | Path,
        collate: Collate,
        eval_collate: Collate | None = None,
    ) -> None:
        check_train_config(cfg)
        self.dist = Distributed.current()
        self.device = device_for(cfg.device, self.dist, what="train.device")
        model = model.to(self.device)
        self.dist.broadcast_parameters(model)
        self.model, self.objective, self.cfg = model, objective, cfg
        self.run_dir = Path(run_dir)
        self.collate, self.eval_collate = collate, eval_collate or collate
        o = cfg.optim
        params = trainable_parameters(model, cfg.trainable)
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.history: list[dict[str, Any]] = []
        self.epoch_sums: dict[str, float] = {}  # this epoch's running sums of the logged terms (this rank's)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_value = math.inf if cfg.select_by == "val_loss" else -math.inf
        self.best_epoch = -1
        self._writer = _tensorboard(self.run_dir) if self.dist.rank == 0 else None

    def _lr_factor(self, epoch: int) -> float:
        o = self.cfg.optim
        if o.schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * epoch / self.cfg.epochs))
        else:
            factor = o.lr_decay ** (epoch // max(o.lr_decay_every, 1))
        if o.warmup_epochs and epoch < o.warmup_epochs:
            factor *= 0.1 + 0.9 * epoch / o.warmup_epochs
        return factor

    # ---- the loop -------------------------------------------------------------------------------------
    def fit(
        self,
        train_set: Dataset,
        val_set: Dataset | None,
        resume: bool = False,
        before_training: Callable[[], None] | None = None,
    ) -> FitResult:
        """Train to cfg.epochs. `before_training` runs once the run folder is ready and, when resuming, the saved
        state has loaded: a failed resume leaves the folder as it was."""
        check_run_dir(self.run_dir, resume)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.rank == 0:
            remove_orphans(self.run_dir)  # a killed write's temporary file; only rank 0 writes here
        if resume:
            self._load_state()
            if self.epoch >= self.cfg.epochs:
                self._check_checkpoints()
        if before_training is not None:
            before_training()
        while self.epoch < self.cfg.epochs:
            record = self._train_epoch(train_set)
            if val_set is not None:
                record.update({f"val_{k}": v for k, v in self.evaluate(val_set).items()})
            self._end_epoch(record)
        return FitResult(
            self.run_dir / "best.safetensors",
            self.run_dir / "last.safetensors",
            self.best_epoch,
            self.best_value,
            self.history,
        )

    def _train_epoch(self, train_set: Dataset) -> dict[str, Any]:
        self.model.train()
        if hasattr(train_set, "set_epoch"):  # a stream of fresh samples: each epoch its own
            train_set.set_epoch(self.epoch)
        order = _epoch_order(len(train_set), self.cfg.seed, self.epoch)
        batches = list(_chunks(order, self.cfg.batch_size))
        if self.step_in_epoch == 0:
            torch.manual_seed(_mix(self.cfg.seed, self.epoch) + self.dist.rank)
            self.epoch_sums = {}
        sums = self.epoch_sums  # kept in the saved state: a resumed epoch logs the whole epoch's averages
        start = time.perf_counter()
        bar = _progress(len(batches), self.step_in_epoch, f"epoch {self.epoch + 1}/{self.cfg.epochs}", self.cfg)
        bar = bar if self.dist.rank == 0 else None
        for index in range(self.step_in_epoch, len(batches)):
            self._step(train_set, batches[index], sums)
            self.step_in_epoch, self.global_step = index + 1, self.global_step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / max(sums['_n'], 1):.4f}")
            if self.cfg.save_every_steps and self.global_step % self.cfg.save_every_steps == 0:
                self._save_state()
        if bar is not None:
            bar.close()
        sums = self.dist.sum_dict(sums)
        seen = sums.pop("_n", 0.0)
        correct = sums.pop("_correct", 0.0)
        record = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
        record.update(epoch=self.epoch + 1, train_top1=correct / max(seen, 1), lr=self.optimizer.param_groups[0]["lr"])
        record["train_seconds"] = time.perf_counter() - start
        return record

    def _step(self, train_set: Dataset, global_batch: list[int], sums: dict[str, float]) -> None:
        """One optimizer step on this rank's share of `global_batch`, gradients averaged over the whole batch."""
        mine = global_batch[self.dist.rank :: self.dist.world_size]
        self.optimizer.zero_grad(set_to_none=True)
        if mine:
            batch = self._to_device(self.collate([train_set[i] for i in mine]))
            with self._autocast():
                out = self.objective(self.model, batch)
            self._check_finite(out.terms["loss"])
            (out.terms["loss"] * (len(mine) / len(global_batch) * self.dist.world_size)).backward()
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(mine)
            sums["_correct"] = sums.get("_correct", 0.0) + int((out.logits.detach().argmax(1) == batch["label"]).sum())
            sums["_n"] = sums.get("_n", 0.0) + len(mine)
        self.dist.average_gradients(self.model)
        if self.cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()

    def _check_checkpoints(self) -> None:
        """A finished run that is resumed: its checkpoints must be readable, else say which one is damaged."""
        best = self.run_dir / "best.safetensors"  # a run validated on nothing may have none
        for path in [self.run_dir / "last.safetensors", *([best] if best.exists() else [])]:
            try:
                read_state_dict(path)
            except CftError as err:
                raise CftError(f"the finished run's checkpoint is damaged: {err}") from None

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop at the first non-finite loss, before it reaches the weights (the last saved epoch is kept)."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise CftError(
                f"the training loss is {value} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; nothing of "
                f"this step was applied and {self.run_dir} keeps the last finished epoch. Lower train.optim.lr, set "
                "train.optim.grad_clip, or train without bf16 (train.amp=none)"
            )

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _autocast(self):
        return autocast(self.device, self.cfg.amp)

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """The objective's terms (no update) and top-1 on `dataset`, in eval mode (sharded across ranks)."""
        self.model.eval()
        sums: dict[str, float] = {"_correct": 0.0}
        mine = list(range(len(dataset)))[self.dist.rank :: self.dist.world_size]
        for idx in _chunks(mine, self.cfg.eval_batch_size):
            batch = self._to_device(self.eval_collate([dataset[i] for i in idx]))
            with self._autocast():
                out = self.objective(self.model, batch)
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
            sums["_correct"] += int((out.logits.detach().argmax(1) == batch["label"]).sum())
        sums = self.dist.sum_dict(sums)
        n = max(len(dataset), 1)
        correct = sums.pop("_correct")
        return {**{k: v / n for k, v in sums.items()}, "top1": correct / n}

    def _end_epoch(self, record: dict[str, Any]) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.scheduler.step()
        lower = self.cfg.select_by == "val_loss"
        value = record.get(f"val_{'loss' if lower else 'top1'}")
        if value is None or self.cfg.select_by == "last":  # the latest epoch is the best
            value = -self.epoch if lower else self.epoch
        better = value < self.best_value if lower else value > self.best_value
        if better:
            self.best_value, self.best_epoch = float(value), self.epoch
        record["best_epoch"] = self.best_epoch
        self.history.append(record)
        if self.dist.rank == 0:
            save_checkpoint(self.model, self.run_dir / "last.safetensors", {"epoch": str(self.epoch)})
            if self.cfg.keep_epoch_checkpoints:
                save_checkpoint(self.model, self.run_dir / f"epoch_{self.epoch:03d}.safetensors")
            if better:
                save_checkpoint(self.model, self.run_dir / "best.safetensors", {"epoch": str(self.epoch)})
        self._save_state()  # before the metrics line: a logged epoch is always one --resume starts after
        if self.dist.rank == 0:
            self._log(record)

    # ---- persistence ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "rng": torch.get_rng_state(),
            "history": json.dumps(self.history),
        }

    def _save_state(self) -> None:
        rngs = self.dist.gather(torch.get_rng_state())  # every rank's, so a resumed job draws the same flips
        sums = self.dist.gather(json.dumps(self.epoch_sums))  # and every rank's running sums of this epoch
        if self.dist.rank == 0:
            state = self._state()
            state["epoch_sums_ranks"] = json.dumps(sums)
            if self.dist.world_size > 1:
                state["rng_ranks"] = rngs
            buffer = io.BytesIO()  # serialised first: a full disk is then an OSError, not torch's "enforce fail",
            torch.save(state, buffer)  # and the previous state file stays whole
            write_bytes_atomic(self.run_dir / STATE_FILE, buffer.getvalue())
        self.dist.barrier()  # no rank runs ahead of a state it may have to resume from

    def _load_state(self) -> None:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            raise CftError(f"nothing to resume: {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise CftError(f"cannot resume from {path} ({type(err).__name__}: {err})") from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            check_finite(state["model"], f"the training state {path}")
        try:
            self.model.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CftError(f"cannot resume from {path}: it does not fit this model and optimiser ({err})") from None
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.history = json.loads(state["history"])
        if self.dist.rank == 0:  # the saved epochs' lines, also when an interrupt came between state and log
            with atomic_path(self.run_dir / "metrics.jsonl") as tmp:
                tmp.write_text("".join(json_text(record) + "\n" for record in self.history))
        sums = json.loads(state.get("epoch_sums_ranks", "[]"))
        self.epoch_sums = json.loads(sums[self.dist.rank]) if len(sums) == self.dist.world_size else {}
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            torch.set_rng_state(ranks[self.dist.rank])
        else:
            torch.set_rng_state(state["rng"])

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json_text(record) + "\n")
        if self._writer is not None:
            for k, v in record.items():
                if isinstance(v, int | float):
                    self._writer.add_scalar(k, v, record["epoch"])
            self._writer.flush()


def trainable_parameters(model: nn.Module, patterns: Sequence[str] | None) -> list[nn.Parameter]:
    """The parameters whose names match any of `patterns` (all: None); the others get requires_grad off."""
    if patterns is None:
        return list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
    if unmatched:
        raise CftError(
            f"train.trainable: {', '.join(map(repr, unmatched))} match(es) no parameter of the model; its "
            f"parameters are named like {', '.join(names[:3])}, ..., {names[-1]}"
        )
    chosen = []
    for name, param in model.named_parameters():
        keep = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        param.requires_grad_(keep)
        if keep:
            chosen.append(param)
    return chosen


def check_train_config(cfg: TrainConfig) -> None:
    if cfg.select_by not in ("val_loss", "val_top1", "last"):
        raise CftError(f"train.select_by must be val_loss, val_top1 or last, got {cfg.select_by!r}")
    if cfg.optim.schedule not in ("step", "cosine"):
        raise CftError(f"train.optim.schedule must be step or cosine, got {cfg.optim.schedule!r}")
    if cfg.amp not in AMP_MODES:
        raise CftError(f"train.amp must be auto, bf16 or none, got {cfg.amp!r}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise CftError(f"train.epochs and train.batch_size must be >= 1, got {cfg.epochs}, {cfg.batch_size}")
    check_optim(cfg.optim)
    if cfg.device != "auto":
        device_for(cfg.device, Distributed(), what="train.device")  # a device that exists, before any work


def check_optim(optim: OptimConfig, where: str = "train.optim") -> None:
    """Every optimiser field in range, each error naming the field (`where` is how the caller spells it)."""
    checks = [
        ("lr", math.isfinite(optim.lr) and optim.lr > 0, "a finite number > 0"),
        ("weight_decay", math.isfinite(optim.weight_decay) and optim.weight_decay >= 0, "a finite number >= 0"),
        ("betas", len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas), "two numbers in [0, 1)"),
        ("lr_decay", math.isfinite(optim.lr_decay) and 0 < optim.lr_decay <= 1, "in (0, 1]"),
        ("lr_decay_every", optim.lr_decay_every >= 1, "an integer >= 1"),
        ("warmup_epochs", optim.warmup_epochs >= 0, "an integer >= 0"),
        ("grad_clip", optim.grad_clip is None or (math.isfinite(optim.grad_clip) and optim.grad_clip > 0), "> 0"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise CftError(f"{where}.{name} must be {expected}, got {getattr(optim, name)!r}")


def check_run_dir(run_dir: str | Path, resume: bool) -> None:
    """A new run needs a folder without one; a resumed run needs the saved state of one."""
    state = Path(run_dir) / STATE_FILE
    if resume and not state.is_file():
        raise CftError(f"nothing to resume: {state} does not exist")
    if not resume and state.exists():
        raise CftError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out")


def _mix(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(n, generator=g).tolist()


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _progress(total: int, initial: int, desc: str, cfg: TrainConfig):
    return progress_bar(total, desc, unit="step", enabled=cfg.progress, initial=initial, leave=False)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSONL only
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
