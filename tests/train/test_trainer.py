"""The trainer: learning, resume equality, best checkpoint, clear config errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import cft
from cft.config import load_config
from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective
from tests.helpers.models import tiny_vit
from tests.helpers.trainer import Blobs, collate, make_trainer


def test_erm_learns_and_writes_artifacts(tmp_path):
    trainer = make_trainer(tmp_path / "run", epochs=5)
    result = trainer.fit(Blobs(32), Blobs(16, seed=1))
    assert result.history[-1]["val_top1"] >= 0.5 > result.history[0]["val_top1"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_path.is_file() and result.last_path.is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4, 5]
    # the learning rate decays by 0.85 every epoch here
    assert result.history[1]["lr"] == pytest.approx(1e-3 * 0.85)


@pytest.mark.parametrize("objective", ["cft", "no-guidance"])
def test_guided_objectives_step(tmp_path, objective):
    trainer = make_trainer(tmp_path / objective, objective=objective, epochs=1)
    result = trainer.fit(Blobs(8), None)
    terms = {k for k in result.history[0] if k.startswith("train_")}
    expected = {"train_loss", "train_cls", "train_top1", "train_seconds"}
    if objective == "cft":
        expected |= {"train_concept", "train_non_concept", "train_align"}
    assert terms == expected


def _weights(path):
    return load_file(str(path))


@pytest.mark.parametrize("objective", ["erm", "cft"])
def test_resume_equals_uninterrupted(tmp_path, objective):
    full = make_trainer(tmp_path / "full", objective=objective, epochs=3, save_every_steps=3)
    full.fit(Blobs(20), Blobs(8, seed=1))

    class Killed(Exception):
        pass

    killed = make_trainer(tmp_path / "killed", objective=objective, epochs=3, save_every_steps=3)
    original_save = killed._save_state

    def save_then_die():
        original_save()
        if killed.global_step == 9:  # mid-epoch 2 (5 steps an epoch)
            raise Killed

    killed._save_state = save_then_die
    with pytest.raises(Killed):
        killed.fit(Blobs(20), Blobs(8, seed=1))
    resumed = make_trainer(tmp_path / "killed", objective=objective, epochs=3, save_every_steps=3)
    resumed.fit(Blobs(20), Blobs(8, seed=1), resume=True)
    a, b = _weights(tmp_path / "full" / "last.safetensors"), _weights(tmp_path / "killed" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # the resumed epoch logs the whole epoch's averages, as the uninterrupted run did (not only the last steps)
    logged = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    for want, got in zip(full.history, logged, strict=True):
        for key in ("train_loss", "train_top1", "val_loss"):
            assert got[key] == pytest.approx(want[key], abs=1e-7), (want["epoch"], key)


def test_interrupt_between_state_and_metrics_line_loses_no_line(tmp_path):
    """Killed right after an epoch's state is saved, before its metrics line: --resume writes the saved epochs'
    lines, so the log ends as the uninterrupted run's."""
    full = make_trainer(tmp_path / "full", epochs=3)
    full.fit(Blobs(8), Blobs(4, seed=1))

    class Killed(Exception):
        pass

    killed = make_trainer(tmp_path / "killed", epochs=3)
    original_save = killed._save_state

    def save_then_die():
        original_save()
        if killed.epoch == 2 and killed.step_in_epoch == 0:
            raise Killed

    killed._save_state = save_then_die
    with pytest.raises(Killed):
        killed.fit(Blobs(8), Blobs(4, seed=1))
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 1  # epoch 2's line is missing
    make_trainer(tmp_path / "killed", epochs=3).fit(Blobs(8), Blobs(4, seed=1), resume=True)
    want = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(got, want, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6) and a["epoch"] == b["epoch"]


