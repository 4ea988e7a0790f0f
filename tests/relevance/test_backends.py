"""Relevance beyond timm ViTs: Hugging Face ViT / DeiT / DINOv2 and ConvNeXt-V2 (timm and transformers).

Every map is checked against a plain per-image computation written here from the formula (the models are
run with output_attentions=True or by hand, never through cft's hooks), HF ViT / distilled DeiT against the
same weights in timm, and the ConvNeXt maps for exact second-order gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cft
from cft.losses import CFTLoss
from cft.models.hf import HFClassifier
from tests.helpers.models import tiny_vit
from tests.helpers.reference import minmax

transformers = pytest.importorskip("transformers")

TINY_HF = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, num_labels=7, patch_size=8)

# kind -> (model class, config class, config overrides, image size, prefix tokens written out by hand)
HF_KINDS = {
    "vit": ("ViTForImageClassification", "ViTConfig", {"image_size": (32, 48), "intermediate_size": 48}, 1),
    "deit": ("DeiTForImageClassification", "DeiTConfig", {"image_size": (32, 48), "intermediate_size": 48}, 2),
    "deit-distilled": (
        "DeiTForImageClassificationWithTeacher",
        "DeiTConfig",
        {"image_size": (32, 48), "intermediate_size": 48},
        2,
    ),
    "dinov2": ("Dinov2ForImageClassification", "Dinov2Config", {"image_size": 32, "mlp_ratio": 2}, 1),
    "dinov2-reg": (
        "Dinov2WithRegistersForImageClassification",
        "Dinov2WithRegistersConfig",
        {"image_size": 32, "mlp_ratio": 2, "num_register_tokens": 3},
        4,
    ),
}
IMAGES = (32, 48)  # DINOv2 (config 32x32) interpolates its position embeddings to this size
GRID = (4, 6)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Add noise to every weight so attention is far from uniform and the maps are informative."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def hf_model(kind: str, dtype: torch.dtype = torch.float64, attn: str | None = "eager", **overrides):
    cls_name, config_name, extra, _ = HF_KINDS[kind]
    kwargs = {**TINY_HF, **extra, **overrides}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config).eval()
    return perturb(model).to(dtype)


def tiny_convnext(dtype: torch.dtype = torch.float64, **kwargs) -> torch.nn.Module:
    """cft.load_model("convnextv2_atto") shrunk: 4 stages of one block, dims 8..32, GRN on."""
    torch.manual_seed(0)
    model = cft.load_model("convnextv2_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=7, **kwargs)
    return perturb(model.eval(), scale=0.2).to(dtype)


def hf_convnext(dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    config = transformers.ConvNextV2Config(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=7)
    torch.manual_seed(0)
    return perturb(transformers.ConvNextV2ForImageClassification(config).eval(), scale=0.2).to(dtype)


# ---------------------------------------------------------------- plain per-image references


def hf_reference(model, image: torch.Tensor, target: int, method: str, prefix: int) -> torch.Tensor:
    """One image's normalised map from the HF model's own output_attentions, by the formula."""
    image = image[None].clone().requires_grad_(True)
    out = model(pixel_values=image, output_attentions=True)
    score, attns = out.logits[0, target], [a[0] for a in out.attentions]  # (heads, N, N) each
    if method == "input-grad":
        (g,) = torch.autograd.grad(score, [image])
        pixel = (image[0] * g[0]).sum(0).abs()
        return minmax(pixel.reshape(GRID[0], 8, GRID[1], 8).mean(dim=(1, 3)))
    n = attns[0].shape[-1]
    assert n == prefix + GRID[0] * GRID[1]
    eye = torch.eye(n, dtype=attns[0].dtype)
    if method == "rollout":
        r = eye
        for a in attns:
            m = 0.5 * a.mean(0) + 0.5 * eye
            r = (m / m.sum(-1, keepdim=True)) @ r
    else:
        grads = [g[0] for g in torch.autograd.grad(score, out.attentions)]
        r = eye
        for g, a in zip(grads, attns):
            r = r + (g * a).clamp(min=0).mean(0) @ r
    return minmax(r[0, prefix:].reshape(GRID))


def convnext_reference(model, images: torch.Tensor, targets: list[int], method: str, hf: bool = False):
    """Maps of a ConvNeXt computed by a hand-written forward: F = last stage output, Grad-CAM on F."""
    maps = []
    for image, target in zip(images, targets):
        x = image[None].clone().requires_grad_(True)
        if hf:
            inner = model.convnextv2
            feats = inner.encoder(inner.embeddings(x)).last_hidden_state
            logits = model.classifier(inner.layernorm(feats.mean([-2, -1])))
        else:
            feats = model.stages(model.stem(x))
            logits = model.forward_head(model.norm_pre(feats))
        score = logits[0, target]
        if method == "gradcam":
            (g,) = torch.autograd.grad(score, [feats])
            alpha = g[0].mean(dim=(1, 2))
            m = torch.relu(torch.einsum("c,chw->hw", alpha, feats[0]))
        else:
            (g,) = torch.autograd.grad(score, [x])
            pixel = (x[0] * g[0]).sum(0).abs()
            m = F.adaptive_avg_pool2d(pixel[None, None], feats.shape[-2:])[0, 0]
        maps.append(minmax(m))
    return torch.stack(maps)


# ---------------------------------------------------------------- Hugging Face ViT / DeiT / DINOv2


@pytest.mark.parametrize("method", ["grad-rollout", "rollout", "input-grad"])
@pytest.mark.parametrize("kind", list(HF_KINDS))
def test_hf_maps_match_plain_formula(kind, method):
    model = hf_model(kind)
    prefix = HF_KINDS[kind][3]
    torch.manual_seed(1)
    images = torch.randn(3, 3, *IMAGES, dtype=torch.float64)
    targets = [0, 3, 6]
    got, logits = cft.relevance_with_logits(model, images, targets, method=method)
    assert got.shape == (3, *GRID)
    want = torch.stack([hf_reference(model, img, t, method, prefix) for img, t in zip(images, targets)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.amin(dim=(1, 2)).eq(0).all() and got.amax(dim=(1, 2)).eq(1).all()
    torch.testing.assert_close(logits, model(pixel_values=images).logits)


@pytest.mark.parametrize("method", ["grad-rollout", "gradcam"])
@pytest.mark.parametrize("kind", list(HF_KINDS))
def test_hf_last_layer_on_read_rows_changes_nothing(kind, method, monkeypatch):
    """ViT / DeiT: the last layer's output projection and MLP run on the prefix tokens alone, DINOv2 whole; the
    logits and every parameter gradient of a training loss equal those of the whole layer."""
    from cft.relevance import hf

    model = HFClassifier(hf_model(kind).train())
    last = hf._layers(model.model)[-1]
    rows: list[int] = []
    for module in (last.attention.o_proj, last.mlp.fc1):
        module.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[1]))
    torch.manual_seed(2)
    images = torch.randn(3, 3, *IMAGES, dtype=torch.float64)
    mask = (torch.rand(3, *GRID) > 0.5).double()
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        maps, logits = cft.relevance_with_logits(model, images, method=method)
        loss = CFTLoss()(maps, mask, logits)["loss"] + F.cross_entropy(logits, torch.arange(3))
        return torch.autograd.grad(loss, params, allow_unused=True), logits

    fast, fast_logits = step()
    prefix, tokens = HF_KINDS[kind][3], HF_KINDS[kind][3] + GRID[0] * GRID[1]
    assert rows[-2:] == [prefix if kind in ("vit", "deit", "deit-distilled") else tokens] * 2
    monkeypatch.setattr(hf, "_read_rows", lambda _kind, _config: None)
    full, full_logits = step()
    assert rows[-2:] == [tokens] * 2
    torch.testing.assert_close(fast_logits, full_logits, atol=1e-12, rtol=0)
    for got, want in zip(fast, full, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("kind", ["vit", "dinov2-reg"])
def test_hf_wrapper_and_raw_model_agree(kind):
    model = hf_model(kind)
    images = torch.randn(2, 3, *IMAGES, dtype=torch.float64)
    wrapped = HFClassifier(model)
    torch.testing.assert_close(wrapped(images), model(pixel_values=images).logits)
    for method in cft.METHODS:
        torch.testing.assert_close(
            cft.relevance(wrapped, images, method=method), cft.relevance(model, images, method=method)
        )


def _copy_timm_vit_to_hf(timm_model, hf, prefix: str) -> None:
    """Copy a timm VisionTransformer's weights into the equivalent HF ViT / DeiT (the same computation)."""
    base = getattr(hf, prefix)
    emb = base.embeddings
    with torch.no_grad():
        emb.cls_token.copy_(timm_model.cls_token)
        if getattr(timm_model, "dist_token", None) is not None:
            emb.distillation_token.copy_(timm_model.dist_token)
        emb.position_embeddings.copy_(timm_model.pos_embed)
        emb.patch_embeddings.projection.load_state_dict(timm_model.patch_embed.proj.state_dict())
        for blk, layer in zip(timm_model.blocks, base.layers):
            layer.layernorm_before.load_state_dict(blk.norm1.state_dict())
            layer.layernorm_after.load_state_dict(blk.norm2.state_dict())
            for i, proj in enumerate((layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj)):
                proj.weight.copy_(blk.attn.qkv.weight.chunk(3)[i])
                proj.bias.copy_(blk.attn.qkv.bias.chunk(3)[i])
            layer.attention.o_proj.load_state_dict(blk.attn.proj.state_dict())
            layer.mlp.fc1.load_state_dict(blk.mlp.fc1.state_dict())
            layer.mlp.fc2.load_state_dict(blk.mlp.fc2.state_dict())
        base.layernorm.load_state_dict(timm_model.norm.state_dict())
        if prefix == "vit":
            hf.classifier.load_state_dict(timm_model.head.state_dict())
        else:
            hf.cls_classifier.load_state_dict(timm_model.head.state_dict())
            hf.distillation_classifier.load_state_dict(timm_model.head_dist.state_dict())


