"""Plug-ins from outside the package: a tiny distribution on sys.path (a module and its .dist-info with an entry point
in the group cft.plugins) registers a relevance method, an objective, a segmenter, a data source and an evaluation
set, which `cft ls`, `cft finetune` and `cft explain` then use; a broken plug-in is one clear error."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cft
from cft import registry
from cft.cli import main
from cft.errors import CftError
from tests.helpers.registries import registrations_undone

PLUGIN = '''
"""A tiny cft plug-in: one component of every kind."""

import torch
import torch.nn.functional as F

from cft.data.evalsets import register_eval_set
from cft.grounding.registry import register_segmenter
from cft.relevance import register_method
from cft.train import StepOutput, register_objective
from cft.train.sources import SourceData, build_model, register_data_source


@register_method("toy-brightness")
def brightness(trace):
    """Mean absolute pixel per patch.

    Reads only the images."""
    pixel = trace.images.abs().sum(dim=1, keepdim=True)
    return F.adaptive_avg_pool2d(pixel, trace.grid)[:, 0]


class ToyCE:
    needs_mask = False

    def __call__(self, model, batch):
        logits = model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        return StepOutput({"ce": loss, "loss": loss}, logits)


@register_objective("toy-ce", "cross-entropy, from a plug-in")
def toy_ce(cfg):
    return ToyCE()


@register_data_source("toy-noise", "four random images of two classes")
def noise(recipe, needs_mask, out):
    generator = torch.Generator().manual_seed(0)
    size = recipe.data.image_size
    items = [{"image": torch.rand(3, size, size, generator=generator), "label": torch.tensor(i % 2)} for i in range(4)]
    collate = torch.utils.data.default_collate
    return SourceData(["a", "b"], build_model(recipe, 2, size), items, items, None, collate, collate, {})


class WholeImage:
    name = "toy-whole"

    def identity(self):
        return {"name": self.name}

    def segment(self, images, phrases):
        return [{p: (torch.ones(4, 4).bool().numpy(), 1.0) for p in ps} for ps in phrases]


register_segmenter("toy-whole", lambda: WholeImage, "the whole image for every phrase")
register_eval_set("toy-set", lambda root: [], "an empty evaluation set")
'''

BROKEN = """
from cft.relevance import register_method


def register():
    register_method("grad-rollout")(lambda trace: None)
"""

MODEL = {"patch_size": 8, "depth": 1, "embed_dim": 24, "num_heads": 2}


def _distribution(root: Path, name: str, source: str, entry: str) -> None:
    """A module and its installed metadata, as pip would leave them in site-packages."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cft.plugins]\n{entry}\n")


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not loaded its plug-ins yet; afterwards what they registered and imported is gone."""
    modules = set(sys.modules)
    monkeypatch.setattr(registry, "_plugins", registry._Plugins())
    monkeypatch.delenv(registry.DISABLE_PLUGINS, raising=False)
    with registrations_undone():
        yield
    for name in set(sys.modules) - modules:
        if name.startswith("cft_"):
            del sys.modules[name]


@pytest.fixture
def plugin(fresh, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "site"
    _distribution(root, "cft_toy_plugin", PLUGIN, "toy = cft_toy_plugin")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_a_plugin_registers_its_components_before_any_registry_is_read(plugin):
    assert "toy-brightness" in cft.METHODS  # read by the library: nothing called load_plugins
    assert registry.load_plugins() == ["toy"]
    assert cft.METHODS.description("toy-brightness") == "Mean absolute pixel per patch."
    from cft.data.evalsets import load_eval_set
    from cft.grounding.registry import build_segmenter

    assert build_segmenter("toy-whole").identity() == {"name": "toy-whole"}
    assert load_eval_set("toy-set", plugin) == []


def test_cft_ls_finetune_and_explain_use_a_plugin(plugin, tmp_path, capsys):
    assert main(["ls"]) == 0
    listed = capsys.readouterr().out
    for name in ("toy-brightness", "toy-ce", "toy-whole", "toy-noise", "toy-set"):
        assert name in listed, name
    assert main(["ls", "objectives"]) == 0
    assert "toy-ce       cross-entropy, from a plug-in" in capsys.readouterr().out.splitlines()

    recipe = tmp_path / "toy.yaml"
    recipe.write_text(
        "model: {name: vit_tiny_patch16_224, kwargs: {patch_size: 8, depth: 1, embed_dim: 24, num_heads: 2}}\n"
        "data: {source: toy-noise, masks: none, image_size: 32}\n"
        "objective: {name: toy-ce}\n"
        "train: {epochs: 1, batch_size: 4}\n"
    )
    run = tmp_path / "run"
    assert main(["finetune", "--config", str(recipe), "--out", str(run), "--no-progress"]) == 0, capsys.readouterr()
    assert (run / "best.safetensors").is_file() and "toy-ce" in (run / "config.yaml").read_text()

    image = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    args = [f"--model-arg={k}={v}" for k, v in {**MODEL, "img_size": 32, "num_classes": 2}.items()]
    args += ["--checkpoint", str(run / "best.safetensors"), "--method", "toy-brightness", "--out", str(tmp_path)]
    assert main(["explain", str(image), *args]) == 0, capsys.readouterr().err
    assert (tmp_path / "photo_toy-brightness.png").is_file()


@pytest.mark.parametrize(
    ("source", "entry", "needle"),
    [
        (BROKEN, "broken = cft_broken_plugin:register", "ValueError: relevance method 'grad-rollout' is registered"),
        ("raise ImportError('needs torch 99')\n", "broken = cft_broken_plugin", "ImportError: needs torch 99"),
        ("VALUE = 3\n", "broken = cft_broken_plugin:VALUE", "TypeError: it names a int, not a module or a callable"),
    ],
)
def test_a_broken_plugin_is_one_clear_error_naming_it(fresh, tmp_path, monkeypatch, capsys, source, entry, needle):
    root = tmp_path / "site"
    _distribution(root, "cft_broken_plugin", source, entry)
    monkeypatch.syspath_prepend(str(root))
    assert main(["ls", "methods"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cft: error: cft plug-in 'broken' (") and "from cft_broken_plugin" in err, err
    assert needle in err and "CFT_DISABLE_PLUGINS=1" in err and "Traceback" not in err, err
    with pytest.raises(CftError, match="cft plug-in 'broken'"):  # the library's reads say so too
        cft.relevance(torch.nn.Linear(1, 1), torch.rand(1, 3, 8, 8))
    monkeypatch.setattr(registry, "_plugins", registry._Plugins())
    monkeypatch.setenv(registry.DISABLE_PLUGINS, "1")
    assert main(["ls", "methods"]) == 0
    assert "grad-rollout" in capsys.readouterr().out
