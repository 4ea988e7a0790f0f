"""Decoy-(Fashion)MNIST: the idx reader, the decoy's rules (checked image by image against Ross et al.'s
construction written out here), the `decoy` data source of `cft finetune`, and the benchmark runner."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cft.data.decoy import DECOY_DATASETS, NEUTRAL, DecoyConfig, DecoySource, DecoyStream, find_idx, plant, read_idx
from cft.errors import CftError


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """LeCun's idx format, written independently of the reader: 0, 0, type 0x08, ndim, big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_garments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28 x 28 images: a bright block in the middle whose size depends on the class, black corners."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), np.uint8)
    for i, y in enumerate(labels):
        h = 6 + y
        images[i, 14 - h // 2 : 14 + (h + 1) // 2, 8:20] = rng.integers(60, 255)
    return images, labels.astype(np.uint8)


def make_tree(root: Path, n_train: int = 120, n_test: int = 40, layout: str = "torchvision") -> Path:
    folder = root / "FashionMNIST" / "raw" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    gz = layout != "torchvision"
    ext = ".gz" if gz else ""
    for part, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = fake_garments(n, seed)
        write_idx(folder / f"{part}-images-idx3-ubyte{ext}", images, gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", labels, gz)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "fmnist")


# ---- the idx files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), a, gz)
    np.testing.assert_array_equal(read_idx(path), a)


def test_read_idx_refuses_truncated_and_foreign_files(tmp_path):
    a = np.zeros((5, 28, 28), np.uint8)
    path = write_idx(tmp_path / "x", a)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CftError, match=r"x holds .* \(truncated"):
        read_idx(path)
    (tmp_path / "y").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(CftError, match="y is not an idx file"):
        read_idx(tmp_path / "y")
    (tmp_path / "z.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(CftError, match="cannot read the idx file .*z.gz"):
        read_idx(tmp_path / "z.gz")


def test_find_idx_in_both_layouts(tmp_path):
    tv = make_tree(tmp_path / "tv")
    flat = make_tree(tmp_path / "flat", layout="flat")
    assert find_idx(tv, "fashion-mnist", "train")[0] == tv / "FashionMNIST/raw/train-images-idx3-ubyte"
    assert find_idx(flat, "fashion-mnist", "test")[1] == flat / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(CftError, match="no train-images-idx3-ubyte.* under"):
        find_idx(tmp_path, "mnist", "train")


# ---- the decoy -------------------------------------------------------------------------------------------
CORNERS = {0: (0, 0), 1: (0, 24), 2: (24, 0), 3: (24, 24)}  # top-left row, col of a 4 x 4 square


def reference_square(image: np.ndarray, corner: int, cue: int) -> np.ndarray:
    """Ross et al.'s decoy for one image, written out: the square in `corner` with shade 255 - 25 cue (0 neutral)."""
    out = image.copy()
    r, c = CORNERS[corner]
    out[r : r + 4, c : c + 4] = 0 if cue == NEUTRAL else 255 - 25 * cue
    return out


@pytest.mark.parametrize("split", ["train", "val", "val-ood", "val-neutral", "test-id", "test-ood", "test-neutral"])
def test_plant_matches_the_construction_image_by_image(split):
    images, labels = fake_garments(200, 3)
    labels = labels.astype(np.int64)
    p = plant(images, labels, split, DecoyConfig(), 10)
    for i in range(len(labels)):
        np.testing.assert_array_equal(p.images[i], reference_square(images[i], int(p.corners[i]), int(p.cues[i])))
        fg = images[i] > 0
        fg[p.cue_masks()[i]] = False
        np.testing.assert_array_equal(p.foreground[i], fg)
    if split in ("train", "val", "test-id"):
        assert (p.cues == labels).all()
    elif split.endswith("ood"):
        assert (p.cues != labels).all() and set(np.unique(p.cues)) <= set(range(10))
        assert len(np.unique(p.cues)) == 10  # every other class's shade appears
    else:
        assert (p.cues == NEUTRAL).all()
    assert 30 < np.bincount(p.corners, minlength=4).min()  # the corner is drawn at random


def test_train_mixture_and_epochs():
    images, labels = fake_garments(2000, 4)
    labels = labels.astype(np.int64)
    cfg = DecoyConfig(bias=0.9, context_only=0.3, neutral=0.2)
    p = plant(images, labels, "train", cfg, 10)
    assert abs(p.blanked.mean() - 0.3) < 0.04 and abs((p.cues == NEUTRAL).mean() - 0.2) < 0.04
    assert not (p.blanked & (p.cues == NEUTRAL)).any()
    assert (p.images[p.blanked] * ~p.cue_masks()[p.blanked]).max() == 0  # a blanked image is its square alone
    assert not p.foreground[p.blanked].any()
    shaded = p.cues != NEUTRAL
    assert abs((p.cues[shaded] == labels[shaded]).mean() - 0.9) < 0.04
    again, later = plant(images, labels, "train", cfg, 10), plant(images, labels, "train", cfg, 10, epoch=1)
    np.testing.assert_array_equal(p.images, again.images)
    assert (p.corners != later.corners).mean() > 0.5


def test_source_splits_and_stream(tree):
    src = DecoySource(DecoyConfig(root=str(tree), n_val=20))
    assert src.size_of("train") == 100 and src.size_of("val-ood") == 20 and src.size_of("test-id") == 40
    images, labels = fake_garments(120, 0)
    val = src.split("val")
    np.testing.assert_array_equal(val.labels, labels[100:])
    assert (val.images[val.foreground] == images[100:][val.foreground]).all()
    head = src.split("test-ood", 7)
    np.testing.assert_array_equal(head.images, src.split("test-ood").images[:7])  # a prefix keeps its decoys
    stream = DecoyStream(src)
    first = stream[3]["image"].clone()
    stream.set_epoch(5)
    assert first.shape == (3, 28, 28) and len(stream) == 100
    with pytest.raises(CftError, match="n_val=120 leaves no training images"):
        DecoySource(DecoyConfig(root=str(tree), n_val=120))
    with pytest.raises(CftError, match="data.decoy.context_only"):
        DecoySource(DecoyConfig(root=str(tree), context_only=1.5))


# ---- the data source and the benchmark ---------------------------------------------------------------------
def tiny_recipe(tree: Path, **objective) -> dict:
    return {
        "model": {"name": "world-vit", "depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 4},
        "data": {
            "source": "decoy",
            "decoy": {"root": str(tree), "n_val": 20},
            "n_train": 100,
            "val_split": "val-ood",
            "n_val": 20,
            "few_shot": {"per_class": 2, "class_fraction": 0.5, "seed": 1},
            "masks": "object",
        },
        "objective": {"name": "cft", **objective},
        "train": {"epochs": 1, "batch_size": 4, "select_by": "last", "progress": False, "optim": {"lr": 1e-3}},
    }


def test_finetune_on_decoy_data(tree, tmp_path):
    from cft.train.recipe import recipe_from_dict, run_finetune

    out = tmp_path / "run"
    result = run_finetune(recipe_from_dict(tiny_recipe(tree)), out, progress=False)
    split = json.loads((out / "split.json").read_text())
    assert len(split["indices"]) == 10 and split["dataset"] == "fashion-mnist"
    assert set(split["seen_class_names"]) <= set(DECOY_DATASETS["fashion-mnist"][1])
    record = result.history[-1]
    assert record["train_non_concept"] > 0 and "val_top1" in record  # the foreground guided the loss
    with pytest.raises(CftError, match="data.val_split must be one of train, val"):
        recipe_from_dict({**tiny_recipe(tree), "data": {**tiny_recipe(tree)["data"], "val_split": "test-flipped"}})


def test_pretraining_stream_draws_new_decoys_each_epoch(tree, tmp_path):
    from cft.train.recipe import recipe_from_dict
    from cft.train.sources import DATA_SOURCES

    recipe = tiny_recipe(tree)
    recipe["data"].update(few_shot=None, masks="none", decoy={"root": str(tree), "n_val": 20, "neutral": 0.5})
    recipe["objective"] = {"name": "erm"}
    source = DATA_SOURCES["decoy"](recipe_from_dict(recipe), False, tmp_path)
    assert isinstance(source.train, DecoyStream)
    before = source.train.images.clone()
    source.train.set_epoch(1)
    assert not torch.equal(before, source.train.images)


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


def test_files_are_read_once_and_reread_when_they_change(tree):
    from cft.data.decoy import load_part

    first = load_part(tree, "fashion-mnist", "train")
    assert load_part(tree, "fashion-mnist", "train")[0] is first[0]  # every variant of a run shares one read
    images, labels = fake_garments(30, 9)
    raw = tree / "FashionMNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    again = load_part(tree, "fashion-mnist", "train")
    assert len(again[1]) == 30 and not again[1].flags.writeable
