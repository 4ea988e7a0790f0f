"""`cft run`: the whole pipeline on tiny data (hand bank, tiny CLIPSeg, tiny ViT, an ImageNet-V2-layout tree),
cached stages, and a run killed with SIGKILL that resumes to the same final weights and results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

pytest.importorskip("transformers")  # the tiny CLIPSeg

from cft.cli import main  # noqa: E402
from cft.config import packaged_recipes  # noqa: E402
from cft.errors import CftError  # noqa: E402
from cft.models import read_state_dict  # noqa: E402
from tests.helpers.grounding import save, tiny_clipseg, write_vocab  # noqa: E402
from tests.helpers.masks import write_bank  # noqa: E402
from tests.helpers.paths import ROOT  # noqa: E402

CLASSES = {"n01440764": ("tench", 0), "n01443537": ("goldfish", 1), "n01484850": ("great white shark", 2)}
CLASSES["n01491361"] = ("tiger shark", 3)
TINY = {"patch_size": 8, "depth": 1, "embed_dim": 24, "num_heads": 2}


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    for wnid, (_, index) in CLASSES.items():
        for k in range(4):
            for folder in (tmp_path / "train" / wnid, tmp_path / "v2" / str(index)):
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    write_bank(tmp_path / "bank.json", {name: ["cat", "sky"] for name, _ in CLASSES.values()})
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    model = save(tiny_clipseg(write_vocab(vocab)), tmp_path / "clipseg")
    recipe = {
        "seeds": [0, 1],
        "concepts": {"backend": "bank", "bank": str(tmp_path / "bank.json"), "validation": {"images_per_class": 3}},
        "masks": {"segmenter": "clipseg", "options": {"clipseg_model": model, "threshold": 0.0, "device": "cpu"}},
        "finetune": {
            "model": {"name": "vit_tiny_patch16_224", "kwargs": TINY},
            "data": {"root": str(tmp_path / "train"), "classes": "imagenet", "image_size": 32, "resize": 36,
                     "few_shot": {"per_class": 2, "class_fraction": 0.5, "val_per_class": 1}},
            "train": {"epochs": 2, "batch_size": 2, "save_every_steps": 1, "progress": False, "optim": {"lr": 1e-3}},
        },
        "evaluate": {"eval_sets": {"imagenet-v2": str(tmp_path / "v2")}, "workers": 0, "device": "cpu"},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path


@pytest.mark.slow
def test_pipeline_end_to_end_and_cached(setup, capsys):
    out = setup / "out"
    assert main(["run", str(setup / "run.yaml"), "--out", str(out)]) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"seed0", "seed1"} and results["format"] == 2
    cell = results["eval_sets"]["imagenet-v2"]
    assert cell["n"] == 16 and 0.0 <= cell["top1"] <= 1.0 and "top1_seen" in cell
    images = [(out / f"seed{s}" / "images.txt").read_text().split() for s in (0, 1)]
    assert len(images[0]) == 4 and images[0] != images[1]  # 2 classes x 2 images, another subset per seed
    from cft.grounding.store import MaskStore

    split = json.loads((out / "seed0" / "finetune" / "split.json").read_text())
    assert len(split["val_images"]) == 2 and not set(split["val_images"]) & set(images[0])
    assert set(images[0]) | set(images[1]) | set(split["val_images"]) <= set(MaskStore(out / "masks").image_ids())
    assert all(
        "val_loss" in json.loads(x) for x in (out / "seed0" / "finetune" / "metrics.jsonl").read_text().splitlines()
    )
    bank = json.loads((out / "concepts" / "bank.json").read_text())
    assert "validation" in bank["provenance"] and set(bank["concepts"]) == {n for n, _ in CLASSES.values()}
    assert "fine-tuning" in log and "cached" not in log
    # a random start (no checkpoint, no hub weights) has no original model to compare with, and says so
    assert "partly random weights" in results["original"]["skipped"] and "gain" not in results
    assert main(["run", str(setup / "run.yaml"), "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "concepts: cached" in again and again.count("fine-tuning cached") == 2
    assert json.loads((out / "results.json").read_text())["eval_sets"] == results["eval_sets"]
    # a run folder is what `cft compare` reads; against itself every paired difference is zero
    assert main(["compare", str(out), str(out / "results.json")]) == 0
    assert "| imagenet-v2 | 16 |" in (table := capsys.readouterr().out) and "| +0.00 ± 0.00 |" in table


def test_changed_fine_tuning_settings_retrain_and_keep_the_previous_run(setup, capsys):
    """A rerun with another learning rate retrains each seed (the finished runs are renamed, not lost) and
    re-evaluates; more epochs alone continue the runs instead."""
    out, run = setup / "out", ["run", str(setup / "run.yaml"), "--out", str(setup / "out")]
    assert main(run) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.count("imagenet-v2: ") == 2
    assert main([*run, "--set", "finetune.train.optim.lr=5e-4"]) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    assert log.count("fine-tuning settings changed (train.optim.lr); the previous run is kept in") == 2
    old = yaml.safe_load((out / "seed0" / "finetune.old-1" / "config.yaml").read_text())
    new = yaml.safe_load((out / "seed0" / "finetune" / "config.yaml").read_text())
    assert old["train"]["optim"]["lr"] == 1e-3 and new["train"]["optim"]["lr"] == 5e-4
    assert (out / "seed0" / "finetune.old-1" / "best.safetensors").is_file()
    assert log.count("imagenet-v2: ") == 2  # each seed's new checkpoint evaluated again
    assert main([*run, "--set", "finetune.train.optim.lr=5e-4", "--set", "finetune.train.epochs=3"]) == 0
    log = capsys.readouterr().out
    assert log.count("fine-tuning (resumed)") == 2 and "settings changed" not in log
    assert len((out / "seed1" / "finetune" / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (out / "seed0" / "finetune.old-2").exists()
    # other masks (another guidance mode): the store is made anew beside the old one, and every seed retrains
    assert main([*run, "--set", "finetune.train.optim.lr=5e-4", "--set", "finetune.train.epochs=3",
                 "--set", "masks.guidance=weighted"]) == 0, capsys.readouterr().err  # fmt: skip
    log = capsys.readouterr().out
    assert "masks masks: settings changed (mode: 'union' -> 'weighted'); the previous store is kept in" in log
    assert log.count("fine-tuning settings changed (masks)") == 2 and (out / "masks.old-1" / "store.json").is_file()
    assert (out / "seed1" / "finetune.old-2" / "best.safetensors").is_file()


def test_object_masks_runs_train_on_object_masks(setup):
    """masks.object_masks makes the store's masks object masks, and the fine-tuning reads them as such; a recipe
    that asks the fine-tuning for the other kind is refused before anything runs."""
    from cft.pipeline import finetune_recipe, load_run_recipe

    run = setup / "run.yaml"
    assert finetune_recipe(load_run_recipe(run, ["masks.object_masks=true"]), 0, setup).data.masks == "object"
    assert finetune_recipe(load_run_recipe(run), 0, setup).data.masks == "concepts"
    with pytest.raises(CftError, match="finetune.data.masks is 'concepts' but masks.object_masks is True"):
        load_run_recipe(run, ["masks.object_masks=true", "finetune.data.masks=concepts"])


def test_an_object_masks_run_asks_no_language_model(setup, capsys):
    """With masks.object_masks each image is masked by its class name: the concept stage is skipped (the bank file
    named here does not exist), the store holds object masks and the fine-tuning reads them as such."""
    recipe = yaml.safe_load((setup / "run.yaml").read_text())
    recipe["masks"]["object_masks"] = True
    recipe["concepts"]["bank"] = str(setup / "no-such-bank.json")
    recipe["evaluate"]["eval_sets"] = {}
    (setup / "object.yaml").write_text(yaml.safe_dump(recipe))
    out = setup / "object"
    assert main(["run", str(setup / "object.yaml"), "--out", str(out)]) == 0, capsys.readouterr().err
    assert "concepts: not needed by object masks; 4 class names" in capsys.readouterr().out
    assert json.loads((out / "masks" / "store.json").read_text())["object_masks"] is True
    assert yaml.safe_load((out / "seed0" / "finetune" / "config.yaml").read_text())["data"]["masks"] == "object"


def test_a_baseline_without_guidance_needs_no_concepts_nor_masks(setup, capsys):
    """A no-guidance run (the baseline to compare cft with) skips the concept and mask stages: no language model or
    segmenter is loaded (here the segmenter's model does not even exist), and it is paired with cft by seed."""
    recipe = yaml.safe_load((setup / "run.yaml").read_text())
    recipe["finetune"]["objective"] = {"name": "no-guidance"}
    recipe["masks"]["options"]["clipseg_model"] = str(setup / "no-such-model")
    (setup / "baseline.yaml").write_text(yaml.safe_dump(recipe))
    out = setup / "baseline"
    assert main(["run", str(setup / "baseline.yaml"), "--out", str(out)]) == 0, capsys.readouterr().err
    assert "concepts and masks: not needed by objective 'no-guidance'" in capsys.readouterr().out
    assert not (out / "concepts").exists() and not (out / "masks").exists()
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"seed0", "seed1"}


