"""`cft demo --quick` end to end, and its config errors."""

from __future__ import annotations

import json

import pytest

from cft.cli import main
from cft.config import load_config_data
from cft.demo import TEST_SPLITS, VARIANTS, demo_config
from cft.errors import CftError


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    for variant in VARIANTS:
        for split in TEST_SPLITS:
            cell = results["metrics"][variant][split]
            assert 0.0 <= cell["top1"] <= 1.0 and 0.0 <= cell["worst_group"] <= cell["group_average"] <= 1.0
    assert results["seeds"] == [0]
    assert results["timings"]["total"] > 0
    assert (out / "report.md").read_text().startswith("# cft demo report")
    assert (out / "figures" / "accuracy.png").is_file() and (out / "figures" / "relevance_grid.png").is_file()
    assert (out / "config.yaml").is_file()
    # the original model is not changed by the fine-tuned variants
    first = results["per_seed"]["0"]["original"]["test-ood"]["top1"]
    assert results["metrics"]["original"]["test-ood"]["top1"] == first
    assert "test-ood" in capsys.readouterr().out
    # the concepts came from the concept stage (gguf answers, filters, validation in the world)
    bank = json.loads((out / "concepts" / "bank.json").read_text())
    assert bank["provenance"]["backend"] == "gguf" and "validation" in bank["provenance"]
    assert results["concepts"] == {c: [x["name"] for x in v] for c, v in bank["concepts"].items()}
    assert any(d["reason"].startswith("occurrence") for v in bank["dropped"].values() for d in v)
    # the shipped model meets CFT's premise, and the quick demo shows the method's direction
    d = results["diagnostics"]
    assert d["premise"]["object_features"] and d["premise"]["leans_on_cue"], d
    assert d["oracle"]["top1"] == results["metrics"]["original"]["test-ood"]["oracle_top1"] >= 0.9
    m = results["metrics"]
    assert m["cft"]["test-ood"]["top1"] > m["original"]["test-ood"]["top1"] + 0.05
    assert m["cft"]["test-ood"]["follow_cue"] < m["original"]["test-ood"]["follow_cue"]
    assert d["relevance_share_cue"]["cft"] < d["relevance_share_cue"]["original"]
    report = (out / "report.md").read_text()
    assert "## The premise" in report and "strong object features" in report and "leans on the cue" in report
    # one seed: paired differences have a mean and no interval (reported as such, never a made-up width)
    paired = results["paired"]["cft - no-guidance"]["test-ood"]
    ood = {v: results["per_seed"]["0"][v]["test-ood"]["top1"] for v in ("cft", "no-guidance")}
    assert paired["per_seed"] == [pytest.approx(ood["cft"] - ood["no-guidance"])] and paired["half_width"] != 0
    assert set(results["paired"]) >= {"cft - original", "cft - object-masks", "object-masks - no-guidance"}
    assert "## Paired differences" in report and "| cft - object-masks |" in report


def test_demo_concepts_from_shipped_answers_without_llama_cpp(tmp_path, monkeypatch):
    """The default demo concepts need no generation: every prompt is answered by the shipped response cache
    (llama_cpp is made unimportable here, so a cache miss would fail)."""
    import sys

    from cft.concepts.world import world_concepts
    from cft.demo import make_world

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    cfg = demo_config()
    world = make_world(cfg)
    concepts = world_concepts(world, cfg.concepts, tmp_path)
    assert set(concepts) == set(world.classes) and all(concepts.values())
    assert not (tmp_path / "concepts" / "llm-cache").exists()  # nothing had to be generated
    # every kept concept names a part that is drawn: the segmenter finds it on the class's images
    split = world.split("val", 300)
    samples = [split.sample(i) for i in range(300)]
    for cls, names in concepts.items():
        own = [s for s in samples if world.classes[s["label"]] == cls][:10]
        found = cfg.concepts.make_segmenter().segment(own, [names] * len(own))
        for name in names:
            assert any(f[name][0].any() for f in found), (cls, name)
    stats = json.loads((tmp_path / "concepts" / "bank.stats.json").read_text())
    assert stats  # per-concept statistics written
    # a changed sampling is a cache miss: it needs the generator, and says how to get it
    with pytest.raises(CftError, match="llama-cpp-python"):
        world_concepts(world, demo_config({"concepts": {"sampling": {"seed": 5}}}).concepts, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"finetune": {"epochs": "many"}}, "finetune.epochs must be int"),
        ({"finetune": {"learning_rate": 1}}, "unknown key"),
        ({"world": {"bias": 2.0}}, "bias"),
        ({"world": {"colour": 1}}, "world"),
        ({"seeds": "zero"}, "seeds must be a list"),
        ({"variants": ["cft", "concepts"]}, "unknown variant.*concepts.*cft-parts"),
        ({"variants": ["cft", "cft"]}, "listed twice"),
        ({"finetune": {"lrs": {"cft-part": 1e-4}}}, "finetune.lrs.cft-part: not a variant"),
        ({"finetune": {"lrs": {"no-guidance": 0}}}, "finetune.lrs.no-guidance"),
    ],
)
def test_bad_demo_configs(overrides, match):
    with pytest.raises(CftError, match=match):
        demo_config(overrides)


