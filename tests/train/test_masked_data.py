"""Images from disk with guidance masks from the store: one geometry for both, and the trainer reading them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from cft.concepts.bank import ConceptBank
from cft.data.folders import list_images
from cft.errors import CftError
from cft.grounding.build import build_masks
from cft.grounding.store import MaskStore
from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective
from cft.train.masked_data import PairedTransform, StoreImageDataset
from tests.helpers.masks import FakeSegmenter, write_bank, write_tree


def test_crop_and_flip_match_a_plain_implementation():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = (rng.random((40, 40)) > 0.5).astype(np.float32)
    t = PairedTransform(size=24, resize=40, train=True, flip=True)  # resize to the same size: no resampling
    for seed in range(8):
        torch.manual_seed(seed)
        top, left, mirrored = t.geometry()
        torch.manual_seed(seed)
        x, m = t(Image.fromarray(array), mask)
        want = array[top : top + 24, left : left + 24].astype(np.float32) / 255
        want_m = mask[top : top + 24, left : left + 24]
        if mirrored:
            want, want_m = want[:, ::-1], want_m[:, ::-1]
        assert np.allclose((x.permute(1, 2, 0).numpy() * 0.5 + 0.5), want, atol=1e-6)
        assert np.array_equal(m.numpy(), want_m)
    ev = PairedTransform(size=24, resize=40, train=False)
    x, m = ev(Image.fromarray(array), mask)
    assert np.array_equal(m.numpy(), mask[8:32, 8:32])


def test_image_and_mask_stay_aligned_through_resize_crop_and_flip():
    """A white square on black, with its mask: after every random transform the mask sits on the square."""
    image = np.zeros((90, 120, 3), np.uint8)
    image[20:60, 70:110] = 255
    mask = image[..., 0] > 0
    t = PairedTransform(size=48, resize=64)
    flips = set()
    for seed in range(20):
        torch.manual_seed(seed)
        flips.add(t.geometry()[2])
        torch.manual_seed(seed)
        x, m = t(Image.fromarray(image), mask)
        bright = x[0] > 0  # normalised: white > 0 > black
        if m.sum() > 0:
            assert ((m > 0.5) == bright).float().mean() > 0.97
    assert flips == {True, False}


@pytest.fixture
def store_data(tmp_path):
    write_tree(tmp_path / "images", per_class=4, size=(40, 48))
    bank = ConceptBank.load(write_bank(tmp_path / "bank.json"))
    items = list_images(tmp_path / "images", list(bank.concepts))
    store = MaskStore(tmp_path / "store")
    build_masks(items, bank, FakeSegmenter(), store)
    return items, store, {c: i for i, c in enumerate(sorted(bank.concepts))}


def test_dataset_reads_the_store(store_data):
    items, store, index = store_data
    ds = StoreImageDataset(items, index, store, PairedTransform(size=32, resize=32, train=False))
    batch = default_collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (8, 3, 32, 32) and batch["mask"].shape == (8, 32, 32)
    for k, item in enumerate(items):
        full = store.guidance(item.image_id).astype(np.float32) / 255
        h, w = full.shape  # nearest neighbour: output pixel i reads source pixel floor((i + 0.5) * H / 32)
        rows, cols = ((np.arange(32) + 0.5) * h / 32).astype(int), ((np.arange(32) + 0.5) * w / 32).astype(int)
        assert np.array_equal(batch["mask"][k].numpy(), full[rows][:, cols])
        assert int(batch["label"][k]) == index[item.label]
    plain = StoreImageDataset(items, index, None, PairedTransform(size=32, resize=32, train=False))
    assert "mask" not in plain[0] and torch.equal(plain[0]["image"], ds[0]["image"])


def test_dataset_errors(store_data, tmp_path):
    items, store, index = store_data
    with pytest.raises(CftError, match="no class index for class"):
        StoreImageDataset(items, {"goldfish": 0}, store, PairedTransform())
    empty = StoreImageDataset(items, index, MaskStore(tmp_path / "empty"), PairedTransform(32, 32))
    with pytest.raises(CftError, match="no masks for image"):
        empty[0]
    Image.new("RGB", (10, 10)).save(items[0].path)  # the image changed size since the masks were made
    with pytest.raises(CftError, match="was the store made from another copy"):
        StoreImageDataset(items, index, store, PairedTransform(32, 32))[0]
    with pytest.raises(CftError, match="crop size"):
        PairedTransform(size=300, resize=256)


def test_trainer_fine_tunes_from_store_masks(store_data, tmp_path, make_vit):
    items, store, index = store_data
    model = make_vit(img_size=32, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = StoreImageDataset(items, index, store, PairedTransform(size=32, resize=36))
    cfg = TrainConfig(epochs=2, batch_size=4, optim=OptimConfig(lr=1e-3), select_by="last", progress=False)
    trainer = Trainer(model, build_objective(ObjectiveConfig(name="cft")), cfg, tmp_path / "run", default_collate)
    result = trainer.fit(ds, None)
    assert len(result.history) == 2 and all(
        np.isfinite(r["train_loss"]) and r["train_align"] > 0 for r in result.history
    )
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