@pytest.mark.parametrize("method", list(cft.METHODS))
@pytest.mark.parametrize(
    ("timm_name", "hf_kind", "prefix"),
    [("vit_tiny_patch16_224", "vit", "vit"), ("deit_tiny_distilled_patch16_224", "deit-distilled", "deit")],
)
def test_hf_equals_timm_with_the_same_weights(timm_name, hf_kind, prefix, method):
    timm_model = tiny_vit(timm_name, dtype=torch.float64)
    hf = hf_model(hf_kind, intermediate_size=96, layer_norm_eps=1e-6, hidden_act="gelu")
    _copy_timm_vit_to_hf(timm_model, hf, prefix)
    images = torch.randn(2, 3, *IMAGES, dtype=torch.float64)
    want, want_logits = cft.relevance_with_logits(timm_model, images, [1, 5], method=method)
    got, logits = cft.relevance_with_logits(HFClassifier(hf), images, [1, 5], method=method)
    torch.testing.assert_close(logits, want_logits, atol=1e-6, rtol=1e-6)  # HF's ViT softmax runs in float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_hf_alignment_gradient_reaches_attention_weights(kind):
    model = hf_model(kind)
    images = torch.randn(2, 3, *IMAGES, dtype=torch.float64)
    mask = (torch.rand(2, *GRID) > 0.5).double()
    maps, logits = cft.relevance_with_logits(model, images)
    CFTLoss()(maps, mask, logits)["loss"].backward()
    q = [m.attention.q_proj.weight.grad for m in model.modules() if hasattr(m, "attention")]
    assert len(q) == 2 and all(g is not None and g.abs().sum() > 0 for g in q)


