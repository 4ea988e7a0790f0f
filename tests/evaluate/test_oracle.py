"""The attention oracle: hiding tokens from every attention equals deleting them from the sequence."""

from __future__ import annotations

import pytest
import torch

import cft
from cft.errors import CftError
from cft.evaluate.oracle import hidden_tokens, predict_with_hidden_tokens


def _without_tokens(model, image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The model's logits with the patch tokens where `keep` is False deleted after the position embedding."""
    x = model._pos_embed(model.patch_embed(image[None]))
    prefix = model.num_prefix_tokens
    x = torch.cat([x[:, :prefix], x[:, prefix:][:, keep]], dim=1)
    for block in model.blocks:
        x = block(x)
    return model.forward_head(model.norm(x))


def test_hidden_tokens_pool_any_pixel():
    regions = torch.zeros(1, 8, 8, dtype=torch.bool)
    regions[0, 3, 4] = True  # one pixel in patch (row 1, col 2) of a 4x4-pixel grid
    flags = hidden_tokens(regions, (2, 2))
    assert flags.tolist() == [[False, True, False, False]]


@pytest.mark.parametrize("registers", [0, 2])
def test_hiding_tokens_equals_deleting_them(registers):
    torch.manual_seed(0)
    model = cft.load_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=5,
        reg_tokens=registers,
    ).eval()
    images = torch.randn(3, 3, 32, 32)
    regions = torch.zeros(3, 32, 32, dtype=torch.bool)
    regions[0, :8, :8] = True  # one patch
    regions[1, 10:20, 3:5] = True  # touches two patches
    preds = predict_with_hidden_tokens(model, images, regions, batch_size=2)
    for i in range(3):
        keep = ~hidden_tokens(regions[i : i + 1], (4, 4))[0]
        with torch.no_grad():
            logits = _without_tokens(model, images[i], keep)
        assert preds[i].item() == logits.argmax(1).item()
    with torch.no_grad():  # nothing hidden: the model's own predictions
        plain = model(images).argmax(1)
    assert torch.equal(predict_with_hidden_tokens(model, images, regions[2:3].expand(3, -1, -1)), plain)


def test_hidden_logits_match_deletion_exactly():
    """The same check on the logits themselves (the argmax above could hide a difference)."""
    torch.manual_seed(1)
    model = cft.load_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=4
    ).eval()
    image = torch.randn(1, 3, 32, 32)
    regions = torch.zeros(1, 32, 32, dtype=torch.bool)
    regions[0, 20:30, 20:30] = True
    keep = ~hidden_tokens(regions, (4, 4))[0]
    prefix = torch.zeros(1, 1, dtype=torch.bool)
    mask = torch.zeros(1, 17).masked_fill(~torch.cat([~prefix, keep[None]], 1), float("-inf"))
    with torch.no_grad():
        masked = model.forward_head(model.forward_features(image, attn_mask=mask[:, None, None, :]))
        torch.testing.assert_close(masked, _without_tokens(model, image[0], keep), atol=1e-5, rtol=1e-5)


def test_oracle_errors():
    model = cft.load_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    with pytest.raises(CftError, match="region masks"):
        predict_with_hidden_tokens(model, torch.randn(2, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool))
    with pytest.raises(CftError, match="regions must be"):
        hidden_tokens(torch.zeros(32, 32), (4, 4))
