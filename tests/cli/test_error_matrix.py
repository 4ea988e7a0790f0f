"""The user-error contract as a matrix: a bad input to any verb ends with exit status 2, one `cft: error:` line that
names the file, field or argument, no traceback, and no partial output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cft
from cft.cli import main
from cft.models import save_checkpoint

TINY = ["--model-arg", "img_size=32", "--model-arg", "patch_size=8", "--model-arg", "depth=1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Files the cases point at: a 10-class checkpoint, an image, a truncated image, banks, recipes, trees."""
    root = tmp_path_factory.mktemp("inputs")
    model = cft.load_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=1)
    save_checkpoint(model, root / "ten.safetensors")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "img.png")
    (root / "trunc.png").write_bytes((root / "img.png").read_bytes()[:60])
    (root / "not-an-image.png").write_text("hello")
    (root / "pickle.pt").write_bytes(b"\x80\x04K\x01.")
    (root / "tiny.yaml").write_text(
        "objective:\n  name: erm\ndata:\n  masks: none\n  world: {image_size: 32}\n  n_train: 20\n  n_val: 10\n"
        "model: {depth: 1}\ntrain:\n  epochs: 1\n"
    )
    (root / "folder.yaml").write_text("objective:\n  name: erm\ndata:\n  source: folder\n  masks: none\n")
    (root / "bad.yaml").write_text("train: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "empty_bank.json").write_text(json.dumps({"concepts": {}}))
    (root / "bad_bank.json").write_text("{not json")
    (root / "bank.json").write_text(json.dumps({"concepts": {"cat": [{"name": "ear"}], "dog": []}}))
    for cls in ("cat", "dog"):
        (root / "tree" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "tree" / cls / "a.png")
    (root / "val" / "n01440764").mkdir(parents=True)  # an imagenet-val tree: one tench
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "val" / "n01440764" / "a.png")
    (root / "empty").mkdir()
    return root


