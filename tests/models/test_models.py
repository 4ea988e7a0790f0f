"""load_model across the ViT zoo, checkpoints, and clear errors."""

from __future__ import annotations

import pytest
import torch

import cft
from tests.helpers.models import TINY

ZOO = [
    ("vit_base_patch16_224", {}, 1),
    ("vit_small_patch16_224.augreg_in21k_ft_in1k", {}, 1),
    ("deit_small_patch16_224", {}, 1),
    ("deit_base_distilled_patch16_224", {}, 2),
    ("deit3_base_patch16_224", {}, 1),
    ("vit_small_patch14_reg4_dinov2", {"patch_size": 8, "img_size": 32}, 5),
    ("vit_base_patch16_224", {"reg_tokens": 2, "class_token": False, "global_pool": "avg"}, 2),
]


@pytest.mark.parametrize(("name", "kwargs", "prefix"), ZOO)
def test_zoo_layouts_and_maps(name, kwargs, prefix):
    model = cft.load_model(name, **{**TINY, "img_size": (32, 40), **kwargs}).eval()
    layout = cft.vit_layout(model)
    assert layout.num_prefix_tokens == prefix and layout.num_blocks == TINY["depth"]
    h, w = model.patch_embed.img_size
    maps = cft.relevance(model, torch.randn(2, 3, h, w))
    assert maps.shape == (2, h // 8, w // 8)
    assert all(blk.attn.fused_attn for blk in model.blocks) or not any(blk.attn.fused_attn for blk in model.blocks)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_roundtrip(tmp_path, suffix):
    model = cft.load_model("vit_tiny_patch16_224", **TINY, img_size=32).eval()
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        cft.save_checkpoint(model, path)
    else:
        torch.save({"state_dict": model.state_dict()}, path)
    other = cft.load_model("vit_tiny_patch16_224", **TINY, img_size=32, checkpoint=path).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(x), model(x))
    assert list(tmp_path.iterdir()) == [path]  # the atomic write leaves no temporary file


def test_checkpoint_errors(tmp_path):
    kwargs = dict(TINY, img_size=32)
    with pytest.raises(cft.CftError, match="does not exist"):
        cft.load_model("vit_tiny_patch16_224", checkpoint=tmp_path / "missing.safetensors", **kwargs)
    for name in ("bad.safetensors", "bad.pt"):
        (tmp_path / name).write_bytes(b"not a checkpoint at all")
        with pytest.raises(cft.CftError, match="corrupt"):
            cft.load_model("vit_tiny_patch16_224", checkpoint=tmp_path / name, **kwargs)
    small = cft.load_model("vit_tiny_patch16_224", **{**kwargs, "depth": 1})
    cft.save_checkpoint(small, tmp_path / "small.safetensors")
    with pytest.raises(cft.CftError, match="missing"):
        cft.load_model("vit_tiny_patch16_224", checkpoint=tmp_path / "small.safetensors", **kwargs)


class Arbitrary:
    """Any pickled object that is not a tensor: weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Arbitrary()}, path)
    with pytest.raises(cft.CftError, match="cannot be read"):
        cft.models.read_state_dict(path)


def test_unknown_and_unsupported_models():
    with pytest.raises(cft.CftError, match="unknown model name"):
        cft.load_model("vit_nonexistent_xyz")
    with pytest.raises(cft.CftError, match="unsupported model"):
        cft.load_model("resnet18")
    with pytest.raises(cft.CftError, match="does not take"):
        cft.load_model("vit_tiny_patch16_224", not_an_arg=3)
