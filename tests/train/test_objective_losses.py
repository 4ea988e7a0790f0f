"""Every objective computes exactly the loss it computed before the objectives owned their settings (issue 22):
the values below were computed by the code of the flat ObjectiveConfig (commit b7dea32) on the same fixed tiny
float64 model and batch, for each objective at its defaults and with its settings changed."""

from __future__ import annotations

import pytest
import torch

from cft.config import from_dict
from cft.train import OBJECTIVES, ObjectiveConfig, build_objective
from tests.helpers.models import tiny_vit

F64 = torch.float64

# (objective, its settings, the loss the flat ObjectiveConfig's code computed)
PINNED = [
    ("erm", {}, 2.0544438658064545),
    ("no-guidance", {}, 0.9157018974581194),
    ("no-guidance", {"temperature": 0.7, "cls_target": "label"}, 2.3966062272890127),
    ("no-guidance", {"cls_target": "original", "anchor_weight": 2.0}, 3.069560538920369),
    ("cft", {}, 1.4702338547401888),
    (
        "cft",
        {
            "form": "bce",
            "align_weight": 0.5,
            "cls_weight": 0.7,
            "temperature": 0.7,
            "concept_weight": 0.4,
            "non_concept_weight": 1.5,
            "cls_target": "label",
            "mask_resolution": "patch",
            "relevance_target": "label",
        },
        2.171250166633607,
    ),
    ("cft", {"method": "rollout", "form": "robustvit"}, 0.3357572237567551),
    ("cft", {"cls_target": "original", "anchor_weight": 3.0, "create_graph": True}, 4.377390603821238),
    ("robustvit", {}, 0.3046446858534656),
    (
        "robustvit",
        {
            "align_weight": 0.95,
            "cls_weight": 0.05,
            "non_concept_weight": 6.0,
            "temperature": 0.65,
            "relevance_target": "predicted",
            "cls_target": "original",
        },
        2.0250595588131852,
    ),
    ("rrr", {}, 13869.302323705744),
    ("rrr", {"input_grad_weight": 50.0, "temperature": 0.65, "create_graph": True}, 695.8569533550766),
    ("gradmask", {}, 2.055572941666479),
    ("gradmask", {"input_grad_weight": 400.0, "temperature": 2.0}, 1.9311680008676033),
    ("rrda", {}, 4.281166756930414),
    ("rrda", {"rrda_original_weight": 0.0, "temperature": 0.5}, 3.0995428271835457),
]


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(3, 32, 48, generator=g) > 0.5).to(F64)
    mask[0] = torch.rand(32, 48, generator=g, dtype=F64)
    return {
        "image": torch.randn(3, 3, 32, 48, generator=g, dtype=F64),
        "label": torch.tensor([0, 3, 6]),
        "mask": mask,
        "anchor": torch.randn(3, 3, 32, 48, generator=g, dtype=F64),  # read by cls_target original only
    }


@pytest.mark.parametrize("name, settings, expected", PINNED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(PINNED)])
def test_every_objective_computes_the_loss_it_computed_before(name, settings, expected):
    objective = build_objective(from_dict(ObjectiveConfig, {"name": name, **settings}, where="objective"))
    model = tiny_vit(dtype=F64)
    if getattr(objective, "wants_reference", False):
        objective.bind_reference(tiny_vit(dtype=F64, seed=5))
    torch.manual_seed(3)  # rrda's background permutation
    loss = objective(model, _batch()).terms["loss"].item()
    assert loss == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_every_objective_is_pinned():
    assert {name for name, _, _ in PINNED} >= set(OBJECTIVES)