def cases(r: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, a needle the message must hold). Every case writes (if anything) under `out`."""
    tiny = str(r / "tiny.yaml")
    ft = ["finetune", "--config", tiny, "--no-progress", "--out", str(out)]
    ev = ["evaluate", "--model", "vit_tiny_patch16_224", *TINY, "--out", str(out / "r.json")]
    ex = ["explain", str(r / "img.png"), *TINY, "--out", str(out)]
    val = f"imagenet-val={r / 'val'}"
    cmp = ["--out", str(out / "c.json")]

    def masks(bank: str, segmenter: str) -> list[str]:
        return ["masks", "--images", str(r / "tree"), "--concepts", str(r / bank), "--segmenter", segmenter,
                "--out", str(out)]  # fmt: skip

    return {
        # explain
        "explain: checkpoint of another shape": ([*ex, "--checkpoint", str(r / "ten.safetensors")], "head.bias"),
        "explain: missing checkpoint": ([*ex, "--checkpoint", str(r / "nope.safetensors")], "nope.safetensors"),
        "explain: pickle checkpoint": ([*ex, "--checkpoint", str(r / "pickle.pt")], "pickle.pt"),
        "explain: truncated image": (["explain", str(r / "trunc.png"), *TINY, "--out", str(out)], "trunc.png"),
        "explain: not an image": (["explain", str(r / "not-an-image.png"), *TINY, "--out", str(out)], "not-an-image"),
        "explain: missing image": (["explain", str(r / "nope.png"), *TINY, "--out", str(out)], "nope.png"),
        "explain: num_classes 0": ([*ex, "--model-arg", "num_classes=0"], "num_classes"),
        "explain: num_classes -3": ([*ex, "--model-arg", "num_classes=-3"], "num_classes"),
        "explain: bad model-arg": ([*ex, "--model-arg", "depth"], "--model-arg"),
        "explain: target out of range": ([*ex, "--target", "5000"], "--target"),
        "explain: unknown model": (
            ["explain", str(r / "img.png"), "--model", "vit_nope", "--out", str(out)],
            "vit_nope",
        ),
        "explain: unknown method": ([*ex, "--method", "lime"], "--method"),
        # finetune
        "finetune: lr 0": ([*ft, "--set", "train.optim.lr=0"], "train.optim.lr"),
        "finetune: lr nan": ([*ft, "--set", "train.optim.lr=.nan"], "train.optim.lr"),
        "finetune: betas": ([*ft, "--set", "train.optim.betas=[1.5, 0.9]"], "train.optim.betas"),
        "finetune: weight decay": ([*ft, "--set", "train.optim.weight_decay=-1"], "train.optim.weight_decay"),
        "finetune: lr_decay 0": ([*ft, "--set", "train.optim.lr_decay=0"], "train.optim.lr_decay"),
        "finetune: epochs 0": ([*ft, "--set", "train.epochs=0"], "train.epochs"),
        "finetune: batch 0": ([*ft, "--set", "train.batch_size=0"], "train.batch_size"),
        "finetune: device cuda": ([*ft, "--set", "train.device=cuda:7"], "train.device"),
        "finetune: amp": ([*ft, "--set", "train.amp=fp8"], "train.amp"),
        "finetune: world classes": ([*ft, "--set", "data.world.num_classes=0"], "num_classes"),
        "finetune: unknown field": ([*ft, "--set", "train.epoch=3"], "epoch"),
        "finetune: wrong type": ([*ft, "--set", "train.epochs=many"], "train.epochs"),
        "finetune: unknown objective": ([*ft, "--set", "objective.name=lime"], "objective.name"),
        "finetune: checkpoint shape": (
            [*ft, "--set", f"model.checkpoint={r / 'ten.safetensors'}", "--set", "model.depth=2"],
            "model.checkpoint",
        ),
        "finetune: resume nothing": ([*ft, "--resume"], "nothing to resume"),
        "finetune: missing config": (["finetune", "--config", str(r / "no.yaml"), "--out", str(out)], "no.yaml"),
        "finetune: bad yaml": (["finetune", "--config", str(r / "bad.yaml"), "--out", str(out)], "bad.yaml"),
        "finetune: yaml list": (["finetune", "--config", str(r / "list.yaml"), "--out", str(out)], "list.yaml"),
        "finetune: folder without root": (
            ["finetune", "--config", str(r / "folder.yaml"), "--no-progress", "--out", str(out)],
            "data.root is required",
        ),
        "finetune: a world field on folder": ([*ft, "--set", "data.source=folder"], "data.world is a setting of"),
        "finetune: exclude parts with llm": ([*ft, "--set", "data.concepts.exclude_parts=[body]"], "exclude_parts"),
        # evaluate
        "evaluate: checkpoint shape": (
            [*ev, "--checkpoint", str(r / "ten.safetensors"), "--eval-set", val],
            "head.bias",
        ),
        "evaluate: device cuda": ([*ev, "--eval-set", val, "--device", "cuda:7"], "cuda:7"),
        "evaluate: relevance method": ([*ev, "--eval-set", f"imagenet-seg={r}", "--relevance-method", "lime"], "lime"),
        "evaluate: num_classes 0": (
            [*ev, "--model-arg", "num_classes=0", "--eval-set", f"imagenet-val={r}"],
            "num_classes",
        ),
        "evaluate: batch 0": ([*ev, "--eval-set", val, "--batch-size", "0"], "--batch-size"),
        "evaluate: unknown set": ([*ev, "--eval-set", f"imagenet-z={r}"], "imagenet-z"),
        "evaluate: empty tree": ([*ev, "--eval-set", f"imagenet-sketch={r / 'empty'}"], "empty"),
        "evaluate: eval set without path": ([*ev, "--eval-set", "imagenet-val"], "--eval-set"),
        # compare
        "compare: missing results": (["compare", str(r / "nope.json"), str(r / "nope.json"), *cmp], "nope.json"),
        "compare: not json": (["compare", str(r / "bad_bank.json"), str(r / "bad_bank.json"), *cmp], "bad_bank"),
        "compare: not results": (["compare", str(r / "bank.json"), str(r / "bank.json"), *cmp], "holds no runs"),
        # concepts
        "concepts: empty bank": (
            ["concepts", "filter", str(r / "empty_bank.json"), "--out", str(out / "b.json")],
            "no classes",
        ),
        "concepts: bad bank json": (
            ["concepts", "filter", str(r / "bad_bank.json"), "--out", str(out / "b.json")],
            "bad_bank",
        ),
        "concepts: openai without url": (
            ["concepts", "propose", "--classes", "cat", "--backend", "openai", "--out", str(out / "b.json")],
            "--base-url",
        ),
        "concepts: bank backend without file": (
            ["concepts", "propose", "--classes", "cat", "--backend", "bank", "--out", str(out / "b.json")],
            "--bank",
        ),
        "concepts: validate real without images": (
            ["concepts", "validate", str(r / "bank.json"), "--segmenter", "clipseg", "--out", str(out / "b.json")],
            "--images",
        ),
        "concepts: empty class list": (
            ["concepts", "propose", "--classes", " ", "--out", str(out / "b.json")],
            "class",
        ),
        # masks
        "masks: missing bank": (masks("no.json", "world"), "no.json"),
        "masks: class without concepts": (masks("bank.json", "world"), "dog"),
        "masks: unknown segmenter": (masks("bank.json", "sam9"), "sam9"),
        "masks show: not a store": (
            ["masks", "show", "--store", str(r / "empty"), "--images", str(r / "tree"), "--out", str(out / "s.png")],
            "mask store",
        ),
        # run and demo
        "run: missing recipe": (["run", str(r / "no.yaml"), "--out", str(out)], "no.yaml"),
        "run: unknown packaged recipe": (["run", "imagenet/vit-z", "--out", str(out)], "imagenet/vit-z"),
        "run: no seeds": (["run", "imagenet/vit-b16", "--set", "seeds=[]", "--out", str(out)], "seeds"),
        "demo: lr": (["demo", "--set", "finetune.lr=-1", "--out", str(out)], "finetune.lr"),
        "demo: no seeds": (["demo", "--set", "seeds=[]", "--out", str(out)], "seeds"),
        "demo: unknown baseline": (["demo", "--set", "baselines=[lime]", "--out", str(out)], "lime"),
        "demo: unknown field": (["demo", "--set", "finetune.lrr=1", "--out", str(out)], "lrr"),
        "demo: world": (["demo", "--set", "world.cue=smell", "--out", str(out)], "cue"),
        "recipes: validate a bad field": (
            ["recipes", "validate", "world-pretrain", "--set", "train.amp=x"],
            "train.amp",
        ),
    }


CASE_NAMES = sorted(cases(Path("."), Path(".")))


def test_the_matrix_is_large():
    assert len(CASE_NAMES) >= 40


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_a_clear_error_with_no_partial_output(name, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    argv, needle = cases(inputs, out)[name]
    assert main(argv) == 2, name
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cft: error:") + err.count("error:") >= 1, err
    assert needle in err, (needle, err)
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


@pytest.mark.slow
def test_ctrl_c_says_what_is_kept_and_exits_130(inputs, tmp_path):
    """SIGINT in the middle of `cft finetune`: one line on stderr, exit 130, and the same command with --resume
    continues from the saved state."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cft.cli", "finetune", "--config", str(inputs / "tiny.yaml"), "--no-progress"]
    cmd += ["--set=train.epochs=200", "--set=data.val_split=null", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(  # SIGINT restored: a shell's background job would have the child ignore it
        cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cft: interrupted" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1, err
    resumed = subprocess.run([*cmd, "--set=train.epochs=2", "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
