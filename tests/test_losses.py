"""CFT losses against values computed by hand from the formulas."""

from __future__ import annotations

import math

import pytest
import torch

import cft
from cft.losses import (
    CFTLoss,
    bce_alignment,
    concept_alignment,
    consistency,
    mask_to_grid,
    robustvit_alignment,
)

PHI = torch.tensor([[[0.9, 0.2], [0.6, 0.1]]])
MASK = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])


def test_paper_form_by_hand():
    terms = concept_alignment(PHI, MASK)
    concept = -(math.log(0.9) + math.log(0.6)) / 2
    non = -(math.log(1 - 0.2) + math.log(1 - 0.1)) / 2
    assert terms["concept"].item() == pytest.approx(concept, rel=1e-5)
    assert terms["non_concept"].item() == pytest.approx(non, rel=1e-5)
    assert terms["align"].item() == pytest.approx(0.5 * concept + 1.2 * non, rel=1e-5)


def test_paper_form_normalises_per_image_then_averages():
    phi = torch.tensor([[[0.5, 0.5]], [[0.9, 0.3]]])
    mask = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]])
    terms = concept_alignment(phi, mask)
    concept = (-math.log(0.5) + -math.log(0.9)) / 2  # image 1: mean of two; image 2: one pixel
    non = (0.0 + -math.log(0.7)) / 2  # image 1 has no background pixel: contributes 0
    assert terms["concept"].item() == pytest.approx(concept, rel=1e-5)
    assert terms["non_concept"].item() == pytest.approx(non, rel=1e-5)


def test_soft_mask_weights_pixels():
    phi = torch.tensor([[[0.8, 0.4]]])
    mask = torch.tensor([[[0.75, 0.25]]])
    terms = concept_alignment(phi, mask)
    concept = -(0.75 * math.log(0.8) + 0.25 * math.log(0.4)) / 1.0
    non = -(0.25 * math.log(0.2) + 0.75 * math.log(0.6)) / 1.0
    assert terms["concept"].item() == pytest.approx(concept, rel=1e-5)
    assert terms["non_concept"].item() == pytest.approx(non, rel=1e-5)


def test_bce_form_by_hand():
    terms = bce_alignment(PHI, MASK)
    eps = 1e-6
    fg = PHI * MASK
    concept = (
        -sum(
            s * math.log(max(p, eps)) + (1 - s) * math.log(max(1 - p, eps))
            for p, s in zip(fg.flatten().tolist(), MASK.flatten().tolist())
        )
        / 4
    )
    bg = (PHI * (1 - MASK)).flatten().tolist()
    non = -sum(math.log(1 - max(p, eps)) for p in bg) / 4
    assert terms["concept"].item() == pytest.approx(concept, rel=1e-4)
    assert terms["non_concept"].item() == pytest.approx(non, rel=1e-4)
    assert terms["align"].item() == pytest.approx(0.5 * concept + 1.2 * non, rel=1e-4)


def test_robustvit_form_by_hand():
    terms = robustvit_alignment(PHI, MASK)
    background = (0.2**2 + 0.1**2) / 4
    foreground = ((0.9 - 1) ** 2 + (0.6 - 1) ** 2) / 4
    assert terms["align"].item() == pytest.approx(2 * background + 0.3 * foreground, rel=1e-5)


def test_consistency_uses_own_argmax_with_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    t = 0.55
    scaled = logits / t
    expected = -(torch.log_softmax(scaled, 1)[0, 0] + torch.log_softmax(scaled, 1)[1, 2]) / 2
    assert consistency(logits, t).item() == pytest.approx(expected.item(), rel=1e-6)
    labels = torch.tensor([1, 1])
    expected_gt = -(torch.log_softmax(logits, 1)[0, 1] + torch.log_softmax(logits, 1)[1, 1]) / 2
    assert consistency(logits, 1.0, labels).item() == pytest.approx(expected_gt.item(), rel=1e-6)


def test_consistency_target_is_not_differentiated():
    logits = torch.tensor([[2.0, 1.0]], requires_grad=True)
    consistency(logits).backward()
    p = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    torch.testing.assert_close(logits.grad[0], p - torch.tensor([1.0, 0.0]))


