"""The world's embedding segmenter: phrases to exact part masks through sentence embeddings (the vlm mode, the
default, has its truth table in tests/world/test_vocabulary.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cft.errors import CftError
from cft.grounding import Segmenter, guidance_mask, is_suspect
from cft.world import SyntheticWorld
from cft.world.segmenter import WorldSegmenter


@pytest.fixture(scope="module")
def samples():
    world = SyntheticWorld(seed=3)
    split = world.split("train", 40)
    car = next(split.sample(i) for i in range(40) if world.classes[split.sample(i)["label"]] == "car")
    bird = next(split.sample(i) for i in range(40) if world.classes[split.sample(i)["label"]] == "bird")
    return car, bird


def test_real_sentence_model_matches_parts(samples):
    car, bird = samples
    seg = WorldSegmenter(mode="embedding")
    assert isinstance(seg, Segmenter)
    out = seg.segment([car, bird], [["wheels", "a car window", "water"], ["pointed beak", "feathered wings"]])
    assert np.array_equal(out[0]["wheels"][0], car["part_masks"]["wheel"])
    assert np.array_equal(out[0]["a car window"][0], car["part_masks"]["window"])
    assert not out[0]["water"][0].any() and out[0]["water"][1] < 0.5
    assert np.array_equal(out[1]["pointed beak"][0], bird["part_masks"]["beak"])
    assert np.array_equal(out[1]["feathered wings"][0], bird["part_masks"]["wing"])
    assert out[1]["pointed beak"][1] >= 0.5


def test_threshold_with_a_known_similarity(samples):
    car, _ = samples
    names = list(car["part_masks"])

    def sim(phrases, parts):
        return np.array([[0.7 if p == "wheel" else 0.1 for p in parts] for _ in phrases])

    assert parts_found(WorldSegmenter(0.6, sim=sim, mode="embedding"), car, names) == {"x": True}
    assert parts_found(WorldSegmenter(0.8, sim=sim, mode="embedding"), car, names) == {"x": False}


def parts_found(seg, sample, names):
    out = seg.segment([sample], [["x"]])[0]
    return {k: bool(v[0].any()) for k, v in out.items()}


def test_guidance_union_and_weighted():
    a = np.array([[1, 0], [0, 0]], bool)
    b = np.array([[0, 0], [0, 1]], bool)
    assert guidance_mask({"a": a, "b": b}).tolist() == [[1, 0], [0, 1]]
    weighted = guidance_mask({"a": a, "b": b}, {"a": 0.5, "b": 1.0}, mode="weighted")
    assert weighted.tolist() == [[0.5, 0], [0, 1.0]]
    assert guidance_mask({}, shape=(2, 2)).sum() == 0
    assert is_suspect(np.zeros((100, 100))) and not is_suspect(a)
    with pytest.raises(CftError):
        guidance_mask({"a": a, "c": np.zeros((3, 3), bool)})


def test_bad_input(samples):
    car, _ = samples
    with pytest.raises(CftError, match="one list per image"):
        WorldSegmenter().segment([car], [])
    with pytest.raises(CftError, match="world samples"):
        WorldSegmenter().segment([np.zeros((3, 8, 8))], [["wheel"]])
    with pytest.raises(CftError, match="threshold"):
        WorldSegmenter(1.5)