def test_hf_interpolation_for_other_image_sizes():
    model = hf_model("vit", image_size=32)
    with pytest.raises(cft.CftError, match="interpolate_pos_encoding"):
        cft.relevance(model, torch.randn(1, 3, *IMAGES, dtype=torch.float64))
    maps = cft.relevance(HFClassifier(model, interpolate_pos_encoding=True), torch.randn(2, 3, *IMAGES).double())
    assert maps.shape == (2, *GRID)


def test_hf_without_eager_attention_is_refused():
    model = hf_model("vit", attn="sdpa")
    with pytest.raises(cft.CftError, match='attn_implementation="eager"'):
        cft.relevance(model, torch.randn(1, 3, *IMAGES, dtype=torch.float64))
    assert not any(m._forward_hooks for m in model.modules())


def test_unsupported_hf_model_is_refused():
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], num_labels=3)
    with pytest.raises(cft.CftError, match="unsupported Hugging Face model"):
        cft.relevance(transformers.ResNetForImageClassification(config), torch.randn(1, 3, 32, 32))
    with pytest.raises(cft.CftError, match="unsupported Hugging Face model"):
        HFClassifier(transformers.ResNetForImageClassification(config))


@pytest.mark.parametrize("kind", ["vit", "deit-distilled", "dinov2-reg"])
def test_load_model_hf_folder(tmp_path, kind):
    model = hf_model(kind, dtype=torch.float32, attn=None)  # saved with the default (sdpa) attention
    model.save_pretrained(tmp_path)
    loaded = cft.load_model(f"hf:{tmp_path}", pretrained=True)
    assert isinstance(loaded, HFClassifier) and type(loaded.model) is type(model)
    assert loaded.config._attn_implementation == "eager"
    images = torch.randn(2, 3, *IMAGES)
    torch.testing.assert_close(loaded(images), model(pixel_values=images).logits)
    assert cft.relevance(loaded, images).shape == (2, *GRID)
    random = cft.load_model(f"hf:{tmp_path}", num_labels=3)  # architecture only, a 3-class head
    assert random(images).shape == (2, 3)
    head = cft.load_model(f"hf:{tmp_path}", pretrained=True, num_labels=3)
    assert head(images).shape == (2, 3)
    path = tmp_path / "ckpt.safetensors"
    cft.save_checkpoint(loaded, path)
    again = cft.load_model(f"hf:{tmp_path}", checkpoint=path)
    torch.testing.assert_close(again.eval()(images), loaded(images))


