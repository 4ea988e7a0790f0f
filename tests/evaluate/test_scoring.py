"""`cft evaluate`: accuracies from a model whose predictions are known in advance, both ImageNet-A protocols,
ObjectNet's many-to-one classes, Waterbirds groups, seeds aggregated, the CLI against a plain timm loop."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from cft.cli import main
from cft.data.classes import imagenet_wnids
from cft.data.evalsets import load_eval_set
from cft.data.evalsets.class_lists import IMAGENET_A_WNIDS
from cft.errors import CftError
from cft.evaluate.checkpoints import parse_eval_set_args
from cft.evaluate.scoring import EvalOptions, aggregate, predict_topk, score

OPTS = EvalOptions(batch_size=3, workers=0, device="cpu", progress=False)
TO_TENSOR = T.Compose([T.Resize((8, 8)), T.ToTensor()])


def colour(p: int) -> tuple[int, int, int]:
    """The colour that makes ColourModel predict class p."""
    return p % 256, (p // 256) * 64, 0


class ColourModel(nn.Module):
    """Predicts the class written in the image's colour; logits fall with the distance |c - p|, so the top-5 are
    p, p +- 1, p +- 2."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = (x[:, 0].mean((1, 2)) * 255).round()
        g = (x[:, 1].mean((1, 2)) * 255 / 64).round()
        p = r + 256 * g
        c = torch.arange(self.num_classes, dtype=torch.float32)
        return -(c[None] - p[:, None]).abs() - 1e-3 * c[None]  # ties broken towards the smaller class


def write(path, p: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour(p)).save(path)


def test_imagenet_v2_known_predictions(tmp_path):
    # class 5: right, second-best (top-5 only), far off; class 999: right
    for k, p in enumerate([5, 6, 50]):
        write(tmp_path / "5" / f"{k}.png", p)
    write(tmp_path / "999" / "0.png", 999)
    (bench,) = load_eval_set("imagenet-v2", tmp_path)
    top = predict_topk(ColourModel(), bench, OPTS, TO_TENSOR)
    assert top[:, 0].tolist() == [5, 6, 50, 999]
    result = score(bench, top, seen={5})
    assert result["top1"] == 0.5 and result["top5"] == 0.75 and result["n"] == 4
    assert result["top1_seen"] == pytest.approx(1 / 3) and result["top1_unseen"] == 1.0


def test_imagenet_a_two_protocols(tmp_path):
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    allowed = sorted(index[w] for w in IMAGENET_A_WNIDS)
    target = allowed[10]
    # a class outside the 200 whose nearest allowed class is `target`: right only in the 200-class protocol
    outside = next(
        j for j in range(target + 1, 1000) if j not in allowed and min(allowed, key=lambda a: abs(a - j)) == target
    )
    wnid = imagenet_wnids()[target]
    write(tmp_path / wnid / "a.png", target)
    write(tmp_path / wnid / "b.png", outside)
    plain, full = load_eval_set("imagenet-a", tmp_path)
    assert (plain.name, full.name) == ("imagenet-a", "imagenet-a:1000")
    assert score(plain, predict_topk(ColourModel(), plain, OPTS, TO_TENSOR))["top1"] == 1.0
    assert score(full, predict_topk(ColourModel(), full, OPTS, TO_TENSOR))["top1"] == 0.5
    assert set(predict_topk(ColourModel(), plain, OPTS, TO_TENSOR).ravel()) <= set(allowed)


def test_objectnet_any_mapped_class_counts(tmp_path):
    maps = tmp_path / "mappings"
    maps.mkdir(parents=True)
    descriptions = __import__("timm").data.ImageNetInfo().label_descriptions()
    (maps / "folder_to_objectnet_label.json").write_text(json.dumps({"alarm_clock": "Alarm clock", "sock": "Sock"}))
    mapping = {"Alarm clock": f"{descriptions[409]}; {descriptions[530]}", "Sock": descriptions[806]}
    (maps / "objectnet_to_imagenet_1k.json").write_text(json.dumps(mapping))
    for k, p in enumerate([409, 530, 806]):  # both clocks count; the sock image is predicted as a clock
        write(tmp_path / "images" / "alarm_clock" / f"{k}.png", p)
    write(tmp_path / "images" / "sock" / "0.png", 409)
    (bench,) = load_eval_set("objectnet", tmp_path)
    assert bench.info["crop_border"] == 2
    result = score(bench, predict_topk(ColourModel(), bench, OPTS, TO_TENSOR))
    assert result["top1"] == 0.5  # clock 409 right, clock 530 right, 806 (a sock) wrong for a clock, sock wrong


