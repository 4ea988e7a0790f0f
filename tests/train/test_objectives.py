"""The fine-tuning levers the decoy benchmark tried: the consistency term anchored to the original model
(cls_target original: KL to its predictions) and training a subset of the parameters (train.trainable)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cft.errors import CftError
from cft.losses import CFTLoss, consistency
from cft.train import ObjectiveConfig, build_objective, objective_config
from cft.train.trainer import trainable_parameters
from cft.world.model import WorldModelConfig


def kl_by_hand(logits: torch.Tensor, reference: torch.Tensor, t: float) -> float:
    """KL(p_ref || p) per image, averaged over the batch, from the formula with plain loops."""
    total = 0.0
    for z, r in zip(logits.tolist(), reference.tolist()):
        pz = [math.exp(v / t) for v in z]
        pr = [math.exp(v / t) for v in r]
        sz, sr = sum(pz), sum(pr)
        total += sum((b / sr) * (math.log(b / sr) - math.log(a / sz)) for a, b in zip(pz, pr))
    return total / len(logits)


@pytest.mark.parametrize("t", [1.0, 0.65, 2.0])
def test_consistency_with_reference_is_the_kl(t):
    g = torch.Generator().manual_seed(0)
    logits, reference = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    assert consistency(logits, t, reference=reference).item() == pytest.approx(kl_by_hand(logits, reference, t))
    assert consistency(reference, t, reference=reference).item() == pytest.approx(0.0, abs=1e-6)


def test_consistency_with_reference_gradcheck():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(3, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: consistency(z, 0.7, reference=reference), (logits,))


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return WorldModelConfig(depth=2, embed_dim=16, num_heads=2, patch_size=4).create(10, 16)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(4, 16, 16)
    mask[:, 4:12, 4:12] = 1
    return {"image": torch.randn(4, 3, 16, 16, generator=g), "label": torch.arange(4), "mask": mask}


@pytest.mark.parametrize("name", ["cft", "no-guidance"])
def test_anchored_objective_starts_at_zero_cls_and_keeps_the_original_frozen(name):
    model = tiny_model()
    objective = build_objective(objective_config(name, cls_target="original"))
    assert objective.wants_reference
    with pytest.raises(CftError, match="bind_reference"):
        objective(model, batch())
    objective.bind_reference(model)
    out = objective(model, batch())
    assert out.terms["cls"].item() == pytest.approx(0.0, abs=1e-6)  # the model is still the original
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = objective(model, batch())
    expected = kl_by_hand(moved.logits.detach(), objective.reference(batch()["image"]).detach(), 1.0)
    assert moved.terms["cls"].item() == pytest.approx(expected, rel=1e-5)
    assert all(not p.requires_grad for p in objective.reference.parameters())


def test_cft_loss_passes_the_reference_to_its_cls_term():
    g = torch.Generator().manual_seed(3)
    maps, mask = torch.rand(2, 8, 8, generator=g), (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    logits, reference = torch.randn(2, 10, generator=g), torch.randn(2, 10, generator=g)
    terms = CFTLoss()(maps, mask, logits, reference=reference)
    assert terms["cls"].item() == pytest.approx(kl_by_hand(logits, reference, 1.0))
    assert terms["loss"].item() == pytest.approx(0.8 * terms["align"].item() + 0.2 * terms["cls"].item())


def test_cls_target_original_is_refused_where_there_is_no_consistency_term():
    with pytest.raises(
        CftError, match="objective.cls_target is a setting of objective.name no-guidance, cft, robustvit, not of rrr"
    ):
        build_objective(objective_config("rrr", cls_target="original"))
    with pytest.raises(CftError, match="objective.cls_target must be one of self, label, original"):
        build_objective(objective_config("cft", cls_target="teacher"))


def test_trainable_patterns_freeze_the_rest_and_a_step_moves_only_them():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = trainable_parameters(model, ["blocks.*.attn.qkv.*"])
    assert len(params) == 4  # weight and bias of 2 blocks
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    objective = build_objective(ObjectiveConfig(name="cft"))
    objective(model, batch()).terms["loss"].backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"blocks.{i}.attn.qkv.{w}" for i in range(2) for w in ("weight", "bias")}
    with pytest.raises(CftError, match="'head.nothing' match.* no parameter"):
        trainable_parameters(model, ["head.nothing"])
    assert len(trainable_parameters(tiny_model(), None)) == len(list(tiny_model().parameters()))


def test_anchor_images_add_the_kl_on_them_to_the_loss():
    model = tiny_model()
    objective = build_objective(objective_config("cft", cls_target="original", anchor_weight=2.0))
    objective.bind_reference(tiny_model())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = batch()
    b["anchor"] = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    out = objective(model, b)
    expected = kl_by_hand(model(b["anchor"]).detach(), objective.reference(b["anchor"]).detach(), 1.0)
    assert out.terms["anchor"].item() == pytest.approx(expected, rel=1e-5)
    without = objective(model, batch()).terms
    assert "anchor" not in without
    assert out.terms["loss"].item() == pytest.approx(without["loss"].item() + 2.0 * expected, rel=1e-5)


def test_anchor_images_ride_with_the_few_shot_items(tmp_path):
    from cft.train.recipe import recipe_from_dict
    from cft.train.sources import DATA_SOURCES
    from tests.helpers.decoy import make_tree, tiny_recipe

    tree = make_tree(tmp_path / "fmnist")
    recipe = tiny_recipe(tree, cls_target="original")
    recipe["data"]["anchor_images"] = 30
    source = DATA_SOURCES["decoy"](recipe_from_dict(recipe), True, tmp_path)
    item = source.train[0]
    assert item["anchor"].shape == (3, 3, 28, 28)  # 30 anchors over 10 few-shot images
    chosen = set(source.selection.indices)
    assert source.collate([source.train[i] for i in range(4)])["anchor"].shape == (12, 3, 28, 28)
    pool_images = DecoySourceImages(tree)
    anchors = source.train.anchors.reshape(-1, 3, 28, 28)[:, 0]
    for a in anchors:  # each anchor is a pool image that was not chosen for the few-shot set
        matches = set(np.flatnonzero((pool_images == a.numpy()).all(axis=(1, 2))).tolist())
        assert matches - chosen
    recipe["objective"]["cls_target"] = "self"
    with pytest.raises(CftError, match="data.anchor_images=30: anchor images are for data.source=decoy"):
        recipe_from_dict(recipe)


def DecoySourceImages(tree):  # noqa: N802
    from cft.data.decoy import DecoyConfig, DecoySource

    return DecoySource(DecoyConfig(root=str(tree), n_val=20)).split("train", 100).images
