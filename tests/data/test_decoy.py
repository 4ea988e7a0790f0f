"""Decoy-(Fashion)MNIST data: the idx reader, the decoy's rules (checked image by image against Ross et al.'s
construction written out here) and the `decoy` data source of `cft finetune` (the benchmark runner:
tests/demo/test_decoy.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cft.data.decoy import DECOY_DATASETS, NEUTRAL, DecoyConfig, DecoySource, DecoyStream, find_idx, plant, read_idx
from cft.errors import CftError
from tests.helpers.decoy import fake_garments, make_tree, tiny_recipe, write_idx


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


# ---- the data source -------------------------------------------------------------------------------------
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