def test_waterbirds_groups(tmp_path):
    rows = [("a/0.png", 0, 2, 0, 0), ("a/1.png", 0, 2, 1, 1), ("b/0.png", 1, 2, 0, 0), ("b/1.png", 1, 2, 1, 1)]
    rows += [("t/0.png", 0, 0, 0, 0), ("t/1.png", 0, 0, 0, 0), ("t/2.png", 1, 0, 1, 0)]
    with (tmp_path / "metadata.csv").open("w") as f:
        f.write("img_id,img_filename,y,split,place,place_filename\n")
        for i, (name, y, split, place, pred) in enumerate(rows):
            f.write(f"{i},{name},{y},{split},{place},x.jpg\n")
            write(tmp_path / name, pred)
    (bench,) = load_eval_set("waterbirds", tmp_path)
    from cft.data.evalsets import group_sizes

    result = score(bench, predict_topk(ColourModel(2), bench, OPTS, TO_TENSOR), None, group_sizes(tmp_path))
    # test groups (2y + place): 0 right, 1 wrong, 2 wrong, 3 right; training sizes: group 0: 2, group 3: 1, others 0
    assert result["top1"] == 0.5 and result["worst_group"] == 0.0 and result["group_average"] == 0.5
    assert result["group_weighted_average"] == pytest.approx((2 * 1.0 + 0 * 0.0 + 0 * 0.0 + 1 * 1.0) / 3)
    assert result["per_group"] == {"0": 1.0, "1": 0.0, "2": 0.0, "3": 1.0}


def test_aggregate_mean_and_std():
    runs = {"a": {"x": {"top1": 0.5, "n": 4}}, "b": {"x": {"top1": 0.7, "n": 4, "worst_group": None}}}
    mean, std = aggregate(runs)
    assert mean["x"]["top1"] == pytest.approx(0.6) and std["x"]["top1"] == pytest.approx(0.1) and mean["x"]["n"] == 4


def _tiny_args(tmp_path, *extra):
    args = ["evaluate", "--model", "vit_tiny_patch16_224", "--model-arg", "img_size=32", "--model-arg", "patch_size=8"]
    args += ["--model-arg", "depth=1", "--model-arg", "embed_dim=24", "--model-arg", "num_heads=2"]
    return [*args, "--workers", "0", "--device", "cpu", "--batch-size", "4", "--no-progress", *extra]


@pytest.fixture
def v2_tree(tmp_path):
    rng = np.random.default_rng(0)
    for cls in (3, 7, 640):
        (tmp_path / "v2" / str(cls)).mkdir(parents=True)
        for k in range(3):
            arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "v2" / str(cls) / f"{k}.png")
    return tmp_path / "v2"