def test_total_weights():
    logits = torch.tensor([[1.0, 3.0]])
    terms = CFTLoss()(PHI, MASK, logits)
    assert terms["loss"].item() == pytest.approx(0.8 * terms["align"].item() + 0.2 * terms["cls"].item(), rel=1e-6)
    custom = CFTLoss(form="robustvit", align_weight=1.0, cls_weight=0.5, temperature=0.65)(PHI, MASK, logits)
    expected = robustvit_alignment(PHI, MASK)["align"] + 0.5 * consistency(logits, 0.65)
    assert custom["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    weighted = CFTLoss(concept_weight=1.0, non_concept_weight=0.0).alignment(PHI, MASK)
    assert weighted["align"].item() == pytest.approx(concept_alignment(PHI, MASK)["concept"].item(), rel=1e-6)


@pytest.mark.parametrize("form", ["paper", "bce", "robustvit"])
@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("phi_value", [0.0, 1.0, 0.5])
def test_empty_and_full_masks_are_finite(form, fill, phi_value):
    phi = torch.full((2, 3, 3), phi_value, requires_grad=True)
    mask = torch.full((2, 3, 3), fill)
    terms = CFTLoss(form=form)(phi, mask, torch.randn(2, 5))
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert torch.isfinite(phi.grad).all()


def test_loss_decreases_when_relevance_moves_onto_the_mask():
    bad = torch.tensor([[[0.1, 0.9], [0.1, 0.9]]])
    good = torch.tensor([[[0.9, 0.1], [0.9, 0.1]]])
    for fn in (concept_alignment, bce_alignment, robustvit_alignment):
        assert fn(good, MASK)["align"] < fn(bad, MASK)["align"]


def test_mask_to_grid_modes():
    mask = torch.zeros(1, 4, 4)
    mask[0, 0, 0] = 1  # one pixel of the top-left 2x2 patch
    mask[0, 2:, 2:] = 1  # the whole bottom-right patch
    mask[0, 0:2, 2] = 1  # half of the top-right patch
    mean = mask_to_grid(mask, (2, 2))
    torch.testing.assert_close(mean, torch.tensor([[[0.25, 0.5], [0.0, 1.0]]]))
    torch.testing.assert_close(mask_to_grid(mask, (2, 2), "any"), torch.tensor([[[1.0, 1.0], [0.0, 1.0]]]))
    torch.testing.assert_close(mask_to_grid(mask, (2, 2), "majority"), torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))


def test_image_resolution_mask_with_upsampled_relevance():
    maps = torch.rand(2, 4, 6)
    mask = (torch.rand(2, 32, 48) > 0.5).float()
    up = concept_alignment(cft.upsample(maps, (32, 48)), mask)["align"]
    down = concept_alignment(maps, mask_to_grid(mask, (4, 6)))["align"]
    assert torch.isfinite(up) and torch.isfinite(down)


def test_bad_input():
    with pytest.raises(cft.CftError, match="mask_to_grid"):
        concept_alignment(torch.rand(1, 4, 6), torch.ones(1, 32, 48))
    with pytest.raises(cft.CftError, match="form"):
        CFTLoss(form="l2")
    with pytest.raises(cft.CftError, match="temperature"):
        consistency(torch.randn(2, 3), temperature=0)
    with pytest.raises(cft.CftError, match="mode"):
        mask_to_grid(torch.ones(1, 4, 4), (2, 2), "max")


@pytest.mark.parametrize("form", ["paper", "bce", "robustvit"])
def test_bf16_maps_with_exact_ones_give_the_float32_loss(form):
    """A bf16 map holds exact 0s and 1s (its spacing near 1 is 2^-8 > LOG_EPS): the loss is computed in float32,
    finite, and equal to the loss of the same values in float32."""
    from cft.losses import CFTLoss

    torch.manual_seed(0)
    maps = torch.rand(4, 6, 6)
    maps[:, 0, 0], maps[:, -1, -1] = 1.0, 0.0
    maps = maps.bfloat16()
    mask = (torch.rand(4, 6, 6) > 0.5).float()
    logits = torch.randn(4, 5).bfloat16()
    got = CFTLoss(form=form)(maps, mask, logits)
    want = CFTLoss(form=form)(maps.float(), mask, logits.float())
    for name, value in got.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
        assert value.item() == pytest.approx(want[name].item(), rel=1e-6), name


@pytest.mark.parametrize("form", ["paper", "bce", "robustvit"])
def test_cft_step_under_bf16_autocast_is_finite_and_close_to_fp32(form):
    """One relevance + loss + backward under CPU bf16 autocast: loss and gradients finite; the loss within 1 %
    of the float32 step's and the gradient's cosine similarity to it above 0.99 (measured: 0.2 % and 0.999)."""
    import cft
    from cft.losses import CFTLoss, mask_to_grid

    torch.manual_seed(0)
    model = cft.load_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=48, num_classes=4)
    images = torch.randn(8, 3, 32, 32)
    mask = torch.zeros(8, 32, 32)
    mask[:, 8:24, 8:24] = 1
    results = {}
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            maps, logits = cft.relevance_with_logits(model, images)
            terms = CFTLoss(form=form)(maps, mask_to_grid(mask, tuple(maps.shape[-2:])), logits)
        terms["loss"].backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[amp] = terms["loss"].detach(), grad
    (loss32, grad32), (loss16, grad16) = results[False], results[True]
    assert torch.isfinite(loss16) and torch.isfinite(grad16).all()
    assert abs(loss16 - loss32) / loss32 < 0.01
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99
