"""Concept validation in the synthetic world, where the right answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from cft.concepts.bank import Concept, ConceptBank
from cft.concepts.validate import ValidationConfig, iou, validate_bank, world_validation_inputs
from cft.errors import CftError
from cft.grounding import Segmenter
from cft.world import SyntheticWorld
from cft.world.segmenter import WorldSegmenter


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(seed=0)


@pytest.fixture(scope="module")
def inputs(world):
    return world_validation_inputs(world, "val", ["bird", "car"], n=30)


def bank_of(**classes: list[str]) -> ConceptBank:
    return ConceptBank({c: [Concept(n, kind="important") for n in names] for c, names in classes.items()})


class FakeSegmenter:
    """Returns a full mask for every phrase in the first `hits[phrase]` images (default all), else empty."""

    name = "fake"

    def __init__(self, hits: dict[str, int] | None = None, score: float = 0.7):
        self.hits = hits or {}
        self.score = score
        self.calls: list[tuple[int, list[list[str]]]] = []

    def segment(self, images, phrases):
        self.calls.append((len(images), [list(p) for p in phrases]))
        out = []
        for j, (img, ps) in enumerate(zip(images, phrases, strict=True)):
            shape = img["object_mask"].shape
            out.append({p: (np.full(shape, j < self.hits.get(p, len(images))), self.score) for p in ps})
        return out


def test_world_inputs(world, inputs):
    images, objects = inputs
    assert set(images) == {"bird", "car"} and len(images["bird"]) == 30 == len(objects["bird"])
    assert all(world.classes[s["label"]] == "bird" for s in images["bird"])
    assert all(np.array_equal(s["object_mask"], m) for s, m in zip(images["bird"], objects["bird"], strict=True))
    with pytest.raises(CftError, match="has only .* samples of class 'bird'; need 30"):
        world_validation_inputs(world, world.split("val", 50), ["bird"], n=30)
    with pytest.raises(CftError, match="unknown class 'zebra'"):
        world_validation_inputs(world, "val", ["zebra"], n=2)


def test_known_answers_bird(inputs):
    images, objects = inputs
    bank = bank_of(bird=["beak", "wing", "water", "engine"])
    seg = WorldSegmenter()
    out, stats = validate_bank(bank, images, seg, objects, ValidationConfig())
    assert out.names("bird") == ["beak", "wing"]
    dropped = {d["name"]: d["reason"] for d in out.dropped["bird"]}
    assert set(dropped) == {"water", "engine"}
    assert all(r.startswith("occurrence 0 % (0 of 30 images) < 15 %") for r in dropped.values())
    s = stats["classes"]["bird"]
    assert s["concepts"]["water"]["occurrence"] == 0.0 == s["concepts"]["engine"]["occurrence"]
    # independent computation from the world's exact part masks
    parts = [x["part_masks"] for x in images["bird"]]
    expect_occ = np.mean([p["beak"].any() for p in parts])
    assert s["concepts"]["beak"]["occurrence"] == pytest.approx(expect_occ)
    ious = []
    for p, obj in zip(parts, objects["bird"], strict=True):
        union = p["beak"] | p["wing"]
        ious.append((union & obj).sum() / (union | obj).sum())
    assert s["coverage"] == pytest.approx(float(np.mean(ious)))
    assert s["coverage"] >= 0.2 and s["images"] == 30 and s["kept"] == ["beak", "wing"]
    frac = np.mean([p["wing"].mean() for p in parts])
    assert s["concepts"]["wing"]["mask_fraction"] == pytest.approx(frac)
    wing = out.concepts["bird"][1]
    assert wing.stats["occurrence"] == 1.0 and wing.stats["coverage"] == s["coverage"] and wing.stats["score"] > 0.99
    assert out.provenance["validation"]["segmenter"] == "world" and bank.names("bird")[2] == "water"  # input intact


def test_coverage_rule_with_full_masks(inputs):
    images, objects = inputs
    seg = FakeSegmenter()
    assert isinstance(seg, Segmenter)
    bank = bank_of(bird=["a", "b"], car=["c"])
    expected = {c: float(np.mean([m.mean() for m in objects[c]])) for c in ("bird", "car")}  # IoU(full, object)
    cut = (expected["bird"] + expected["car"]) / 2
    assert abs(expected["bird"] - expected["car"]) > 0.01
    low, high = sorted(expected, key=expected.get)
    out, stats = validate_bank(bank, images, seg, objects, ValidationConfig(min_coverage=cut))
    assert stats["classes"][low]["coverage"] == pytest.approx(expected[low])
    assert stats["classes"][high]["coverage"] == pytest.approx(expected[high])
    assert out.concepts[low] == [] and stats["classes"][low]["kept"] == []
    assert all(d["reason"].startswith("class coverage ") for d in out.dropped[low])
    assert len(out.concepts[high]) == len(bank.concepts[high]) and high not in out.dropped
    # one segmenter call per class, the class's phrase list for every image
    assert [(n, p[0]) for n, p in seg.calls] == [(30, ["a", "b"]), (30, ["c"])]
    assert all(p == seg.calls[0][1][0] for p in seg.calls[0][1])
    # the default 20 %: full masks of whole images cover the object badly when it is small
    _, default = validate_bank(bank, images, FakeSegmenter(), objects)
    for c in ("bird", "car"):
        assert (default["classes"][c]["kept"] != []) == (expected[c] >= 0.2)


def test_occurrence_threshold_inclusive(inputs):
    images, objects = inputs
    seg = FakeSegmenter({"three": 3, "two": 2, "none": 0})
    bank = bank_of(bird=["three", "two", "none", "all"])
    cfg = ValidationConfig(images_per_class=20, min_coverage=0.0)
    out, stats = validate_bank(bank, images, seg, objects, cfg)
    assert out.names("bird") == ["three", "all"]  # 3/20 = 15 % is kept, 2/20 = 10 % is not
    assert out.dropped["bird"][0] == {"name": "two", "reason": "occurrence 10 % (2 of 20 images) < 15 %"}
    assert stats["classes"]["bird"]["images"] == 20 and seg.calls[0][0] == 20


def test_all_dropped_by_occurrence_gives_zero_coverage(inputs):
    images, objects = inputs
    out, stats = validate_bank(bank_of(bird=["x"]), images, FakeSegmenter({"x": 0}), objects)
    assert out.concepts["bird"] == [] and stats["classes"]["bird"]["coverage"] == 0.0
    assert len(out.dropped["bird"]) == 1  # dropped once, for occurrence


def test_errors_and_edge_cases(inputs):
    images, objects = inputs
    with pytest.raises(CftError, match="no images given for class 'cat'"):
        validate_bank(bank_of(cat=["fur"]), images, FakeSegmenter(), objects)
    with pytest.raises(CftError, match="30 images but 29 object masks"):
        validate_bank(bank_of(bird=["x"]), images, FakeSegmenter(), {"bird": objects["bird"][:29]})
    out, stats = validate_bank(bank_of(bird=[]), images, FakeSegmenter(), objects)
    assert out.concepts["bird"] == [] and stats["classes"]["bird"]["coverage"] is None
    with pytest.raises(CftError, match="min_occurrence"):
        ValidationConfig(min_occurrence=1.5)
    assert iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert iou(np.eye(2), np.ones((2, 2))) == 0.5


def test_a_concept_whose_mask_is_the_object_can_be_dropped():
    """max_object_iou (off by default, as in the paper): a concept whose masks are the object masks (an object or
    kind name under a real detector) is dropped with the IoU it had; the object IoU is recorded either way."""
    obj = np.zeros((8, 8), bool)
    obj[2:6, 2:6] = True
    part = np.zeros((8, 8), bool)
    part[2:4, 2:6] = True

    class ObjectOrPart:
        name = "object-or-part"

        def segment(self, images, phrases):
            return [{p: ((obj if p == "parrot" else part).copy(), 1.0) for p in ps} for ps in phrases]

    bank = ConceptBank(concepts={"bird": [Concept("parrot"), Concept("wing")]}, dropped={"bird": []}, provenance={})
    images, objects = {"bird": [None] * 4}, {"bird": [obj] * 4}
    kept, stats = validate_bank(bank, images, ObjectOrPart(), objects, ValidationConfig(images_per_class=4))
    assert kept.names("bird") == ["parrot", "wing"]
    assert stats["classes"]["bird"]["concepts"]["parrot"]["object_iou"] == 1.0
    assert stats["classes"]["bird"]["concepts"]["wing"]["object_iou"] == 0.5  # 8 of 16 pixels
    cfg = ValidationConfig(images_per_class=4, max_object_iou=0.9)
    kept, _ = validate_bank(bank, images, ObjectOrPart(), objects, cfg)
    assert kept.names("bird") == ["wing"]
    assert "names the whole object: IoU 1.00" in kept.dropped["bird"][0]["reason"]
    with pytest.raises(CftError, match="max_object_iou must be null or a number in"):
        ValidationConfig(max_object_iou=0)
