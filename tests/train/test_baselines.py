"""The baselines as objectives: RRR, GradMask, RRDA and the RobustViT preset.

Penalties are checked against plain per-image implementations; the key tests show that the input-gradient
penalties train the weights (second order, finite differences agree) and that create_graph=False, the
original scripts' mistake, leaves them untrained.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cft
from cft.config import from_dict, load_config
from cft.relevance import relevance
from cft.train import (
    RRDA,
    RRR,
    CFTSettings,
    ConsistencySettings,
    ERMSettings,
    GradMask,
    GradMaskSettings,
    ObjectiveConfig,
    RelevanceGuided,
    RelevanceSettings,
    RRDASettings,
    RRRSettings,
    build_objective,
    objective_config,
    settings_class,
)
from cft.train.baselines import GRADMASK_WEIGHT, RRR_WEIGHT, background_permutation, paste_foregrounds
from cft.train.recipe import load_recipe
from tests.helpers.models import tiny_vit
from tests.helpers.trainer import Blobs, make_trainer

F64 = torch.float64


def _batch(b: int = 3, dtype: torch.dtype = F64, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random images, distinct labels and masks: soft for image 0, binary for the others."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, 32, 48, generator=g) > 0.5).to(dtype)
    mask[0] = torch.rand(32, 48, generator=g, dtype=dtype)
    return {
        "image": torch.randn(b, 3, 32, 48, generator=g, dtype=dtype),
        "label": torch.tensor([0, 3, 6, 1, 5, 2, 4][:b]),
        "mask": mask,
    }


def _per_image_grads(model: nn.Module, images: torch.Tensor, score) -> list[torch.Tensor]:
    """The input gradient of score(logits of ONE image, index) for each image in turn, plain autograd."""
    grads = []
    for i in range(len(images)):
        x = images[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(score(model(x)[0], i), x)
        grads.append(g[0])
    return grads


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


# ---- values against plain implementations ---------------------------------------------------------------


def test_rrr_matches_a_per_image_loop():
    model, batch = tiny_vit(dtype=F64), _batch()
    out = RRR(input_grad_weight=7.0, temperature=0.5)(model, batch)
    grads = _per_image_grads(model, batch["image"], lambda z, i: torch.log_softmax(z, 0).sum())
    per_image = []
    for g, m in zip(grads, batch["mask"]):
        total = 0.0
        for c in range(g.shape[0]):  # squares summed over channels and pixels
            total = total + (((1 - m) * g[c]) ** 2).sum()
        per_image.append(total)
    penalty = torch.stack(per_image).mean()
    ce = F.cross_entropy(model(batch["image"]) / 0.5, batch["label"])
    torch.testing.assert_close(out.terms["penalty"], penalty, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["ce"], ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["loss"], ce + 7.0 * penalty, rtol=1e-5, atol=1e-5)
    assert out.terms["penalty"] > 0


def test_gradmask_matches_a_per_image_loop():
    model, batch = tiny_vit(dtype=F64), _batch()
    out = GradMask(input_grad_weight=3.0)(model, batch)
    labels = batch["label"]
    grads = _per_image_grads(model, batch["image"], lambda z, i: z[labels[i]])
    per_image = [(((1 - m)[None] * g) ** 2).mean() for g, m in zip(grads, batch["mask"])]  # mean over c, h, w
    penalty = torch.stack(per_image).mean()
    ce = F.cross_entropy(model(batch["image"]), labels)
    torch.testing.assert_close(out.terms["penalty"], penalty, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["loss"], ce + 3.0 * penalty, rtol=1e-5, atol=1e-5)
    assert out.terms["penalty"] > 0


@pytest.mark.parametrize("objective", [RRR(), GradMask()], ids=["rrr", "gradmask"])
def test_penalty_is_zero_without_background_and_finite(objective):
    model, batch = tiny_vit(dtype=F64), _batch()
    full = objective(model, {**batch, "mask": torch.ones_like(batch["mask"])})
    assert full.terms["penalty"] == 0
    grads = torch.autograd.grad(full.terms["loss"], _params(model))
    assert all(torch.isfinite(g).all() for g in grads)
    empty = objective(model, {**batch, "mask": torch.zeros_like(batch["mask"])})
    assert empty.terms["penalty"] > objective(model, batch).terms["penalty"] > 0


def test_penalty_mask_must_match_the_images():
    with pytest.raises(cft.CftError, match="mask must be"):
        RRR()(tiny_vit(), {**_batch(dtype=torch.float32), "mask": torch.zeros(3, 4, 6)})


# ---- the penalty trains the weights (second order) --------------------------------------------------------


class PenaltyOf(nn.Module):
    """The objective's penalty as a function of the model's parameters (for torch.func.functional_call)."""

    def __init__(self, model: nn.Module, objective, batch: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model, self.objective, self.batch = model, objective, batch

    def forward(self) -> torch.Tensor:
        return self.objective(self.model, self.batch).terms["penalty"]


@pytest.mark.parametrize("make", [RRR, GradMask], ids=["rrr", "gradmask"])
def test_penalty_gradient_reaches_the_weights(make):
    model, batch = tiny_vit(dtype=F64), _batch()
    params, weight = _params(model), 2.5
    out = make(input_grad_weight=weight)(model, batch)
    full = torch.autograd.grad(out.terms["loss"], params, retain_graph=True)
    ce_only = torch.autograd.grad(F.cross_entropy(model(batch["image"]), batch["label"]), params)
    penalty = torch.autograd.grad(out.terms["penalty"], params, allow_unused=True)
    penalty = [torch.zeros_like(p) if g is None else g for p, g in zip(params, penalty)]
    # what the full loss adds to the CE gradient is exactly weight * d(penalty)/d(weights), and it is not zero
    for f, c, p in zip(full, ce_only, penalty):
        torch.testing.assert_close(f - c, weight * p, rtol=1e-6, atol=1e-10)
    assert math.sqrt(sum(float((p**2).sum()) for p in penalty)) > 1e-3
    # the attention and embedding weights get some of it, not only the head
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    moved = {n.split(".")[0] for n, p in zip(names, penalty) if float(p.abs().max()) > 0}
    assert {"patch_embed", "blocks", "head"} <= moved

    # the pitfall: create_graph=False gives the same penalty VALUE but no gradient, so it never trains
    buggy = make(input_grad_weight=weight, create_graph=False)(model, batch)
    torch.testing.assert_close(buggy.terms["penalty"], out.terms["penalty"], rtol=1e-10, atol=0)
    assert not buggy.terms["penalty"].requires_grad
    for b, c in zip(torch.autograd.grad(buggy.terms["loss"], params), ce_only):
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12)  # the loss gradient is CE's alone


@pytest.mark.parametrize("make", [RRR, GradMask], ids=["rrr", "gradmask"])
def test_penalty_gradient_matches_finite_differences(make):
    model, batch = tiny_vit(dtype=F64), _batch(b=2)
    name = "model.blocks.0.norm1.weight"  # acts through the attention of block 0
    start = dict(model.named_parameters())[name.removeprefix("model.")].detach().clone()
    picked = torch.tensor([0, 5, 11, 17, 23])  # gradcheck these entries (fewer evaluations)

    def penalty_of(objective):
        wrapper = PenaltyOf(model, objective, batch)
        return lambda w: torch.func.functional_call(wrapper, {name: start.index_put((picked,), w)}, ())

    w = start[picked].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penalty_of(make()), (w,), eps=1e-6, atol=1e-6, rtol=1e-4)
    (analytic,) = torch.autograd.grad(penalty_of(make())(w), w)
    assert float(analytic.abs().min()) > 1e-6
    # with create_graph=False finite differences still see the dependence, but autograd reports none
    assert not torch.autograd.gradcheck(penalty_of(make(create_graph=False)), (w,), raise_exception=False)


# ---- RRDA ------------------------------------------------------------------------------------------------


def test_paste_foregrounds_is_the_hand_formula():
    batch = _batch(b=3)
    x, m = batch["image"], batch["mask"]
    background = torch.tensor([2, 0, 1])
    out = paste_foregrounds(x, m, background)
    for i, j in enumerate(background.tolist()):
        for c in range(3):
            expected = m[i] * x[i, c] + (1 - m[i]) * x[j, c]
            torch.testing.assert_close(out[i, c], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(paste_foregrounds(x, torch.zeros_like(m), background), x[background])
    torch.testing.assert_close(paste_foregrounds(x, torch.ones_like(m), background), x)
    with pytest.raises(cft.CftError, match="mask must be"):
        paste_foregrounds(x, m[:, :16], background)


def test_background_permutation_is_seeded_and_never_the_own_image():
    torch.manual_seed(5)
    first = background_permutation(8)
    torch.manual_seed(5)
    assert torch.equal(background_permutation(8), first)
    seen = set()
    for n in range(2, 9):
        for _ in range(20):
            perm = background_permutation(n)
            assert sorted(perm.tolist()) == list(range(n))
            assert bool((perm != torch.arange(n)).all())
            seen.add(tuple(perm.tolist()))
    assert len([p for p in seen if len(p) == 4]) > 3  # not one fixed cycle
    assert background_permutation(1).tolist() == [0]


class Recorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def test_rrda_trains_on_composites_labelled_by_their_foreground():
    model, batch = Recorder(tiny_vit(dtype=F64)), _batch(b=4)
    objective = RRDA(original_weight=0.5, temperature=2.0)
    torch.manual_seed(3)
    out = objective(model, batch)
    torch.manual_seed(3)
    composite, background = objective.composite(batch["image"], batch["mask"])
    assert bool((background != torch.arange(4)).all())
    (seen,) = model.inputs  # one forward pass: the originals, then the composites
    torch.testing.assert_close(seen, torch.cat([batch["image"], composite]))
    with torch.no_grad():
        z_orig, z_comp = model.inner(batch["image"]), model.inner(composite)
    labels = batch["label"]
    ce_comp = F.cross_entropy(z_comp / 2.0, labels)
    torch.testing.assert_close(out.terms["ce_composite"], ce_comp)
    assert not torch.isclose(out.terms["ce_composite"], F.cross_entropy(z_comp / 2.0, labels[background]))
    torch.testing.assert_close(out.terms["ce_original"], F.cross_entropy(z_orig / 2.0, labels))
    torch.testing.assert_close(out.terms["loss"], ce_comp + 0.5 * out.terms["ce_original"])
    torch.testing.assert_close(out.logits, z_orig)

    model.inputs.clear()
    torch.manual_seed(3)
    only = RRDA(original_weight=0.0)(model, batch)
    assert set(only.terms) == {"ce_composite", "loss"}
    torch.testing.assert_close(model.inputs[0], composite)  # composites alone
    torch.testing.assert_close(only.logits, z_comp)


# ---- building by name, config errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, needs_mask",
    [
        ("erm", cft.train.Classification, False),
        ("no-guidance", cft.train.ConsistencyOnly, False),
        ("cft", RelevanceGuided, True),
        ("robustvit", RelevanceGuided, True),
        ("rrr", RRR, True),
        ("gradmask", GradMask, True),
        ("rrda", RRDA, True),
    ],
)
def test_build_objective_by_name(name, kind, needs_mask):
    objective = build_objective(from_dict(ObjectiveConfig, {"name": name}, where="objective"))
    assert isinstance(objective, kind) and objective.needs_mask is needs_mask


def test_build_objective_settings():
    assert build_objective(ObjectiveConfig(name="rrr")).input_grad_weight == RRR_WEIGHT == 1000.0
    assert build_objective(ObjectiveConfig(name="gradmask")).input_grad_weight == GRADMASK_WEIGHT == 4.0
    cfg = load_config(ObjectiveConfig, overrides=["name=gradmask", "input_grad_weight=50", "temperature=0.65"])
    assert isinstance(cfg, GradMaskSettings) and build_objective(cfg) == GradMask(50.0, 0.65)
    assert build_objective(objective_config("rrda", rrda_original_weight=0)) == RRDA(0.0, 1.0)
    cft_objective = build_objective(ObjectiveConfig(name="cft"))
    assert cft_objective.relevance_target == "predicted" and cft_objective.loss.form == "paper"
    robust = build_objective(objective_config("robustvit"))
    assert robust.loss.form == "robustvit" and robust.relevance_target == "label"
    assert (robust.loss.align_weight, robust.loss.cls_weight) == (0.8, 0.2)
    assert build_objective(objective_config("robustvit", relevance_target="predicted")).relevance_target == (
        "predicted"
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        # robustvit has no form (it always uses its own); before, form was accepted and ignored
        (
            {"name": "robustvit", "form": "bce"},
            "objective.form is a setting of objective.name cft, not of robustvit: delete it",
        ),
        (
            {"name": "cft", "input_grad_weight": 5},
            "objective.input_grad_weight is a setting of objective.name rrr, gradmask, not of cft",
        ),
        (
            {"name": "erm", "temperature": 2.0},
            "objective.temperature is a setting of objective.name no-guidance, cft, robustvit, rrr, ",
        ),
        (
            {"name": "rrda", "cls_target": "label"},
            "objective.cls_target is a setting of objective.name no-guidance, cft, robustvit, ",
        ),
        ({"name": "rrr", "magic": 1}, "unknown key(s) magic in objective; known: create_graph, input_grad_weight, "),
    ],
)
def test_a_setting_of_another_objective_is_an_error_naming_its_owners(fields, message):
    with pytest.raises(cft.CftError, match=re.escape(message)):
        from_dict(ObjectiveConfig, fields, where="objective")
    with pytest.raises(cft.CftError, match=re.escape(message)):  # a recipe's flat objective section
        load_recipe(None, [f"objective.{k}={v}" for k, v in fields.items()])


def test_each_objective_reads_its_own_settings_dataclass():
    expected = {
        "erm": ERMSettings,
        "no-guidance": ConsistencySettings,
        "cft": CFTSettings,
        "robustvit": RelevanceSettings,
        "rrr": RRRSettings,
        "gradmask": GradMaskSettings,
        "rrda": RRDASettings,
    }
    for name, cls in expected.items():
        assert settings_class(name) is cls and cls().name == name
        assert type(from_dict(ObjectiveConfig, {"name": name}, where="objective")) is cls
    with pytest.raises(cft.CftError, match="reads RRRSettings, not CFTSettings"):
        build_objective(CFTSettings(name="rrr"))


def test_robustvit_preset_is_robustvits_mse_on_the_labels_relevance():
    model, batch = tiny_vit(dtype=F64), _batch(b=2)
    out = build_objective(objective_config("robustvit", temperature=0.65))(model, batch)
    phi = relevance(model, batch["image"], batch["label"])
    phi = F.interpolate(phi[:, None], size=(32, 48), mode="bilinear", align_corners=False)[:, 0]
    s = batch["mask"]
    align = 2.0 * ((phi * (1 - s)) ** 2).mean() + 0.3 * (s * (phi - 1) ** 2).mean()
    logits = model(batch["image"])
    cls = F.cross_entropy(logits / 0.65, logits.argmax(1))
    torch.testing.assert_close(out.terms["align"], align)
    torch.testing.assert_close(out.terms["loss"], 0.8 * align + 0.2 * cls)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "rrr", "input_grad_weight": -1.0}, "objective.input_grad_weight"),
        ({"name": "gradmask", "input_grad_weight": math.nan}, "objective.input_grad_weight"),
        ({"name": "rrda", "rrda_original_weight": -0.5}, "objective.rrda_original_weight"),
        ({"name": "cft", "align_weight": -0.8}, "objective.align_weight"),
        ({"name": "robustvit", "non_concept_weight": -2.0}, "objective.non_concept_weight"),
        ({"name": "rrr", "temperature": 0.0}, "objective.temperature"),
        ({"name": "rrr", "create_graph": False}, "objective.create_graph"),
        ({"name": "gradmask", "create_graph": False}, "objective.create_graph"),
        ({"name": "robustvit", "relevance_target": "top1"}, "objective.relevance_target"),
        ({"name": "cft", "form": "mse"}, "objective.form"),
        ({"name": "cft", "method": "magic"}, "objective.method"),
        ({"name": "robust-vit"}, "objective.name"),
    ],
)
def test_bad_config_names_the_field(fields, field):
    with pytest.raises(cft.CftError, match=field.replace(".", r"\.")) as err:
        build_objective(objective_config(**fields))
    if field == "objective.name":
        assert "robustvit, rrr, gradmask, rrda" in str(err.value)


# ---- the one trainer -------------------------------------------------------------------------------------


class RandomMasks(torch.utils.data.Dataset):
    """Blobs' images and labels with random binary masks."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.items = Blobs(n, seed).items
        g = torch.Generator().manual_seed(seed + 100)
        self.masks = (torch.rand(n, 32, 48, generator=g) > 0.5).float()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {**self.items[i], "mask": self.masks[i]}


EXPECTED_TERMS = {
    "robustvit": {"concept", "non_concept", "align", "cls", "loss"},
    "rrr": {"ce", "penalty", "loss"},
    "gradmask": {"ce", "penalty", "loss"},
    "rrda": {"ce_composite", "ce_original", "loss"},
}


@pytest.mark.parametrize("name", list(EXPECTED_TERMS))
def test_trainer_fits_each_baseline(tmp_path, name):
    trainer = make_trainer(tmp_path / name, objective=name, epochs=2)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit(RandomMasks(8), RandomMasks(4, seed=1))
    for record in result.history:
        assert {k.removeprefix("train_") for k in record if k.startswith("train_")} == EXPECTED_TERMS[name] | {
            "top1",
            "seconds",
        }
        assert all(math.isfinite(v) for k, v in record.items() if k.startswith(("train_", "val_")))
    after = trainer.model.state_dict()
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 1e-4
    if name != "rrda":
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_rrda_under_the_trainer_is_deterministic(tmp_path):
    runs = []
    for run in ("a", "b"):
        trainer = make_trainer(tmp_path / run, objective="rrda", epochs=1)
        trainer.fit(RandomMasks(8), None)
        runs.append(trainer.model.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=0, atol=0)
