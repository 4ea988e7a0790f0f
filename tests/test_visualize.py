"""The numpy colormap, blending, the 3-panel picture, and the image preprocessing behind `cft explain`."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from cft import CftError, load_model
from cft.data import load_image, preprocessor, sample_image_path
from cft.visualize import GAP_COLOR, blend, colormap, explain, explanation_panel

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3, num_classes=10)


def test_colormap_ends_are_distinct_blue_and_red():
    low, high = colormap(np.array([0.0, 1.0]))
    assert tuple(low) != tuple(high)
    assert low[2] > low[0] and high[0] > high[2]  # blue at 0, red at 1


def test_colormap_hue_runs_monotonically_from_blue_to_red():
    rgb = colormap(np.linspace(0, 1, 1001)).astype(float) / 255
    hues = np.array([colorsys.rgb_to_hsv(*c)[0] for c in rgb])
    assert np.all(np.diff(hues) <= 1e-9), "hue must never increase along the map"
    assert hues[0] == pytest.approx(2 / 3) and hues[-1] == pytest.approx(0)


def test_colormap_shape_dtype_clipping_and_nan():
    values = np.array([[-1.0, 0.0], [2.0, np.nan]])
    out = colormap(values)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0, 0], out[0, 1])  # -1 clips to 0
    assert np.array_equal(out[1, 0], colormap(np.array(1.0)))  # 2 clips to 1
    assert np.array_equal(out[1, 1], out[0, 1])  # NaN counts as 0
    assert np.array_equal(colormap(torch.tensor([0.25])), colormap(np.array([0.25])))


def test_blend_alpha_ends():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    heat = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(blend(image, heat, 0.0), image)
    assert np.array_equal(blend(image, heat, 1.0), heat)
    half = blend(image, heat, 0.5)
    assert half.dtype == np.uint8
    assert np.all(half >= np.minimum(image, heat)) and np.all(half <= np.maximum(image, heat))


def test_blend_rejects_bad_input():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(CftError, match="one shape"):
        blend(image, np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(CftError, match="alpha"):
        blend(image, image, 1.5)


def test_panel_layout():
    h, w, gap = 30, 20, 4
    image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rel = torch.rand(1, 3, 2)
    panel = explanation_panel(Image.fromarray(image), rel, gap=gap)
    assert panel.size == (3 * w + 2 * gap, h) and panel.mode == "RGB"
    px = np.asarray(panel)
    assert np.array_equal(px[:, :w], image)  # left: the image itself
    assert np.all(px[:, w : w + gap] == GAP_COLOR)  # a white gap
    heat = px[:, w + gap : 2 * w + gap]
    assert np.array_equal(px[:, 2 * (w + gap) :], blend(image, heat, 0.5))  # right: the blend


def test_panel_heat_is_the_upsampled_map():
    image = np.zeros((16, 16, 3), np.uint8)
    rel = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # (gh, gw) works too
    heat = np.asarray(explanation_panel(image, rel, gap=0))[:, 16:32]
    assert np.array_equal(heat[:, 0], np.broadcast_to(colormap(np.array(0.0)), (16, 3)))
    assert np.array_equal(heat[:, -1], np.broadcast_to(colormap(np.array(1.0)), (16, 3)))
    with pytest.raises(CftError, match="relevance map"):
        explanation_panel(image, torch.rand(2, 2, 2))


def test_sample_image_is_bundled():
    image = load_image(sample_image_path())
    assert image.size == (224, 224) and image.mode == "RGB"


def test_preprocessor_uses_the_size_the_model_takes():
    model = load_model("vit_tiny_patch16_224", **TINY)
    prep = preprocessor(model)
    assert prep.input_size == (32, 32)  # timm's config alone would say 224
    pixels, shown = prep(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert pixels.shape == (3, 32, 32) and shown.shape == (32, 32, 3) and shown.dtype == np.uint8
    assert np.all(shown[..., 0] == 255)
    assert torch.allclose(pixels, (torch.from_numpy(shown).permute(2, 0, 1) / 255 - prep.mean) / prep.std)


def test_explain_one_image():
    torch.manual_seed(0)
    model = load_model("vit_tiny_patch16_224", **TINY).eval()
    image = load_image(sample_image_path())
    result = explain(model, image, method="rollout", target=3)
    assert result.panel.size == (3 * 32 + 2 * 4, 32)
    assert result.relevance.shape == (4, 4)
    assert 0 <= float(result.relevance.min()) and float(result.relevance.max()) <= 1
    assert result.class_index == 3 and 0 <= result.predicted < 10