def plain_timm_top(model, root) -> tuple[np.ndarray, np.ndarray]:
    """An independent evaluation loop: timm's eval transform, the model, argmax and top-5."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=model)
    config["input_size"] = (3, 32, 32)
    transform = create_transform(**config)
    paths = sorted(root.rglob("*.png"), key=lambda p: p.relative_to(root).as_posix())
    labels = np.array([int(p.parent.name) for p in paths])
    with torch.no_grad():
        logits = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths]))
    top5 = logits.topk(5, 1).indices.numpy()
    return top5[:, 0] == labels, (top5 == labels[:, None]).any(1)


def test_cli_matches_a_plain_timm_loop_and_aggregates_checkpoints(tmp_path, v2_tree):
    import cft
    from cft.models import save_checkpoint

    kwargs = dict(img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2)
    checkpoints, expected = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = cft.load_model("vit_tiny_patch16_224", **kwargs).eval()
        with torch.no_grad():
            model.head.bias[[3, 7, 640]] += torch.tensor([3.0, 2.0, 1.0]) * (1 - seed)  # seed 0 predicts tree classes
        path = tmp_path / f"seed{seed}.safetensors"
        save_checkpoint(model, path)
        checkpoints += ["--checkpoint", str(path)]
        expected.append(plain_timm_top(model, v2_tree))
    (tmp_path / "split.json").write_text(json.dumps({"seen_classes": [3, 7], "unseen_classes": [640]}))
    out = tmp_path / "out" / "results.json"
    args = _tiny_args(tmp_path, *checkpoints, "--eval-set", f"imagenet-v2={v2_tree}", "--out", str(out))
    assert main([*args, "--split", str(tmp_path / "split.json")]) == 0
    results = json.loads(out.read_text())
    runs = [results["runs"][str(tmp_path / f"seed{s}.safetensors")]["imagenet-v2"] for s in (0, 1)]
    for run, (top1, top5) in zip(runs, expected, strict=True):
        assert run["top1"] == pytest.approx(top1.mean()) and run["top5"] == pytest.approx(top5.mean())
        assert run["top1_seen"] == pytest.approx(top1[:6].mean()) and run["n"] == 9
    assert results["format"] == 2 and set(results["eval_set_info"]) == {"imagenet-v2"}
    cell = results["eval_sets"]["imagenet-v2"]
    assert cell["top1"] == pytest.approx(np.mean([r["top1"] for r in runs])) and cell["n"] == 9
    assert results["std"]["imagenet-v2"]["top1"] == pytest.approx(np.std([r["top1"] for r in runs]))
    assert runs[0]["top1"] != runs[1]["top1"]
    assert "| imagenet-v2 |" in out.with_suffix(".md").read_text()
    rows = list(csv.DictReader(out.with_name("results_per_class.csv").open()))
    assert len(rows) == 6 and {r["name"] for r in rows} == {"tiger shark", "cock", "manhole cover"}
    assert list(rows[0])[:3] == ["run", "eval_set", "class"] and {r["eval_set"] for r in rows} == {"imagenet-v2"}


def test_cli_bad_input(tmp_path, capsys, v2_tree):
    assert main(_tiny_args(tmp_path, "--eval-set", f"imagenet-a={tmp_path / 'nowhere'}")) == 2
    err = capsys.readouterr().err
    assert "imagenet-a" in err and "does not exist" in err
    assert main(_tiny_args(tmp_path, "--eval-set", "imagenet-v2")) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(_tiny_args(tmp_path, "--bench", "imagenet-v2")) == 2  # the flag's old name is read the same
    assert "--eval-set 'imagenet-v2' must look like NAME=PATH" in capsys.readouterr().err
    assert main(_tiny_args(tmp_path, "--eval-set", f"imagenet-q={v2_tree}")) == 2
    assert "imagenet-q" in capsys.readouterr().err
    assert main(_tiny_args(tmp_path, "--eval-set", f"imagenet-v2={v2_tree}", "--mean", "0.5,x")) == 2
    assert "--mean" in capsys.readouterr().err
    with pytest.raises(CftError, match="twice"):
        parse_eval_set_args(["imagenet-v2=a", "imagenet-v2=b"])


def test_waterbirds_needs_a_two_class_model(tmp_path, capsys):
    (tmp_path / "wb").mkdir()
    (tmp_path / "wb" / "metadata.csv").write_text("img_id,img_filename,y,split,place,place_filename\n0,a.png,1,2,0,x\n")
    write(tmp_path / "wb" / "a.png", 1)
    assert main(_tiny_args(tmp_path, "--eval-set", f"waterbirds={tmp_path / 'wb'}")) == 2
    assert "num_classes=2" in capsys.readouterr().err
    out = tmp_path / "r.json"
    args = _tiny_args(tmp_path, "--eval-set", f"waterbirds={tmp_path / 'wb'}", "--model-arg", "num_classes=2")
    assert main([*args, "--out", str(out)]) == 0
    assert "worst_group" in json.loads(out.read_text())["eval_sets"]["waterbirds"]


def test_imagenet_seg_scores_relevance(tmp_path):
    from tests.helpers.evalsets import write_mat

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((40, 48), bool) for _ in range(3)]
    for m in masks:
        m[10:30, 12:36] = True
    write_mat(tmp_path / "gtsegs_ijcv.mat", images, masks)
    out = tmp_path / "seg.json"
    assert main(_tiny_args(tmp_path, "--eval-set", f"imagenet-seg={tmp_path}", "--out", str(out))) == 0
    seg = json.loads(out.read_text())["eval_sets"]["imagenet-seg"]
    assert seg["n"] == 3 and 0.0 <= seg["pixel_accuracy"] <= 1.0 and 0.0 <= seg["miou"] <= 1.0


def test_any_group_labelled_dataset(tmp_path):
    """`grouped`: metadata.csv with img_filename, y, split, group; classes 0..max(y); groups as given."""
    rows = [("x/0.png", 2, 2, 7, 2), ("x/1.png", 2, 2, 7, 0), ("x/2.png", 0, 2, 3, 0), ("x/3.png", 1, 2, 5, 1)]
    rows += [("t/0.png", 0, 0, 3, 0), ("t/1.png", 2, 0, 7, 0), ("t/2.png", 2, 0, 7, 0), ("t/3.png", 1, 1, 5, 1)]
    with (tmp_path / "metadata.csv").open("w") as f:
        f.write("img_filename,y,split,group\n")
        for name, y, split, group, pred in rows:
            f.write(f"{name},{y},{split},{group}\n")
            write(tmp_path / name, pred)
    (bench,) = load_eval_set("grouped", tmp_path)
    assert bench.num_classes == 3 and bench.info["train_group_sizes"] == {"3": 1, "5": 0, "7": 2}
    result = score(bench, predict_topk(ColourModel(3), bench, OPTS, TO_TENSOR), None, {3: 1, 5: 0, 7: 2})
    # groups: 3 right (1/1), 5 right (1/1), 7 half (1/2); weighted by training sizes 1, 0, 2
    assert result["per_group"] == {"3": 1.0, "5": 1.0, "7": 0.5} and result["worst_group"] == 0.5
    assert result["group_weighted_average"] == pytest.approx((1 * 1.0 + 2 * 0.5) / 3)
    (val,) = load_eval_set("grouped:val", tmp_path)
    assert [s.targets for s in val.samples] == [(1,)]
    (tmp_path / "metadata.csv").write_text("img_filename,y,split,group\nx/0.png,1,2,-1\n")
    with pytest.raises(CftError, match="group = '-1', expected an integer >= 0"):
        load_eval_set("grouped", tmp_path)


@pytest.mark.slow
def test_torchrun_evaluation_equals_one_process(tmp_path, v2_tree):
    """Two ranks (gloo) each predict half of the images; rank 0 writes the same results as one process."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import cft
    from cft.models import save_checkpoint

    torch.manual_seed(3)
    model = cft.load_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2)
    with torch.no_grad():
        model.head.bias[[3, 7, 640]] += 2.0  # predictions spread over the tree's classes
    save_checkpoint(model, tmp_path / "w.safetensors")
    args = _tiny_args(tmp_path, "--eval-set", f"imagenet-v2={v2_tree}", "--checkpoint", str(tmp_path / "w.safetensors"))
    assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd = [*launch, "--master_port", str(port), "-m", "cft.cli", *args, "--out", str(tmp_path / "two.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["eval_sets"] == two["eval_sets"] and one["eval_sets"]["imagenet-v2"]["n"] == 9
    assert 0 < one["eval_sets"]["imagenet-v2"]["top1"] < 1
    assert done.stdout.count("results:") == 1


@pytest.mark.parametrize("shape", [(50, 70), (224, 224), (37, 41)])
def test_mask_transform_equals_pil_nearest_resize_and_centre_crop(shape):
    """The v2 mask geometry against PIL: resize (nearest) by 1 / crop_pct on the short side rule, centre crop."""
    from PIL import Image as PILImage

    from cft.evaluate.scoring import mask_transform

    rng = np.random.default_rng(shape[0])
    mask = rng.random(shape) > 0.5
    config = {"input_size": (3, 32, 32), "crop_pct": 0.875}
    got = mask_transform(config)(mask)
    scale = int(32 / 0.875)  # 36
    h, w = shape
    rh, rw = (scale, int(scale * w / h)) if h <= w else (int(scale * h / w), scale)  # torchvision floors
    resized = np.asarray(PILImage.fromarray(mask.astype(np.uint8) * 255).resize((rw, rh), PILImage.NEAREST)) > 127
    top, left = int(round((rh - 32) / 2.0)), int(round((rw - 32) / 2.0))
    assert got.shape == (32, 32) and np.array_equal(got, resized[top : top + 32, left : left + 32])