def test_existing_run_needs_resume(tmp_path):
    make_trainer(tmp_path, epochs=1).fit(Blobs(4), None)
    with pytest.raises(cft.CftError, match="--resume"):
        make_trainer(tmp_path, epochs=1).fit(Blobs(4), None)
    with pytest.raises(cft.CftError, match="nothing to resume"):
        make_trainer(tmp_path / "empty", epochs=1).fit(Blobs(4), None, resume=True)


def test_bad_configs():
    with pytest.raises(cft.CftError, match="unknown key"):
        load_config(TrainConfig, overrides=["optim.learning_rate=1"])
    with pytest.raises(cft.CftError, match="train.epochs"):
        Trainer(tiny_vit(), build_objective(ObjectiveConfig()), TrainConfig(epochs=0), "/tmp/x", collate)
    with pytest.raises(cft.CftError, match="objective.name"):
        build_objective(ObjectiveConfig(name="magic"))
    with pytest.raises(cft.CftError, match="must be a number"):
        load_config(TrainConfig, overrides=["optim.lr=fast"])


def test_cosine_schedule_with_warmup(tmp_path):
    import math

    trainer = make_trainer(tmp_path, epochs=4, optim=OptimConfig(lr=1e-3, schedule="cosine", warmup_epochs=1))
    factors = [trainer._lr_factor(e) for e in range(4)]
    expected = [0.1, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    assert factors == pytest.approx(expected)


class Stream(Blobs):
    """Blobs whose items depend on the epoch the trainer announces (a stream of fresh samples)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_streams_hear_each_epoch_also_after_resume(tmp_path):
    stream = Stream(8)
    make_trainer(tmp_path / "a", epochs=2).fit(stream, None)
    assert stream.epochs == [0, 1]
    resumed = Stream(8)
    make_trainer(tmp_path / "a", epochs=3).fit(resumed, None, resume=True)
    assert resumed.epochs == [2]


def test_bad_schedule_is_named(tmp_path):
    with pytest.raises(cft.errors.CftError, match="train.optim.schedule"):
        make_trainer(tmp_path, optim=OptimConfig(schedule="linear"))


class _ExplodesAt:
    """erm whose loss becomes inf at the `at`-th call (1-based)."""

    needs_mask = False

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0
        self.inner = build_objective(ObjectiveConfig(name="erm"))

    def __call__(self, model, batch):
        self.calls += 1
        out = self.inner(model, batch)
        if self.calls == self.at:
            out.terms["loss"] = out.terms["loss"] * float("inf")
        return out


def test_a_non_finite_loss_stops_training_naming_epoch_and_step(tmp_path):
    """16 images, batch 4: the 7th step is epoch 2, step 3. Training stops there with a clear error, the weights
    stay those of the last step applied, and no checkpoint of the broken step is written."""
    trainer = make_trainer(tmp_path, epochs=3)
    trainer.objective = _ExplodesAt(7)
    with pytest.raises(cft.CftError, match=r"the training loss is inf at epoch 2, step 3") as err:
        trainer.fit(Blobs(16), None)
    assert "train.amp=none" in str(err.value)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert [r["epoch"] for r in trainer.history] == [1]
    assert (tmp_path / "last.safetensors").is_file()  # epoch 1, intact


def test_resume_removes_orphans_and_checks_a_finished_runs_checkpoints(tmp_path):
    """A temporary file a kill left behind is removed; resuming a finished run whose last.safetensors is damaged
    says so instead of reporting success."""
    make_trainer(tmp_path, epochs=1).fit(Blobs(8), None)
    orphan = tmp_path / ".last.safetensors.x1y2.tmp"
    orphan.write_bytes(b"half a checkpoint")
    make_trainer(tmp_path, epochs=1).fit(Blobs(8), None, resume=True)
    assert not orphan.exists()
    (tmp_path / "last.safetensors").write_bytes(b"damaged")
    with pytest.raises(cft.CftError, match="last.safetensors"):
        make_trainer(tmp_path, epochs=1).fit(Blobs(8), None, resume=True)
