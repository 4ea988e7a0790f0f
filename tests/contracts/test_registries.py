"""Contract tests that iterate every registry (as timm's tests iterate list_models()): objectives, segmenters,
evaluation-set readers, data sources and LLM backends. A new entry that breaks the contract fails here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cft
from cft.cli import main
from cft.concepts.stage import LLM_BACKENDS, make_llm
from cft.data.evalsets import EVAL_SETS, load_eval_set
from cft.errors import CftError
from cft.grounding import registry
from cft.train import OBJECTIVES, ObjectiveConfig, build_objective
from cft.train.recipe import load_recipe, run_finetune
from cft.train.sources import DATA_SOURCES, ImageSection


def _tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return cft.load_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=48, num_classes=4)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_is_finite_and_reaches_the_weights(name):
    model = _tiny_vit()
    torch.manual_seed(1)
    mask = torch.zeros(4, 32, 32)
    mask[:, 8:24, 8:24] = 1
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 3]), "mask": mask}
    out = build_objective(ObjectiveConfig(name=name))(model, batch)
    assert torch.isfinite(out.terms["loss"]) and out.logits.shape == (4, 4)
    out.terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), name


def test_an_unknown_objective_lists_the_registry():
    with pytest.raises(
        CftError, match="objective.name must be one of erm, no-guidance, cft, robustvit, rrr, gradmask, rrda"
    ):
        build_objective(ObjectiveConfig(name="nope"))


@pytest.mark.parametrize("name", list(registry.SEGMENTERS))
def test_every_segmenter_states_its_options_or_what_it_needs(name):
    try:
        options = registry.segmenter_options(name)
    except CftError as err:  # an optional dependency is missing: the message says how to install it
        assert "pip install" in str(err)
        return
    assert isinstance(options, tuple) and all(isinstance(o, str) for o in options)
    with pytest.raises(CftError, match="has no option"):
        registry.build_segmenter(name, no_such_option=1)


def test_the_world_segmenter_answers_every_phrase():
    from cft.world import SyntheticWorld

    world = SyntheticWorld()
    samples = [world.split("val", 2).sample(i) for i in range(2)]
    found = registry.build_segmenter("world").segment(samples, [["head", "wheel-of-fortune"], []])
    assert set(found[0]) == {"head", "wheel-of-fortune"} and found[1] == {}
    mask, score = found[0]["wheel-of-fortune"]
    assert mask.shape == samples[0]["object_mask"].shape and not mask.any()


@pytest.mark.parametrize("name", list(EVAL_SETS))
def test_every_evaluation_set_reader_refuses_a_missing_or_empty_tree(name, tmp_path):
    with pytest.raises(CftError) as missing:
        load_eval_set(name, tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CftError) as nothing:
        load_eval_set(name, empty)
    for err in (missing, nothing):
        assert "absent" in str(err.value) or "empty" in str(err.value), (name, str(err.value))


@pytest.mark.parametrize("source", [s for s in DATA_SOURCES if s != "world"])
def test_every_disk_data_source_refuses_a_missing_or_empty_root(source, tmp_path):
    # decoy reads data.decoy.root, whose null searches the default folders (Debian's package may be installed)
    field = "data.decoy.root" if source == "decoy" else "data.root"
    for root in (None, tmp_path / "absent", tmp_path)[1 if source == "decoy" else 0 :]:
        sets = [f"data.source={source}", "objective.name=erm", "data.masks=none", "model.name=vit_tiny_patch16_224"]
        if root is not None:
            sets.append(f"{field}={root}")
        with pytest.raises(CftError) as err:
            run_finetune(load_recipe(None, sets), tmp_path / f"run-{source}")
        assert field in str(err.value) or str(root) in str(err.value), str(err.value)


@pytest.mark.parametrize("backend", list(LLM_BACKENDS))
def test_every_llm_backend_refuses_missing_settings(backend, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = str(tmp_path / "absent.gguf") if backend == "gguf" else None
    with pytest.raises(CftError) as err:
        make_llm(backend, model).complete([{"role": "user", "content": "hi"}], cft.concepts.llm.Sampling())
    assert "absent.gguf" in str(err.value) or "base URL" in str(err.value) or "llama" in str(err.value), str(err.value)


def test_make_llm_lists_the_backends():
    with pytest.raises(CftError, match="openai, gguf"):
        make_llm("claude-local", None)


class HalfSegmenter:
    """Finds `good` (the left half) and the class name (the whole image); never `bad`."""

    name = "half"

    def __init__(self) -> None:
        pass

    def identity(self) -> dict:
        return {"name": self.name}

    def segment(self, images, phrases):
        out = []
        for image, ps in zip(images, phrases, strict=True):
            h, w = np.asarray(image).shape[:2]
            full, left, none = np.ones((h, w), bool), np.zeros((h, w), bool), np.zeros((h, w), bool)
            left[:, : w // 2] = True
            out.append({p: ({"good": left, "bad": none}.get(p, full), 0.9) for p in ps})
        return out


def test_concepts_validate_takes_any_registered_segmenter(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.SEGMENTERS, "half", lambda: HalfSegmenter)
    images = tmp_path / "images"
    for cls in ("cat", "dog"):
        (images / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(images / cls / f"{i}.png")
    bank = tmp_path / "bank.json"
    concepts = {"cat": [{"name": "good"}, {"name": "bad"}], "dog": [{"name": "good"}]}
    bank.write_text(json.dumps({"concepts": concepts}))
    out = tmp_path / "valid.json"
    args = ["concepts", "validate", str(bank), "--segmenter", "half", "--images", str(images), "--out", str(out)]
    assert main([*args, "--images-per-class", "3"]) == 0, capsys.readouterr().err
    kept = json.loads(out.read_text())["concepts"]
    names = {c: [k["name"] if isinstance(k, dict) else k for k in v] for c, v in kept.items()}
    assert names == {"cat": ["good"], "dog": ["good"]}
    assert main(["concepts", "validate", str(bank), "--segmenter", "half", "--out", str(tmp_path / "x.json")]) == 2
    assert (
        main(["concepts", "validate", str(bank), "--segmenter", "nope", "--images", str(images), "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "needs --images" in err and "unknown segmenter 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_registries_are_listed_in_one_place():
    assert list(OBJECTIVES) == ["erm", "no-guidance", "cft", "robustvit", "rrr", "gradmask", "rrda"]
    assert list(LLM_BACKENDS) == ["openai", "gguf"]
    assert {"grounded-sam", "sam3", "owlv2-sam", "clipseg", "world"} == set(registry.SEGMENTERS)
    assert Path(cft.__file__).is_file()


def test_a_name_registers_once():
    from cft.registry import Registry

    things: Registry[int] = Registry("thing")
    things.add("a", 1)
    assert things.register("b")(2) == 2 and dict(things) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        things.add("a", 3)
    for registry_ in (OBJECTIVES, registry.SEGMENTERS, EVAL_SETS, LLM_BACKENDS, DATA_SOURCES):
        first = next(iter(registry_))
        with pytest.raises(ValueError, match="registered twice"):
            registry_.add(first, registry_[first])


# ---------------------------------------------------------------- every name from its registry, `cft ls`


@pytest.fixture
def unregister():
    """(registry, name) pairs a test registers; removed after it, so other tests see the built-in registries."""
    added: list[tuple[dict, str]] = []
    yield added
    for registry_, name in added:
        registry_.pop(name, None)


def _registries() -> dict[str, dict]:
    from cft.models import MODEL_FAMILIES
    from cft.relevance import BACKENDS, METHODS

    return {
        "methods": METHODS,
        "objectives": OBJECTIVES,
        "segmenters": registry.SEGMENTERS,
        "eval-sets": EVAL_SETS,
        "data-sources": DATA_SOURCES,
        "llm-backends": LLM_BACKENDS,
        "model-families": MODEL_FAMILIES,
        "relevance-backends": BACKENDS,
    }


def _ls(capsys, *kind: str) -> dict[str, str]:
    """`cft ls [KIND]` as {first word: rest of the line}."""
    assert main(["ls", *kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    if kind:
        return {line.split()[0]: line.split(maxsplit=1)[1] if " " in line else "" for line in lines}
    return {line.split(":", 1)[0]: line.split(":", 1)[1] for line in lines}


def test_cft_ls_prints_every_registered_name_with_its_description(capsys):
    from cft.config import packaged_recipes

    kinds = {**_registries(), "recipes": packaged_recipes()}
    overview = _ls(capsys)
    assert set(overview) == set(kinds)
    for kind, entries in kinds.items():
        assert sorted(overview[kind].strip().split(", ")) == sorted(entries), kind
        listed = _ls(capsys, kind)
        assert sorted(listed) == sorted(entries), kind
        assert all(listed.values()), f"a {kind} entry has no description: {listed}"
    assert _ls(capsys, "methods")["grad-rollout"].startswith("gradient-weighted attention rollout")


def test_cft_ls_refuses_an_unknown_kind(capsys):
    assert main(["ls", "method"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'method'" in err and "eval-sets" in err and "Traceback" not in err


def test_a_registry_entry_is_described_by_its_docstring_or_its_registration():
    from cft.registry import Registry

    def documented():
        """First line
        continued.

        Details."""

    things: Registry = Registry("thing")
    things.add("a", documented)
    things.add("b", lambda: None, description="  told\n  here ")
    things["c"] = documented  # a plain assignment (monkeypatch.setitem) reads the value
    assert things.descriptions() == {"a": "First line continued.", "b": "told here", "c": "First line continued."}
    things["b"] = lambda: None
    assert things.description("b") == ""
    with pytest.raises(KeyError):
        things.description("nope")


def _patch_sum(trace):
    """Mean absolute pixel per map cell (reads only the images)."""
    pixel = trace.images.abs().sum(dim=1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(pixel, trace.grid)[:, 0]


def test_a_method_registered_at_run_time_is_used_by_relevance_and_listed(unregister, capsys):
    from cft.relevance import METHODS, register_method

    register_method("brightness", description="mean absolute pixel per patch")(_patch_sum)
    unregister.append((METHODS, "brightness"))
    images = torch.rand(2, 3, 32, 32)
    expected = cft.normalize(_patch_sum(type("T", (), {"images": images, "grid": (4, 4)})))
    torch.testing.assert_close(cft.relevance(_tiny_vit(), images, method="brightness"), expected)
    convnext = cft.load_model("convnextv2_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=3)
    assert cft.relevance(convnext, torch.rand(2, 3, 64, 64), method="brightness").shape == (2, 2, 2)
    assert _ls(capsys, "methods")["brightness"] == "mean absolute pixel per patch"
    with pytest.raises(CftError, match="attn-lrp, gradcam, input-grad, brightness"):
        cft.relevance(_tiny_vit(), images, method="nope")


class _ToyCNN(torch.nn.Module):
    """A model no built-in backend reads: one strided convolution, then average pooling and a linear head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def test_a_backend_and_a_model_family_registered_at_run_time_are_looped_over(unregister):
    from cft.models import MODEL_FAMILIES, register_model_family, size_kwargs
    from cft.relevance import BACKENDS, register_backend
    from cft.relevance.convnext import feature_backend

    with pytest.raises(CftError, match="unsupported model _ToyCNN: no relevance backend reads it; backends: hf"):
        cft.relevance(_ToyCNN(), torch.rand(1, 3, 16, 16), method="gradcam")
    register_backend("toy", priority=5, description="the toy CNN")(
        lambda model: feature_backend("toy", 3, 4, model, model.features) if isinstance(model, _ToyCNN) else None
    )
    register_model_family(
        "toy",
        claims=lambda name: name.startswith("toy:"),
        size_kwargs=lambda classes, size: {"num_classes": classes},
        priority=5,
        description="toy CNNs",
    )(lambda name, pretrained, **kwargs: _ToyCNN(**kwargs))
    unregister += [(BACKENDS, "toy"), (MODEL_FAMILIES, "toy")]
    model = cft.load_model("toy:cnn", **size_kwargs("toy:cnn", 5, 16))
    assert isinstance(model, _ToyCNN) and model.head.out_features == 5
    assert cft.relevance(model, torch.rand(2, 3, 16, 16), method="gradcam").shape == (2, 4, 4)
    assert cft.relevance(_tiny_vit(), torch.rand(1, 3, 32, 32)).shape == (1, 4, 4)  # the others still answer
    with pytest.raises(CftError, match="unknown model name 'no_such_vit'; supported: hf: .*; timm-vit: .*; toy: toy"):
        cft.load_model("no_such_vit")