def test_load_model_hf_reads_image_processor(tmp_path):
    from cft.data.images import preprocessor

    vit, dino = tmp_path / "vit", tmp_path / "dino"
    hf_model("vit", dtype=torch.float32).save_pretrained(vit)
    transformers.ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2).save_pretrained(vit)
    config = preprocessor(cft.load_model(f"hf:{vit}")).config  # the model's own size wins over the processor's
    assert config["mean"] == (0.5,) * 3 and config["std"] == (0.5,) * 3 and config["input_size"] == (3, *IMAGES)
    assert config["interpolation"] == "bilinear" and config["crop_mode"] == "squash"
    hf_model("dinov2", dtype=torch.float32).save_pretrained(dino)
    size, crop = {"shortest_edge": 40}, {"height": 32, "width": 32}
    transformers.BitImageProcessor(size=size, crop_size=crop, do_center_crop=True).save_pretrained(dino)
    config = preprocessor(cft.load_model(f"hf:{dino}")).config
    assert config["input_size"] == (3, 32, 32) and config["crop_pct"] == pytest.approx(0.8)
    assert config["mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # CLIP's, Bit's default
    plain = HFClassifier(hf_model("dinov2"))  # no processor: timm's ImageNet defaults at the config's size
    assert plain.pretrained_cfg["input_size"] == (3, 32, 32) and plain.pretrained_cfg["crop_pct"] == 0.875


def test_load_model_hf_errors(tmp_path):
    with pytest.raises(cft.CftError, match="cannot load Hugging Face model"):
        cft.load_model(f"hf:{tmp_path / 'missing'}")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], num_labels=3)
    config.save_pretrained(tmp_path)
    with pytest.raises(cft.CftError, match="unsupported Hugging Face model type 'resnet'"):
        cft.load_model(f"hf:{tmp_path}")


# ---------------------------------------------------------------- ConvNeXt-V2


@pytest.mark.parametrize("method", ["gradcam", "input-grad"])
@pytest.mark.parametrize("variant", ["timm", "timm-os16", "hf"])
def test_convnext_maps_match_hand_formula(variant, method):
    model = hf_convnext() if variant == "hf" else tiny_convnext(output_stride=16 if variant == "timm-os16" else 32)
    grid = (4, 6) if variant == "timm-os16" else (2, 3)
    torch.manual_seed(1)
    images = torch.randn(3, 3, 64, 96, dtype=torch.float64)
    got, logits = cft.relevance_with_logits(model, images, [0, 3, 6], method=method)
    assert got.shape == (3, *grid)
    want = convnext_reference(model, images, [0, 3, 6], method, hf=variant == "hf")
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    assert got.amax(dim=(1, 2)).eq(1).all()


def test_convnext_alignment_gradient_reaches_stem_and_stages():
    model = tiny_convnext(output_stride=16)
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    mask = (torch.rand(2, 4, 6) > 0.5).double()
    maps, logits = cft.relevance_with_logits(model, images, method="gradcam")
    CFTLoss(cls_weight=0.0)(maps, mask, logits)["loss"].backward()
    weights = [model.stem[0].weight] + [stage.blocks[0].conv_dw.weight for stage in model.stages]
    weights.append(model.stages[0].blocks[0].mlp.grn.weight)
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)
    assert model.head.fc.weight.grad.abs().sum() > 0  # through alpha: create_graph=True is the default


