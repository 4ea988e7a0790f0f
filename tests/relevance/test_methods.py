"""cft.relevance against plain per-image implementations, gradients, second order and hygiene."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch

import cft
from cft.losses import CFTLoss
from tests.helpers.models import tiny_vit
from tests.helpers.reference import REFERENCES, reference_batch

METHODS = list(cft.METHODS)  # the registry: a method registered without a reference fails below
FIRST_ORDER = [m for m in METHODS if not cft.METHODS[m].create_graph_default]  # gradients taken as constants

# (timm name, extra kwargs, expected number of prefix tokens)
MODELS = {
    "vit-cls": ("vit_tiny_patch16_224", {}, 1),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {}, 2),
    "vit-reg4": ("vit_tiny_patch16_224", {"reg_tokens": 4}, 5),
    "deit3": ("deit3_small_patch16_224", {}, 1),
    "avgpool-reg1": ("vit_tiny_patch16_224", {"class_token": False, "reg_tokens": 1, "global_pool": "avg"}, 1),
    "cls-but-avgpool": ("vit_tiny_patch16_224", {"global_pool": "avg"}, 1),
}


def test_every_registered_method_has_a_per_image_reference():
    assert sorted(cft.METHODS) == sorted(REFERENCES), "add the reference of a new method to tests/helpers/reference.py"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_key", list(MODELS))
def test_matches_per_image_reference(model_key, method):
    name, kwargs, prefix = MODELS[model_key]
    model = tiny_vit(name, dtype=torch.float64, **kwargs)
    assert cft.vit_layout(model).num_prefix_tokens == prefix
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 48, dtype=torch.float64)
    targets = torch.tensor([0, 3, 6])
    got = cft.relevance(model, images, targets, method=method)
    assert got.shape == (3, 4, 6)  # non-square grid: 32x48 pixels, patch 8
    want = reference_batch(model, images, targets, method)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.amin(dim=(1, 2)).eq(0).all() and got.amax(dim=(1, 2)).eq(1).all()


@pytest.mark.parametrize("method", FIRST_ORDER)
@pytest.mark.parametrize("model_key", ["vit-cls", "deit-distilled", "avgpool-reg1", "cls-but-avgpool"])
def test_parameter_gradients_match_per_image_reference(model_key, method):
    """The gradient of a loss on the maps reaches every parameter exactly as through the per-image formula (the
    method's gradient taken as a constant, create_graph=False)."""
    name, kwargs, _ = MODELS[model_key]
    model = tiny_vit(name, dtype=torch.float64, **kwargs).train()
    torch.manual_seed(3)
    images = torch.randn(3, 3, 32, 48, dtype=torch.float64)
    targets = torch.tensor([1, 4, 6])
    weights = torch.rand(3, 4, 6, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    maps = cft.relevance(model, images, targets, method)
    got = torch.autograd.grad((maps * weights).sum(), params, allow_unused=True)
    ref_maps = reference_batch(model, images, targets, method)
    want = torch.autograd.grad((ref_maps * weights).sum(), params, allow_unused=True)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in got) > len(params) // 2
    for g, w in zip(got, want, strict=True):
        g = torch.zeros_like(params[0]) if g is None and w is None else g
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, atol=1e-8, rtol=1e-6)


def test_predicted_class_is_default_target():
    model = tiny_vit(dtype=torch.float64)
    images = torch.randn(4, 3, 32, 48, dtype=torch.float64)
    maps, logits = cft.relevance_with_logits(model, images)
    torch.testing.assert_close(maps, cft.relevance(model, images, logits.argmax(1)))
    torch.testing.assert_close(maps, reference_batch(model, images, None, "grad-rollout"), atol=1e-5, rtol=0)


def test_float32_matches_reference():
    model = tiny_vit(dtype=torch.float32)
    images = torch.randn(2, 3, 32, 48)
    got = cft.relevance(model, images, [1, 2])
    want = reference_batch(model.double(), images.double(), torch.tensor([1, 2]), "grad-rollout").float()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_logits_equal_plain_forward():
    model = tiny_vit()
    images = torch.randn(3, 3, 32, 48)
    _, logits = cft.relevance_with_logits(model, images)
    torch.testing.assert_close(logits, model(images), atol=1e-5, rtol=1e-5)


