"""Regression tests that fail if the method stops working on the shipped world model.

CFT fine-tuning on the demo's few images must move relevance off the cue and onto the concept parts of new
images, and must end with other weights than the `no-guidance` ablation (the classification term alone).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cft.data.fewshot import select_few_shot
from cft.demo import concept_masks, demo_config, finetune, make_world, original_model, predict
from cft.evaluate.metrics import relevance_share
from cft.world.segmenter import WorldSegmenter
from cft.world.training import ArrayDataset, relevance_maps


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = demo_config({"finetune": {"epochs": 20}})
    world = make_world(cfg)
    model, _ = original_model(cfg, tmp_path_factory.mktemp("demo"), from_scratch=False, progress=False)
    concepts = {c: [p for p in world.part_names(c) if p != "body"] for c in world.classes}
    segmenter = WorldSegmenter()
    pool = world.split("train", 600).materialize()
    labels, _ = pool.labels_and_cues()
    sel = select_few_shot(labels, 3, 0.5, 0, num_classes=len(world.classes))
    samples = [pool.sample(i) for i in sel.indices]
    test = world.split("test-ood", 120).materialize()
    tests = [test.sample(i) for i in range(len(test))]
    return cfg, world, model, concepts, segmenter, samples, tests


def _finetune(setup, variant, tmp_path):
    from cft.demo import variant_objective

    cfg, world, model, concepts, segmenter, samples, _ = setup
    fresh = cfg.model.create(len(world.classes), world.config.image_size)
    fresh.load_state_dict(model.state_dict())
    masks = concept_masks(samples, concepts, world.classes, segmenter) if variant == "cft" else None
    data = ArrayDataset.from_samples(samples, masks)
    return finetune(fresh, data, variant_objective(cfg, variant), cfg.finetune, 0, tmp_path / variant, False)


@pytest.mark.slow
def test_cft_moves_relevance_from_the_cue_to_the_concepts(setup, tmp_path):
    cfg, world, model, concepts, segmenter, _, tests = setup
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