def test_an_unknown_model_name_lists_the_families():
    from cft.models import MODEL_FAMILIES

    with pytest.raises(CftError) as err:
        cft.load_model("no_such_vit")
    assert list(MODEL_FAMILIES) == ["hf", "timm-convnext", "timm-vit"]
    for name in MODEL_FAMILIES:
        assert f"{name}: {MODEL_FAMILIES.description(name)}" in str(err.value)


def _tiny_source(recipe, needs_mask, out):
    """Four random 32x32 images of two classes, the same set for validation."""
    from cft.train.sources import SourceData, build_model

    generator = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(3, 32, 32, generator=generator), "label": torch.tensor(i % 2)} for i in range(4)]
    model = build_model(recipe, 2, 32)
    collate = torch.utils.data.default_collate
    return SourceData(["a", "b"], model, items, items, None, collate, collate, {"images": 4})


def test_a_data_source_registered_after_import_is_accepted(unregister, tmp_path):
    from cft.train.sources import register_data_source

    tiny = ["objective.name=erm", "data.masks=none", "model.name=vit_tiny_patch16_224", "train.epochs=1"]
    tiny += ["model.kwargs={patch_size: 8, depth: 1, embed_dim: 24, num_heads: 2}", "train.progress=false"]
    with pytest.raises(CftError, match="data.source must be one of world, decoy, folder, waterbirds, grouped"):
        load_recipe(None, ["data.source=tiny", *tiny])
    register_data_source("tiny", "random images")(_tiny_source)
    unregister.append((DATA_SOURCES, "tiny"))
    recipe = load_recipe(None, ["data.source=tiny", *tiny])
    assert recipe.data.source == "tiny" and type(recipe.data) is ImageSection  # registered without a section
    result = run_finetune(recipe, tmp_path / "run", progress=False)
    assert result.last_path.is_file() and len(result.history) == 1
