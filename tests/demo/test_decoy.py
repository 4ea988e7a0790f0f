"""The decoy benchmark (`cft demo --data decoy`): the runner on a fake Fashion-MNIST tree, its seeds paired, the
shipped original model and the protocol a partial finetune section keeps (the data: tests/data/test_decoy.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cft.data.decoy import DecoyConfig, DecoySource, find_idx
from cft.errors import CftError
from tests.helpers.decoy import make_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "fmnist")


def test_benchmark_runs_and_pairs_seeds(tree, tmp_path):
    from cft.demo.decoy import decoy_bench_config, run_decoy_benchmark
    from cft.models import save_checkpoint
    from cft.world.model import WorldModelConfig

    model_cfg = {"depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 4}
    torch.manual_seed(0)
    ckpt = save_checkpoint(WorldModelConfig(**model_cfg).create(10, 28), tmp_path / "orig.safetensors")
    cfg = decoy_bench_config(
        {
            "decoy": {"root": str(tree), "n_val": 20},
            "checkpoint": str(ckpt),
            "model": model_cfg,
            "seeds": [0, 1],
            "phase": "val",
            "n_relevance": 8,
            "finetune": {"data": {"n_train": 100}, "train": {"epochs": 2, "progress": False}},
            "variants": {"cft-anchored": {"data": {"anchor_images": 20}}},  # the tiny pool holds 90 others
            "epoch_trace": 1,
        }
    )
    results = run_decoy_benchmark(cfg, tmp_path / "bench", progress=False, log=lambda *_: None)
    m = results["metrics"]
    assert set(m) == {"original", "cft", "no-guidance", "cft-paper-lr", "cft-anchored"}
    (run,) = (tmp_path / "bench" / "runs" / "seed0").glob("cft-anchored-*")
    anchored = yaml.safe_load((run / "config.yaml").read_text())
    assert anchored["data"]["anchor_images"] == 20  # merged over the default variant
    assert anchored["objective"]["cls_target"] == "original" and anchored["objective"]["anchor_weight"] == 5.0
    assert set(m["cft"]) == {"val", "val-ood", "val-neutral"}
    o = m["original"]["val-ood"]
    assert 0 <= o["follow_decoy"] <= 1 and 0 <= o["relevance_share_decoy"] <= 1
    paired = results["paired"]["cft"]["vs no-guidance"]["val-ood"]
    per_seed = [r["cft"]["val-ood"]["top1"] - r["no-guidance"]["val-ood"]["top1"] for r in results["per_seed"].values()]
    assert paired["mean"] == pytest.approx(np.mean(per_seed)) and paired["n"] == 2
    assert paired["half_width"] == pytest.approx(12.706 * np.std(per_seed, ddof=1) / np.sqrt(2), rel=1e-3)
    assert [r["epoch"] for r in results["epoch_trace"]["cft"]["0"]] == [1, 2]
    assert (tmp_path / "bench" / "report.md").read_text().startswith("# Decoy benchmark report")
    again = run_decoy_benchmark(cfg, tmp_path / "bench", progress=False, log=lambda *_: None)  # runs are reused
    assert again["metrics"]["cft"]["val-ood"]["top1"] == m["cft"]["val-ood"]["top1"]


def test_cli_demo_decoy(tree, tmp_path, capsys):
    from cft.cli import main
    from cft.models import save_checkpoint
    from cft.world.model import WorldModelConfig

    model = {"depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 4}
    ckpt = save_checkpoint(WorldModelConfig(**model).create(10, 28), tmp_path / "orig.safetensors")
    sets = [f"decoy.root={tree}", "decoy.n_val=20", f"checkpoint={ckpt}", "finetune.data.n_train=100"]
    sets += ["variants.cft-anchored.data.anchor_images=20"]
    sets += [f"model.{k}={v}" for k, v in model.items()]
    args = ["demo", "--data", "decoy", "--quick", "--no-progress", "--out", str(tmp_path / "out")]
    assert main([*args, *(f"--set={s}" for s in sets)]) == 0
    out = capsys.readouterr().out
    assert (
        "test-ood" in out and "no-guidance" in out and (tmp_path / "out" / "figures" / "relevance_grid.png").is_file()
    )
    assert main([*args, "--from-scratch"]) == 2
    assert "cft finetune --config decoy/fashion-mnist-pretrain" in capsys.readouterr().err
    assert main([*args, "--set=phase=train"]) == 2
    assert "phase must be one of val, test" in capsys.readouterr().err


def test_the_shipped_model_is_refused_for_another_decoy():
    from cft.demo.decoy import decoy_bench_config, original_checkpoint

    assert original_checkpoint(decoy_bench_config()).name == "decoy_fashion_mnist_vit.safetensors"
    with pytest.raises(CftError, match="trained with decoy.size=4, not 6; make one with"):
        original_checkpoint(decoy_bench_config({"decoy": {"size": 6}}))
    with pytest.raises(CftError, match="no shipped original model for decoy.dataset=mnist"):
        original_checkpoint(decoy_bench_config({"decoy": {"dataset": "mnist"}}))


def _fashion_mnist_root() -> str | None:
    from cft.data.decoy import DEFAULT_ROOTS

    for root in DEFAULT_ROOTS:
        try:
            find_idx(root, "fashion-mnist", "test")
            return root
        except CftError:
            continue
    return None


@pytest.mark.skipif(
    _fashion_mnist_root() is None, reason="no Fashion-MNIST idx files (apt-get install dataset-fashion-mnist)"
)
def test_the_shipped_model_meets_the_premise_on_the_real_test_file():
    """The premise docs/decoy.md reports, on the first 2,000 test images: the garments known, the square leaned on."""
    from cft.demo.decoy import decoy_bench_config, original_checkpoint, predict
    from cft.models import load_checkpoint

    cfg = decoy_bench_config()
    model = load_checkpoint(cfg.model.create(10, 28), original_checkpoint(cfg))
    source = DecoySource(DecoyConfig(root=_fashion_mnist_root()))
    top1 = {}
    for split in ("test-id", "test-ood", "test-neutral"):
        p = source.split(split, 2000)
        top1[split] = (predict(model, torch.from_numpy(p.rgb())) == p.labels).mean()
    assert top1["test-id"] >= 0.9 and top1["test-ood"] <= 0.5 and top1["test-neutral"] >= 0.8, top1


def test_a_partial_finetune_section_keeps_the_base_protocol():
    """`finetune: {train: {optim: {lr: ...}}}` (and --quick) change those fields only, not the pool or the schedule."""
    from cft.demo.decoy import decoy_bench_config, variant_recipe

    for cfg in (decoy_bench_config({"finetune": {"train": {"optim": {"lr": 1e-4}}}}), decoy_bench_config(quick=True)):
        recipe = variant_recipe(cfg, "cft", 0, Path("x"), check=False)
        assert recipe.data.n_train == 50_000 and recipe.train.select_by == "last"
        assert recipe.train.optim.lr_decay == 0.85 and recipe.data.few_shot.per_class == 3
    assert variant_recipe(cfg, "no-guidance", 0, Path("x"), check=False).train.epochs == 10  # quick's