def _step_gradients(model, images, mask, method):
    """Gradients of CE + the CFT loss with respect to every parameter, and the logits, for one batch."""
    rel, logits = cft.relevance_with_logits(model, images, method=method)
    loss = CFTLoss()(rel, mask, logits)["loss"] + torch.nn.functional.cross_entropy(logits, torch.arange(3) % 7)
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True), logits


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_key", ["vit-cls", "deit-distilled", "vit-reg4", "res-post", "cls-but-avgpool"])
def test_last_block_on_read_rows_changes_nothing(model_key, method, monkeypatch):
    """The last block's projection and MLP run on the rows the head reads only (prefix tokens of token-pooling
    models); the logits and every parameter gradient of a training loss equal those of the whole block."""
    from timm.models.vision_transformer import ResPostBlock

    from cft.relevance import timm_vit

    name, kwargs, prefix = MODELS.get(model_key, ("vit_tiny_patch16_224", {"block_fn": ResPostBlock}, 1))
    model = tiny_vit(name, dtype=torch.float64, **kwargs).train()
    rows: list[int] = []
    for module in (model.blocks[-1].attn.proj, model.blocks[-1].mlp.fc1):
        module.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[1]))
    torch.manual_seed(2)
    images = torch.randn(3, 3, 32, 48, dtype=torch.float64)
    mask = (torch.rand(3, 4, 6) > 0.5).double()
    fast, fast_logits = _step_gradients(model, images, mask, method)
    reads_prefix = model_key not in ("cls-but-avgpool", "res-post")  # post-norm blocks run whole
    assert rows[-2:] == [prefix if reads_prefix else 4 * 6 + prefix] * 2
    monkeypatch.setattr(timm_vit, "last_block_on_rows", lambda _model: contextlib.nullcontext())
    full, full_logits = _step_gradients(model, images, mask, method)
    assert rows[-2:] == [4 * 6 + prefix] * 2
    torch.testing.assert_close(fast_logits, full_logits, atol=1e-12, rtol=0)
    torch.testing.assert_close(fast_logits, model(images), atol=1e-12, rtol=0)
    for got, want in zip(fast, full, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_dynamic_image_size():
    model = tiny_vit(dynamic_img_size=True)
    maps = cft.relevance(model, torch.randn(2, 3, 40, 24))
    assert maps.shape == (2, 5, 3)


def test_constant_map_is_zero_not_nan():
    maps = cft.normalize(torch.ones(2, 3, 4))
    assert torch.equal(maps, torch.zeros(2, 3, 4))
    x = torch.ones(1, 3, 4, requires_grad=True)
    cft.normalize(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_upsample_to_image():
    maps = torch.rand(2, 4, 6)
    up = cft.upsample(maps, (32, 48))
    assert up.shape == (2, 32, 48) and up.min() >= 0 and up.max() <= 1
    nearest = cft.upsample(maps, (32, 48), mode="nearest")
    torch.testing.assert_close(nearest, maps.repeat_interleave(8, 1).repeat_interleave(8, 2))


def _qkv_grads(model, images, mask, create_graph, method="grad-rollout"):
    model.zero_grad()
    maps, logits = cft.relevance_with_logits(model, images, method=method, create_graph=create_graph)
    CFTLoss(cls_weight=0.0)(maps, mask, logits)["loss"].backward()
    return [blk.attn.qkv.weight.grad.clone() for blk in model.blocks]


@pytest.mark.parametrize("method", ["grad-rollout", "rollout", "attn-lrp", "gradcam"])
def test_alignment_gradient_reaches_attention_weights(method):
    model = tiny_vit(dtype=torch.float64)
    images = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    mask = (torch.rand(2, 4, 6) > 0.5).double()
    grads = _qkv_grads(model, images, mask, create_graph=False, method=method)
    last = -1 if method != "gradcam" else 0  # gradcam reads the input of the last block only
    assert grads[0].abs().sum() > 0 and grads[last].abs().sum() > 0


def test_create_graph_changes_gradients():
    model = tiny_vit(dtype=torch.float64)
    images = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    mask = (torch.rand(2, 4, 6) > 0.5).double()
    first = _qkv_grads(model, images, mask, create_graph=False)
    exact = _qkv_grads(model, images, mask, create_graph=True)
    assert all(not torch.allclose(a, b) for a, b in zip(first, exact))


def test_input_grad_needs_create_graph_to_train():
    model = tiny_vit(dtype=torch.float64)
    images = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    mask = (torch.rand(2, 4, 6) > 0.5).double()
    grads = _qkv_grads(model, images, mask, create_graph=None, method="input-grad")  # default: True
    assert grads[0].abs().sum() > 0
    model.zero_grad()
    maps, logits = cft.relevance_with_logits(model, images, method="input-grad", create_graph=False)
    if maps.requires_grad:  # through the input only: the parameters get no gradient
        CFTLoss(cls_weight=0.0)(maps, mask, logits)["loss"].backward()
    assert all(blk.attn.qkv.weight.grad is None or not blk.attn.qkv.weight.grad.any() for blk in model.blocks)


def _loss_of_weight(model, images, mask, create_graph, method="grad-rollout"):
    """The alignment loss as a function of block 0's qkv bias, for gradcheck."""
    name = "blocks.0.attn.qkv.bias"
    params = dict(model.named_parameters())

    def loss(weight):
        with torch.nn.utils.stateless._reparametrize_module(model, {**params, name: weight}):
            maps = cft.relevance(model, images, [1, 2], method=method, create_graph=create_graph)
        return CFTLoss(cls_weight=0.0).alignment(maps, mask)["align"]

    return loss, params[name].detach().clone().requires_grad_(True)


@pytest.mark.parametrize("method", ["grad-rollout", "attn-lrp", "gradcam", "input-grad"])
def test_second_order_gradcheck(method):
    model = tiny_vit(dtype=torch.float64, img_size=16, embed_dim=8, num_heads=2)
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    loss, weight = _loss_of_weight(model, images, mask, create_graph=True, method=method)
    assert torch.autograd.gradcheck(loss, (weight,), eps=1e-6, atol=1e-5, rtol=1e-4)
    if method == "input-grad":
        return
    # The reference-code default treats dS/dA as a constant: its gradient is NOT the exact one.
    loss_first, weight = _loss_of_weight(model, images, mask, create_graph=False, method=method)
    assert not torch.autograd.gradcheck(loss_first, (weight,), eps=1e-6, atol=1e-5, rtol=1e-4, raise_exception=False)


def _tensor_count() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_no_hook_or_memory_leak():
    model = tiny_vit()
    fused = [blk.attn.fused_attn for blk in model.blocks]
    images = torch.randn(2, 3, 32, 48)
    for method in METHODS:
        cft.relevance(model, images, method=method)
    before = _tensor_count()
    for _ in range(10):
        for method in METHODS:
            cft.relevance(model, images, method=method).sum().backward()
    assert _tensor_count() <= before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert [blk.attn.fused_attn for blk in model.blocks] == fused


def test_hooks_removed_after_error():
    model = tiny_vit()
    with pytest.raises(cft.CftError, match="out of range"):
        cft.relevance(model, torch.randn(1, 3, 32, 48), targets=99)
    assert all(not m._forward_hooks for m in model.modules())


def test_works_under_no_grad_and_frozen_model():
    model = tiny_vit().requires_grad_(False)
    with torch.no_grad():
        maps = cft.relevance(model, torch.randn(2, 3, 32, 48))
    assert maps.shape == (2, 4, 6) and torch.isfinite(maps).all()


@pytest.mark.parametrize(
    ("images", "targets", "match"),
    [
        (torch.randn(3, 32, 48), None, "shape"),
        (torch.zeros(1, 3, 32, 48, dtype=torch.uint8), None, "floating-point"),
        (torch.randn(1, 1, 32, 48), None, "shape"),
        (torch.randn(1, 3, 64, 64), None, "resize"),
        (torch.randn(0, 3, 32, 48), None, "empty"),
        (torch.randn(2, 3, 32, 48), [0, 7], "out of range"),
        (torch.randn(2, 3, 32, 48), [-1, 0], "out of range"),
        (torch.randn(2, 3, 32, 48), [0, 1, 2], "integer class indices"),
        (torch.randn(2, 3, 32, 48), torch.tensor([0.5, 1.0]), "integer class indices"),
        ([[1.0]], None, "torch.Tensor"),
    ],
)
def test_bad_input_is_a_clear_error(images, targets, match):
    with pytest.raises(cft.CftError, match=match):
        cft.relevance(tiny_vit(), images, targets)


def test_unknown_method():
    with pytest.raises(cft.CftError, match="grad-rollout"):
        cft.relevance(tiny_vit(), torch.randn(1, 3, 32, 48), method="magic")


def test_non_vit_model_is_rejected():
    import timm

    cnn = timm.create_model("resnet18", num_classes=3)
    with pytest.raises(cft.CftError, match="unsupported model"):
        cft.relevance(cnn, torch.randn(1, 3, 32, 32))