def _convnext_loss_of_bias(model, images, mask, create_graph):
    name = "stem.0.bias"
    params = dict(model.named_parameters())

    def loss(bias):
        with torch.nn.utils.stateless._reparametrize_module(model, {**params, name: bias}):
            maps = cft.relevance(model, images, [1, 2], method="gradcam", create_graph=create_graph)
        return CFTLoss(cls_weight=0.0).alignment(maps, mask)["align"]

    return loss, params[name].detach().clone().requires_grad_(True)


def test_convnext_second_order_gradcheck():
    model = tiny_convnext(output_stride=16)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    loss, bias = _convnext_loss_of_bias(model, images, mask, create_graph=True)
    assert torch.autograd.gradcheck(loss, (bias,), eps=1e-6, atol=1e-5, rtol=1e-4)
    # With the gradient taken as a constant (create_graph=False) the parameter gradient is NOT the exact one.
    loss, bias = _convnext_loss_of_bias(model, images, mask, create_graph=False)
    assert not torch.autograd.gradcheck(loss, (bias,), eps=1e-6, atol=1e-5, rtol=1e-4, raise_exception=False)


def test_convnext_from_timm_class_directly():
    from timm.models.convnext import ConvNeXt

    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), use_grn=True, ls_init_value=None, num_classes=5)
    maps = cft.relevance(model.eval(), torch.randn(2, 3, 64, 64), method="gradcam")
    assert maps.shape == (2, 2, 2) and torch.isfinite(maps).all()


@pytest.mark.parametrize("make", [tiny_convnext, hf_convnext])
def test_convnext_unsupported_method_names_supported_ones(make):
    model = make()
    for method in ("grad-rollout", "rollout", "attn-lrp"):
        with pytest.raises(cft.CftError, match="gradcam, input-grad"):
            cft.relevance(model, torch.randn(1, 3, 64, 96, dtype=torch.float64), method=method)
    with pytest.raises(cft.CftError, match="unknown relevance method"):
        cft.relevance(model, torch.randn(1, 3, 64, 96, dtype=torch.float64), method="magic")


@pytest.mark.parametrize(
    ("images", "targets", "match"),
    [
        (torch.randn(1, 3, 16, 64), None, "smaller than the network's stride"),
        (torch.randn(1, 1, 64, 64), None, "shape"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), None, "floating-point"),
        (torch.randn(2, 3, 64, 64), [0, 9], "out of range"),
    ],
)
def test_convnext_bad_input(images, targets, match):
    with pytest.raises(cft.CftError, match=match):
        cft.relevance(tiny_convnext(torch.float32), images, targets, method="gradcam")


# ---------------------------------------------------------------- hygiene


def _hooks(model: torch.nn.Module) -> dict[str, int]:
    return {name: len(m._forward_hooks) + len(m._forward_pre_hooks) for name, m in model.named_modules()}


@pytest.mark.parametrize("make", ["vit", "dinov2-reg", "convnext", "hf-convnext"])
def test_no_hooks_left_after_calls_and_errors(make):
    if make == "convnext":
        model, methods = tiny_convnext(), ["gradcam", "input-grad"]
    elif make == "hf-convnext":
        model, methods = hf_convnext(), ["gradcam", "input-grad"]
    else:
        model, methods = hf_model(make), list(cft.METHODS)
    size = IMAGES if make in ("vit", "dinov2-reg") else (64, 96)
    images = torch.randn(2, 3, *size, dtype=torch.float64)
    before = _hooks(model)
    for method in methods:
        cft.relevance(model, images, method=method).sum().backward()
        with pytest.raises(cft.CftError, match="out of range"):  # raised after the forward, inside the capture
            cft.relevance(model, images, [0, 99], method=method)
    assert _hooks(model) == before
    if make == "convnext":
        assert not any(before.values())


@pytest.mark.parametrize("make", ["dinov2", "convnext"])
def test_frozen_model_under_no_grad(make):
    model = (tiny_convnext() if make == "convnext" else hf_model(make)).requires_grad_(False)
    size, method = ((64, 96), "gradcam") if make == "convnext" else (IMAGES, "grad-rollout")
    with torch.no_grad():
        maps = cft.relevance(model, torch.randn(2, 3, *size, dtype=torch.float64), method=method)
    assert maps.shape[0] == 2 and torch.isfinite(maps).all() and maps.amax(dim=(1, 2)).eq(1).all()
