"""The synthetic world: exact part masks, determinism, the spurious bias, balance, the cache and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cft.errors import CftError
from cft.world import (
    CATEGORIES,
    SPLITS,
    TEXTURES,
    BackgroundBank,
    SyntheticWorld,
    WorldConfig,
    WorldSplit,
    collate,
    contact_sheet,
)
from cft.world.geometry import Jitter
from cft.world.marks import MARK_COLOURS
from cft.world.objects import paint


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(seed=3))


def test_world_names(world):
    assert world.classes == tuple(CATEGORIES)[:10]
    assert len(world.backgrounds) == 12 and set(world.backgrounds) <= set(TEXTURES)
    assert {"bird", "fish", "car", "airplane", "boat", "house", "tree", "flower", "butterfly", "cat"} == set(
        world.classes
    )
    assert "wheel" in world.part_names("car") and "beak" in world.part_names(0)
    assert all(len(world.part_names(c)) >= 3 for c in world.classes)
    assert [world.own_cue(c) for c in range(10)] == list(range(10))


@pytest.mark.parametrize("name", list(CATEGORIES))
def test_builders_emit_parts_in_z_order(name):
    category = CATEGORIES[name]
    parts = category.build(Jitter(np.random.default_rng(0), 1.0))
    order = [category.parts.index(p) for p, _ in parts]
    assert order == sorted(order) and set(order) == set(range(len(category.parts)))
    assert all(poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3 for _, poly in parts)
    assert set(category.colours) == set(category.parts)


def test_part_masks_are_exact(world):
    split = world.split("train", 40)
    seen: dict[int, set[str]] = {}
    for i in range(len(split)):
        s = split.sample(i)
        lm, label = s["label_map"], s["label"]
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == np.uint8
        assert list(s["part_masks"]) == list(world.part_names(label))
        ids = {p: k for k, (c, p) in enumerate(split.part_table) if c == label}
        assert set(np.unique(lm)) <= {0, *ids.values()}  # only this class's parts
        total = np.zeros(lm.shape, np.int64)
        for name, mask in s["part_masks"].items():
            assert mask.dtype == bool
            np.testing.assert_array_equal(mask, lm == ids[name])
            total += mask
            if mask.any():
                seen.setdefault(label, set()).add(name)
        assert total.max() <= 1  # disjoint
        np.testing.assert_array_equal(total == 1, s["object_mask"])  # union is the object
        assert 0.05 < s["object_mask"].mean() < 0.9
    for label, names in seen.items():  # every part of every class shows up in 4 samples
        assert names == set(world.part_names(label)), world.classes[label]


def test_painting_leaves_background_pixels_alone(world, monkeypatch):
    flat = np.full((64, 64, 3), (17, 101, 203), np.uint8)
    monkeypatch.setattr(BackgroundBank, "draw", lambda self, *args, **kwargs: flat.copy())
    fresh = SyntheticWorld(world.config)
    for i in range(10):
        image, lm, *_ = fresh.generate("test-ood", i)
        np.testing.assert_array_equal(image[lm == 0], flat[lm == 0])
        assert (image[lm > 0] != flat[lm > 0]).any(axis=1).mean() > 0.99


def test_paint_function():
    rng = np.random.default_rng(0)
    lm = np.zeros((32, 32), np.uint8)
    lm[5:20, 5:25], lm[8:12, 8:12] = 1, 2
    bg = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    palette = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    out = paint(bg, lm, palette, rng, noise=0.0, shading=0.0, outline=0.5)
    np.testing.assert_array_equal(out[lm == 0], bg[lm == 0])
    assert tuple(out[15, 15]) == (255, 0, 0) and tuple(out[10, 10]) == (0, 0, 255)
    assert tuple(out[5, 15]) == (128, 0, 0)  # silhouette pixels are darkened by the outline


def test_deterministic_by_seed_split_and_index(world):
    again = SyntheticWorld(WorldConfig(seed=3))
    other = SyntheticWorld(WorldConfig(seed=4))
    a, b, c = world.split("test-id", 6), again.split("test-id", 6), other.split("test-id", 6)
    for i in (5, 0, 3):  # any access order
        sa, sb, sc = a.sample(i), b.sample(i), c.sample(i)
        assert sa["image"].tobytes() == sb["image"].tobytes()
        assert sa["label_map"].tobytes() == sb["label_map"].tobytes()
        assert sa["image"].tobytes() != sc["image"].tobytes()
    assert a.sample(2)["image"].tobytes() == world.split("test-id", 3).sample(2)["image"].tobytes()  # n-independent
    images = {name: {world.split(name, 10).sample(i)["image"].tobytes() for i in range(10)} for name in SPLITS}
    for x in SPLITS:
        for y in SPLITS:
            if x < y:
                assert not images[x] & images[y], (x, y)


def _own_fraction(split: WorldSplit) -> float:
    labels, backgrounds = split.labels_and_backgrounds()
    return float((labels == backgrounds).mean())


@pytest.mark.parametrize("name", ["train", "val", "test-id"])
def test_biased_splits(world, name):
    n, p = 2000, world.config.bias
    frac = _own_fraction(world.split(name, n))
    assert abs(frac - p) <= 3 * math.sqrt(p * (1 - p) / n)


def test_ood_and_flipped_splits(world):
    n, q = 2000, 1 / len(world.backgrounds)
    ood = world.split("test-ood", n)
    assert abs(_own_fraction(ood) - q) <= 3 * math.sqrt(q * (1 - q) / n)
    assert len(np.unique(ood.labels_and_backgrounds()[1])) == len(world.backgrounds)
    flipped = world.split("test-flipped", n)
    assert _own_fraction(flipped) == 0.0
    assert len(np.unique(flipped.labels_and_backgrounds()[1])) == len(world.backgrounds)


def test_bias_extremes_and_metadata_matches_samples():
    world = SyntheticWorld(num_classes=4, num_cue_values=4, bias=1.0)
    assert _own_fraction(world.split("train", 200)) == 1.0
    world = SyntheticWorld(num_classes=4, num_cue_values=4, bias=0.0)
    split = world.split("val", 12)
    assert _own_fraction(split) == 0.0
    labels, backgrounds = split.labels_and_backgrounds()
    for i in range(12):
        s = split.sample(i)
        assert (s["label"], s["background"]) == (labels[i], backgrounds[i])


def test_classes_balanced(world):
    labels, _ = world.split("train", 2000).labels_and_backgrounds()
    assert np.bincount(labels).tolist() == [200] * 10


def test_cache_round_trip(world, tmp_path):
    split = world.split("test-flipped", 25)
    path = split.save(tmp_path / "flipped.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flipped.npz"]  # no temp file left behind
    cached = WorldSplit.load(path)
    assert (len(cached), cached.name, cached.classes, cached.backgrounds) == (
        25,
        "test-flipped",
        world.classes,
        world.backgrounds,
    )
    assert cached.part_table == split.part_table
    fresh = world.split("test-flipped", 25)  # generated again, not the materialised one
    for i in range(25):
        a, b = fresh.sample(i), cached.sample(i)
        assert a.keys() == b.keys() and a["part_masks"].keys() == b["part_masks"].keys()
        for k in ("image", "object_mask", "label_map"):
            np.testing.assert_array_equal(a[k], b[k])
        assert (a["label"], a["background"], a["index"]) == (b["label"], b["background"], b["index"])
        for name in a["part_masks"]:
            np.testing.assert_array_equal(a["part_masks"][name], b["part_masks"][name])


def test_load_errors(tmp_path):
    with pytest.raises(CftError, match="does not exist"):
        WorldSplit.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CftError, match="junk.npz"):
        WorldSplit.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CftError, match="not a cached world split"):
        WorldSplit.load(tmp_path / "other.npz")


def test_torch_dataset_and_collate(world):
    split = world.split("val", 8)
    item = split[3]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    assert item["object_mask"].dtype == torch.bool and isinstance(item["label"], int)
    assert all(m.dtype == torch.bool and m.shape == (64, 64) for m in item["part_masks"].values())
    assert torch.equal(item["image"], torch.from_numpy(split.sample(3)["image"]))
    assert split[-1]["index"] == 7
    with pytest.raises(IndexError):
        split[8]
    batch = next(iter(DataLoader(split, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].tolist() == [0, 1, 2, 3]
    assert len(batch["part_masks"]) == 4 and "beak" in batch["part_masks"][0]


def test_contact_sheet(world):
    sheet = contact_sheet(world.split("train", 4), 4, cols=2, scale=2)
    assert sheet.mode == "RGB" and sheet.width == 2 * (2 * 128 + 12)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"bias": 1.5}, "bias"),
        ({"bias": -0.1}, "bias"),
        ({"num_classes": 11}, "num_classes"),
        ({"num_classes": 8, "num_cue_values": 6}, "num_classes"),
        ({"num_cue_values": 13}, "num_cue_values"),
        ({"num_backgrounds": 12}, "num_backgrounds was renamed: write num_cue_values"),
        ({"image_size": 16}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"scale_range": (0.9, 0.5)}, "scale_range"),
        ({"outline": 2.0}, "outline"),
        ({"bias": "high"}, "bias"),
        ({"split_sizes": {"tran": 10}}, "split_sizes"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(CftError, match=field):
        SyntheticWorld(**overrides)


def test_bad_split_requests(world):
    with pytest.raises(CftError, match="unknown split 'tests'"):
        world.split("tests", 10)
    for n in (0, -5):
        with pytest.raises(CftError, match="n must be a positive integer"):
            world.split("train", n)
    with pytest.raises(CftError, match="unknown class"):
        world.part_names("dog")


# ---- the mark cue -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def marked() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(seed=5, cue="mark"))


def _own_cue_fraction(split: WorldSplit) -> float:
    labels, cues = split.labels_and_cues()
    return float((labels == cues).mean())


def test_mark_world_biases_the_mark_not_the_background(marked):
    n, p = 2000, marked.config.bias
    train = marked.split("train", n)
    assert abs(_own_cue_fraction(train) - p) <= 3 * math.sqrt(p * (1 - p) / n)
    q = 1 / len(marked.backgrounds)
    assert abs(_own_fraction(train) - q) <= 3 * math.sqrt(q * (1 - q) / n)  # backgrounds: independent of the class
    ood = marked.split("test-ood", n)
    assert abs(_own_cue_fraction(ood) - q) <= 3 * math.sqrt(q * (1 - q) / n)
    assert _own_cue_fraction(marked.split("test-flipped", 500)) == 0.0


def test_mark_pixels_sit_on_the_object_off_its_parts(marked):
    split = marked.split("train", 60)
    on_carrier = 0
    for i in range(len(split)):
        s = split.sample(i)
        size = marked.config.mark_size
        assert s["cue_mask"].sum() == size * size  # a whole square, frame included
        ys, xs = np.nonzero(s["cue_mask"])
        assert ys.max() - ys.min() == xs.max() - xs.min() == size - 1
        assert not (s["cue_mask"] & ~s["object_mask"]).any()  # on the object: an object mask cannot exclude it
        parts = np.zeros_like(s["object_mask"])
        for m in s["part_masks"].values():
            assert not (m & s["cue_mask"]).any()  # drawn over the parts: no part mask holds a mark pixel
            parts |= m
        np.testing.assert_array_equal(parts | s["cue_mask"], s["object_mask"])
        carrier = CATEGORIES[marked.classes[s["label"]]].carrier
        ring = np.zeros_like(s["cue_mask"])
        ring[max(ys.min() - 1, 0) : ys.max() + 2, max(xs.min() - 1, 0) : xs.max() + 2] = True
        ring &= ~s["cue_mask"]
        on_carrier += s["part_masks"][carrier][ring].mean() > 0.3
    assert on_carrier >= 0.8 * len(split)  # mostly surrounded by its carrier part (a body, a wall, a hull)


def test_mark_beside_the_object():
    world = SyntheticWorld(WorldConfig(seed=2, cue="mark", mark_place="background", mark_size=6))
    split = world.split("val", 30)
    for i in range(len(split)):
        s = split.sample(i)
        assert s["cue_mask"].sum() == 36
        parts = np.zeros_like(s["object_mask"])
        for m in s["part_masks"].values():
            parts |= m
        np.testing.assert_array_equal(parts, s["object_mask"])  # the object mask is the parts alone
        assert (s["cue_mask"] & s["object_mask"]).sum() == 0


def test_neutral_cue_changes_only_the_cue(marked):
    plain, neutral = marked.split("test-ood", 40), marked.split("test-ood", 40, neutral_cue=True)
    labels, cues = neutral.labels_and_cues()
    assert (cues >= len(marked.classes)).all() and len(np.unique(cues)) == 2
    for i in range(len(plain)):
        a, b = plain.sample(i), neutral.sample(i)
        np.testing.assert_array_equal(a["label_map"], b["label_map"])
        outside = ~a["cue_mask"]
        np.testing.assert_array_equal(a["image"][:, outside], b["image"][:, outside])
        assert b["cue"] == cues[i] and b["label"] == labels[i]
        if a["cue"] != b["cue"]:
            assert (a["image"][:, a["cue_mask"]] != b["image"][:, a["cue_mask"]]).any()
    # the background world's neutral cue is a neutral background behind the same object
    world = SyntheticWorld(WorldConfig(seed=3))
    a, b = world.split("test-id", 5).sample(4), world.split("test-id", 5, neutral_cue=True).sample(4)
    np.testing.assert_array_equal(a["label_map"], b["label_map"])
    assert b["background"] == b["cue"] >= len(world.classes)


def test_context_only_and_neutral_cue_never_meet():
    world = SyntheticWorld(WorldConfig(seed=1, cue="mark", bias=1.0, context_only=0.4, neutral_cue=0.4))
    split = world.split("train", 300)
    hidden = neutral = 0
    for i in range(len(split)):
        s = split.sample(i)
        is_hidden = not (s["object_mask"] & ~s["cue_mask"]).any()
        is_neutral = s["cue"] >= len(world.classes)
        assert not (is_hidden and is_neutral)  # every sample shows its label somehow
        hidden, neutral = hidden + is_hidden, neutral + is_neutral
    assert 90 <= hidden <= 150 and 90 <= neutral <= 150
    assert _own_cue_fraction(world.split("test-ood", 300)) < 0.2  # pretraining knobs touch the biased splits only


def test_mark_cache_round_trip(marked, tmp_path):
    split = marked.split("val", 6, neutral_cue=True)
    cached = WorldSplit.load(split.save(tmp_path / "v.npz"))
    assert cached.neutral_cue and cached.cue_ids == split.cue_ids and len(split.cue_ids) == 2
    for i in range(6):
        a, b = split.sample(i), cached.sample(i)
        for k in ("image", "object_mask", "cue_mask", "label_map"):
            np.testing.assert_array_equal(a[k], b[k])
        assert (a["cue"], a["background"]) == (b["cue"], b["background"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cue": "logo"}, "cue"),
        ({"cue": "mark", "mark_place": "corner"}, "mark_place"),
        ({"cue": "mark", "mark_size": 1}, "mark_size"),
        ({"neutral_cue": 1.5}, "neutral_cue"),
        ({"context_only": 0.6, "neutral_cue": 0.6}, "neutral_cue"),
        ({"num_classes": 4, "num_cue_values": 4, "neutral_cue": 0.2}, "neutral_cue"),
    ],
)
def test_bad_cue_config_names_the_field(overrides, field):
    with pytest.raises(CftError, match=field):
        SyntheticWorld(**overrides)


def test_neutral_split_needs_neutral_values():
    with pytest.raises(CftError, match="neutral"):
        SyntheticWorld(num_classes=4, num_cue_values=4).split("test-ood", 5, neutral_cue=True)


def test_colour_cue_paints_the_carrier():
    world = SyntheticWorld(WorldConfig(seed=4, cue="colour", bias=1.0, context_only=0.3))
    split, neutral = world.split("train", 40), world.split("train", 40, neutral_cue=True)
    hidden = 0
    for i in range(len(split)):
        s, n = split.sample(i), neutral.sample(i)
        carrier = CATEGORIES[world.classes[s["label"]]].carrier
        np.testing.assert_array_equal(s["cue_mask"], s["part_masks"][carrier])
        parts = np.zeros_like(s["object_mask"])
        for m in s["part_masks"].values():
            parts |= m
        np.testing.assert_array_equal(parts, s["object_mask"])
        if (s["object_mask"] & ~s["cue_mask"]).any():  # the object is shown
            assert s["cue"] == s["label"]
        else:  # a hidden object leaves its carrier alone, in the class's colour
            hidden += 1
        if s["cue_mask"].sum() > 20:  # the carrier's median colour is near the cue's (shading and noise aside)
            rgb = np.median(s["image"][:, s["cue_mask"]], axis=1) / 255
            assert np.abs(rgb - MARK_COLOURS[s["cue"]]).max() < 0.35, (i, rgb)
        outside = ~s["cue_mask"]
        np.testing.assert_array_equal(s["image"][:, outside], n["image"][:, outside])  # neutral: only the carrier
        assert n["cue"] >= len(world.classes)
    assert 5 <= hidden <= 20


def test_a_config_written_before_a_rename_says_what_to_write():
    from cft.demo import demo_config

    with pytest.raises(CftError, match=r"demo config world\.num_backgrounds was renamed: write num_cue_values"):
        demo_config({"world": {"num_backgrounds": 12}})
