"""Regression tests that fail if the method stops working on the shipped world model.

CFT fine-tuning on the demo's few images must move relevance off the cue and onto the concept parts of new
images, and must end with other weights than the `no-guidance` ablation (the classification term alone).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cft.demo import concept_masks, demo_config, finetune_variant, make_world, original_model, predict
from cft.evaluate.metrics import relevance_share
from cft.world.model import relevance_maps
from cft.world.segmenter import WorldSegmenter


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The shipped model, part concepts (no language model), 3 images from half of the classes of 600."""
    cfg = demo_config({"finetune": {"epochs": 20, "pool": 600}, "concepts": {"source": "parts"}})
    world = make_world(cfg)
    model, _, checkpoint = original_model(cfg, tmp_path_factory.mktemp("demo"), from_scratch=False, progress=False)
    concepts = {c: [p for p in world.part_names(c) if p != "body"] for c in world.classes}
    test = world.split("test-ood", 120).materialize()
    tests = [test.sample(i) for i in range(len(test))]
    return cfg, world, model, checkpoint, concepts, tests


def _finetune(setup, variant, tmp_path):
    cfg, _, _, checkpoint, _, _ = setup
    return finetune_variant(cfg, variant, 0, checkpoint, tmp_path / variant, progress=False)


@pytest.mark.slow
def test_cft_moves_relevance_from_the_cue_to_the_concepts(setup, tmp_path):
    cfg, world, model, _, concepts, tests = setup
    segmenter = WorldSegmenter()
    images = torch.from_numpy(np.stack([s["image"] for s in tests]))
    labels = np.array([s["label"] for s in tests])
    cues = np.array([s["cue"] for s in tests])
    cue_masks = np.stack([s["cue_mask"] for s in tests])
    concept = np.stack(concept_masks(tests, concepts, world.classes, segmenter)) > 0
    tuned, plain = _finetune(setup, "cft", tmp_path), _finetune(setup, "no-guidance", tmp_path)
    before, after = relevance_maps(model, images), relevance_maps(tuned, images)
    assert relevance_share(after, cue_masks) < relevance_share(before, cue_masks) - 0.03
    assert relevance_share(after, concept) > relevance_share(before, concept) + 0.02
    # and the cue decides less often: images whose cue names another class follow it less
    conflict = (cues != labels) & (cues < len(world.classes))
    follow_before = (predict(model, images, 64).numpy() == cues)[conflict].mean()
    follow_after = (predict(tuned, images, 64).numpy() == cues)[conflict].mean()
    assert follow_after < follow_before - 0.1
    # the relevance term is what changed the weights: no-guidance ends elsewhere
    diff = max((a - b).abs().max().item() for a, b in zip(tuned.state_dict().values(), plain.state_dict().values()))
    assert diff > 1e-3