def test_the_gain_over_the_original_model_is_paired_per_seed(setup, capsys):
    """Starting from a checkpoint, the run evaluates that checkpoint once (`evaluate.original`) and reports each
    seed's top-1 minus it, with the paired interval; the original's score is `cft evaluate`'s of the same file."""
    import cft
    from cft.models import save_checkpoint

    model = cft.load_model("vit_tiny_patch16_224", num_classes=1000, img_size=32, **TINY)
    with torch.no_grad():
        model.head.bias[1] = 10.0  # the original says goldfish (class 1) to every image: 4 of the 16 are right
    start = save_checkpoint(model, setup / "start.safetensors")
    recipe = yaml.safe_load((setup / "run.yaml").read_text())
    recipe["finetune"]["model"]["checkpoint"] = str(start)
    (setup / "run.yaml").write_text(yaml.safe_dump(recipe))
    out = setup / "out"
    assert main(["run", str(setup / "run.yaml"), "--out", str(out)]) == 0, capsys.readouterr().err
    assert "original: " in capsys.readouterr().out  # its evaluation is logged
    results = json.loads((out / "results.json").read_text())
    saved, given = read_state_dict(out / "original" / "original.safetensors"), read_state_dict(start)
    assert saved.keys() == given.keys() and all((saved[k] == given[k]).all() for k in saved)
    args = ["evaluate", "--model", "vit_tiny_patch16_224", "--checkpoint", str(start), "--out", str(setup / "e.json")]
    args += ["--model-arg", "img_size=32", *(f"--model-arg={k}={v}" for k, v in TINY.items())]
    assert main([*args, "--eval-set", f"imagenet-v2={setup / 'v2'}", "--workers", "0", "--device", "cpu"]) == 0
    direct = json.loads((setup / "e.json").read_text())["eval_sets"]["imagenet-v2"]
    assert results["original"]["eval_sets"]["imagenet-v2"]["top1"] == direct["top1"] == 0.25
    gain = results["gain"]["imagenet-v2"]["difference"]
    tuned = [results["runs"][f"seed{s}"]["imagenet-v2"]["top1"] for s in (0, 1)]
    assert gain["per_run"] == pytest.approx([t - direct["top1"] for t in tuned]) and gain["n"] == 2
    assert "## Gain over the original model" in (out / "results.md").read_text()
    assert main(["run", str(setup / "run.yaml"), "--out", str(out)]) == 0  # cached: nothing is evaluated again
    assert "original:" not in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text()) == results
    # new weights at the same path: the cached stages came from the old ones, so each seed retrains (the old run
    # kept beside) and the original is evaluated again
    with torch.no_grad():
        model.head.bias[1], model.head.bias[999] = 0.0, 20.0  # now it says class 999, which no image has
    save_checkpoint(model, start)
    assert main(["run", str(setup / "run.yaml"), "--out", str(out)]) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    assert log.count("settings changed (model.checkpoint (its bytes)); the previous run is kept in") == 2
    assert (out / "seed0" / "finetune.old-1" / "best.safetensors").is_file()
    assert json.loads((out / "results.json").read_text())["original"]["eval_sets"]["imagenet-v2"]["top1"] == 0.0


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(setup):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cft.cli", "run", str(setup / "run.yaml"), "--out"]
    full = subprocess.run([*cmd, str(setup / "full")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = subprocess.Popen([*cmd, str(setup / "killed")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    state = setup / "killed" / "seed1" / "finetune" / "state.pt"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the middle of seed 1's fine-tuning (it saves a state every step)
    proc.wait()
    assert not (setup / "killed" / "results.json").exists()
    resumed = subprocess.run([*cmd, str(setup / "killed")], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((setup / "full" / "results.json").read_text())
    b = json.loads((setup / "killed" / "results.json").read_text())
    assert a["eval_sets"] == b["eval_sets"]
    for seed in (0, 1):
        wa = read_state_dict(setup / "full" / f"seed{seed}" / "finetune" / "last.safetensors")
        wb = read_state_dict(setup / "killed" / f"seed{seed}" / "finetune" / "last.safetensors")
        assert all((wa[k] == wb[k]).all() for k in wa)


@pytest.mark.parametrize("path", [p for n, p in packaged_recipes().items() if n.startswith("imagenet/")], ids=str)
def test_shipped_pipeline_recipes_parse(path):
    """The paper's recipes: valid, 5 seeds, 3 images from half of the classes, the paper's learning rates."""
    from cft.pipeline import finetune_recipe, load_run_recipe

    recipe = load_run_recipe(path)
    assert recipe.seeds == [0, 1, 2, 3, 4]
    fr = finetune_recipe(recipe, 3, Path("/tmp/x"))
    assert fr.data.few_shot.per_class == 3 and fr.data.few_shot.class_fraction == 0.5 and fr.data.few_shot.seed == 3
    lrs = {"vit-b16": 5e-7, "deit3-b16": 8e-7, "dinov2-b14": 6e-7, "convnextv2-b": 3e-6}
    assert fr.train.optim.lr == lrs[path.stem] and fr.train.epochs == 50 and fr.train.batch_size == 8
    assert fr.train.optim.weight_decay == 1e-4 and fr.train.optim.lr_decay == 0.85