def test_cli_reports_config_errors(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--set", "finetune.per_class=zero"]) == 2
    assert "per_class" in capsys.readouterr().err


def test_run_key_changes_with_what_determines_a_run():
    """A rerun resumes only runs made with the same settings (a stale run folder is never reused)."""
    from cft.demo import run_key

    cfg = demo_config()
    base = run_key(cfg, "shipped", {"bird": ["beak"]}, {"indices": [1, 2]})
    assert base == run_key(demo_config(), "shipped", {"bird": ["beak"]}, {"indices": [1, 2]})
    assert base != run_key(demo_config({"finetune": {"lr": 1e-4}}), "shipped", {"bird": ["beak"]}, {"indices": [1, 2]})
    assert base != run_key(cfg, "shipped", {"bird": ["wing"]}, {"indices": [1, 2]})
    assert base != run_key(cfg, "shipped", {"bird": ["beak"]}, {"indices": [1, 3]})
    assert base != run_key(cfg, "pretrained from scratch", {"bird": ["beak"]}, {"indices": [1, 2]})


@pytest.mark.slow
def test_quick_demo_with_all_baselines(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--all-baselines", "--out", str(out), "--no-progress"]
    assert main([*args, "--set", "finetune.epochs=2", "--set", "evaluate.n_test=200"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]) == {*VARIANTS, "erm", "robustvit", "rrr", "gradmask", "rrda"}
    report = (out / "report.md").read_text()
    assert "## Ranking by test-ood top-1" in report and "| rrda |" in report
    with pytest.raises(CftError, match="unknown baseline"):
        demo_config({"baselines": ["dropout"]})


def test_variant_recipes_take_their_concepts_and_learning_rate(tmp_path):
    """cft-parts fine-tunes on part_concepts, every other concept variant on concepts; `lrs` overrides `lr`."""
    from cft.demo import variant_recipe

    cfg = demo_config({**load_config_data("claim/colour", kind="demo"), "finetune": {"lrs": {"cft-parts": 5e-5}}})
    checkpoint = tmp_path / "m.safetensors"
    checkpoint.touch()  # the recipe checks that it exists; nothing reads it here
    parts = variant_recipe(cfg, "cft-parts", 0, checkpoint)
    cft = variant_recipe(cfg, "cft", 0, checkpoint)
    assert parts.data.masks == cft.data.masks == "concepts"
    assert parts.data.concepts.source == "parts" and "petal" in parts.data.concepts.exclude_parts
    assert cft.data.concepts.source == "llm"
    assert parts.train.optim.lr == 5e-5 and cft.train.optim.lr == cfg.finetune.lr
    assert variant_recipe(cfg, "object-masks", 0, checkpoint).data.masks == "object"


def test_variant_pairs_put_each_against_the_original_then_each_other():
    from cft.demo.run import variant_pairs

    pairs = variant_pairs(["cft", "cft-parts", "no-guidance"])
    assert pairs[:3] == [("cft", "original"), ("cft-parts", "original"), ("no-guidance", "original")]
    assert pairs[3:] == [("cft", "cft-parts"), ("cft", "no-guidance"), ("cft-parts", "no-guidance")]


def test_shipped_model_is_found_by_its_config(tmp_path):
    from cft.demo import model_key, original_model, shipped_models

    shipped = shipped_models()
    assert model_key(demo_config()) in shipped  # the default demo has its model in the package
    colour = demo_config(load_config_data("demo-colour", kind="demo"))  # and the colour world its own
    assert colour.world == {"cue": "colour"} and model_key(colour) in shipped
    with pytest.raises(CftError, match="--from-scratch"):
        original_model(demo_config({"world": {"mark_size": 6}}), tmp_path, from_scratch=False, progress=False)


# a tiny pretraining: one stage of 128 images in 2 epochs, then a stage of 48 in 1 on another world (step schedule)
TINY_PRETRAIN = {
    "model": {"depth": 1, "embed_dim": 24, "num_heads": 2},
    "pretrain": {
        "batch_size": 32,
        "n_val": 16,
        "stages": [
            {"world": {"bias": 1.0, "context_only": 0.3, "neutral_cue": 0.3}, "images": 128, "epochs": 2},
            {"world": {"bias": 0.5}, "images": 48, "epochs": 1, "schedule": "step"},
        ],
    },
}


def _pretrain_by_hand(cfg, out):
    """The demo's pretraining as it was before its stages became recipes (issue 22): the Trainer driven by hand on
    a WorldStream of fresh samples per stage, the model carried from stage to stage."""
    from cft.demo.model import PRETRAIN_OFFSET
    from cft.train import ObjectiveConfig, OptimConfig, TrainConfig, Trainer, build_objective
    from cft.world import SyntheticWorld
    from cft.world.datasets import ArrayDataset, WorldStream, make_collate
    from cft.world.world import world_config

    base = SyntheticWorld(world_config(cfg.world)).config
    model = cfg.model.create(base.num_classes, base.image_size)
    for k, stage in enumerate(cfg.pretrain.stages):
        world = SyntheticWorld(world_config({**cfg.world, **stage.world}))
        train = WorldStream(world, "train", max(stage.images // stage.epochs, 1), offset=(k + 1) * PRETRAIN_OFFSET)
        val = ArrayDataset.from_split(world.split("val", cfg.pretrain.n_val))
        optim = OptimConfig(
            lr=stage.lr,
            weight_decay=cfg.pretrain.weight_decay,
            schedule=stage.schedule,
            lr_decay=stage.lr_decay,
            lr_decay_every=1,
            warmup_epochs=stage.warmup_epochs,
        )
        tcfg = TrainConfig(
            epochs=stage.epochs,
            batch_size=cfg.pretrain.batch_size,
            seed=cfg.pretrain.seed + k,
            optim=optim,
            select_by="last",
            progress=False,
        )
        erm = build_objective(ObjectiveConfig(name="erm"))
        Trainer(model, erm, tcfg, out / f"stage{k + 1}", make_collate(flip=True)).fit(train, val)
    return model


def test_pretraining_as_recipes_trains_the_model_the_trainer_by_hand_did(tmp_path):
    """Each stage a `cft finetune` recipe (data.fresh_samples) run by run_finetune from the previous stage's last
    checkpoint: bit for bit the weights of the loop it replaced, from the same global RNG state (run_demo seeds 0)."""
    import torch

    from cft.demo.model import pretrain, pretrain_recipe
    from cft.models import read_state_dict

    cfg = demo_config(TINY_PRETRAIN)
    torch.manual_seed(0)
    expected = {k: v.detach().cpu() for k, v in _pretrain_by_hand(cfg, tmp_path / "by-hand").state_dict().items()}
    torch.manual_seed(0)
    path = pretrain(cfg, tmp_path / "recipes", progress=False)
    got = read_state_dict(path)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    recipe = pretrain_recipe(cfg, 1, tmp_path / "recipes" / "stage1" / "last.safetensors")
    assert recipe.data.fresh_samples and recipe.data.first_sample == 20_000_000 and recipe.data.n_train == 48
    assert recipe.data.world == {**cfg.world, "bias": 0.5} and recipe.objective.name == "erm"
    assert pretrain(cfg, tmp_path / "recipes", progress=False) == path  # finished stages are resumed, not redone
    assert all(torch.equal(read_state_dict(path)[k], expected[k]) for k in expected)
