"""`cft finetune` on images from disk: an ImageFolder tree with the few-shot protocol and masks from the store,
ImageNet wnid folders, Waterbirds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from cft.cli import main
from cft.grounding.build import run_masks
from tests.helpers.masks import FakeSegmenter, write_bank, write_tree

TIMM = ["model.name=vit_tiny_patch16_224", "model.kwargs={patch_size: 8, depth: 1, embed_dim: 24, num_heads: 2}"]
DISK = ["data.image_size=32", "data.resize=36", "train.epochs=2", "train.batch_size=2", "train.optim.lr=1e-3"]


def finetune(tmp_path, *sets: str, out: str = "run") -> int:
    args = ["finetune", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / out), "--no-progress"]
    return main([*args, *(f"--set={s}" for s in (*TIMM, *DISK, *sets))])


def write_metadata(root, header: str, rows) -> None:
    """root/metadata.csv with `header` and `rows`, and an image per row (its colour set by the label y)."""
    columns = header.split(",")
    root.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    for row in rows:
        name, y = row[columns.index("img_filename")], row[columns.index("y")]
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (y * 100, 90, 10)).save(root / name)


@pytest.fixture
def tree(tmp_path):
    ids = write_tree(tmp_path / "images", per_class=4, size=(40, 44))
    write_bank(tmp_path / "bank.json")
    run_masks(tmp_path / "images", tmp_path / "bank.json", FakeSegmenter(), tmp_path / "store", progress=False)
    (tmp_path / "r.yaml").write_text(f"data:\n  source: folder\n  root: {tmp_path / 'images'}\n")
    return ids


def test_folder_few_shot_with_store_masks(tmp_path, tree, capsys):
    (tmp_path / "exclude.txt").write_text("goldfish/img0.png\ngoldfish/img1.png\n")
    sets = [f"data.store={tmp_path / 'store'}", "data.few_shot={per_class: 2, class_fraction: 1.0, seed: 3}"]
    sets += [f"data.few_shot.exclude={tmp_path / 'exclude.txt'}"]
    assert finetune(tmp_path, *sets) == 0, capsys.readouterr().err
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["seen_class_names"] == ["goldfish", "tabby cat"] and len(split["images"]) == 4
    assert {"goldfish/img2.png", "goldfish/img3.png"} <= set(split["images"])  # the excluded two never chosen
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(np.isfinite(h["train_loss"]) and h["train_align"] > 0 for h in history)
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_folder_run_saved_with_the_split_fields_resumes(tmp_path, tree, capsys):
    """Folder runs saved before the split fields left the disk sources' section (their config.yaml holds
    train_split, n_train, val_split and n_val) resume: fields the source does not read cannot differ."""
    sets = ["objective.name=erm", "data.masks=none"]
    assert finetune(tmp_path, *sets, "train.epochs=1") == 0, capsys.readouterr().err
    saved_path = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    assert not {"train_split", "n_train", "val_split", "n_val"} & set(saved["data"])
    saved["data"].update(train_split="train", n_train=6000, val_split="val", n_val=500)
    saved_path.write_text(yaml.safe_dump(saved, sort_keys=False))
    args = ["finetune", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*args, "--resume", *(f"--set={s}" for s in (*TIMM, *DISK, *sets, "train.epochs=2"))]) == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_folder_errors(tmp_path, tree, capsys):
    assert finetune(tmp_path) == 2  # cft needs masks
    assert "set data.store" in capsys.readouterr().err
    (tmp_path / "store" / "entries" / "tabby cat" / "img3.png.json").unlink()
    assert finetune(tmp_path, f"data.store={tmp_path / 'store'}") == 2
    assert "no masks for 1 image(s)" in capsys.readouterr().err
    npz = tmp_path / "store" / "entries" / "goldfish" / "img2.png.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size: only the checksum tells
    npz.write_bytes(bytes(data))
    assert finetune(tmp_path, f"data.store={tmp_path / 'store'}", out="run2") == 2
    err = capsys.readouterr().err
    assert "are corrupt" in err and str(npz) in err and "Traceback" not in err
    assert finetune(tmp_path, "objective.name=erm", "data.masks=none", "data.image_size=64") == 2
    assert "data.image_size" in capsys.readouterr().err
    assert finetune(tmp_path, "objective.name=erm", "data.masks=none", f"data.root={tmp_path / 'no'}") == 2
    assert "does not exist" in capsys.readouterr().err
    # the store holds concept masks: asking for object masks is an error, not concept masks under another name
    assert finetune(tmp_path, f"data.store={tmp_path / 'store'}", "data.masks=object", out="run3") == 2
    err = capsys.readouterr().err
    assert "data.masks is 'object' but mask store" in err and "made without --object-masks: concept masks" in err
    # the fields of sources drawn from named splits are not the folder's: an error, not a silently ignored setting
    assert finetune(tmp_path, "objective.name=erm", "data.masks=none", "data.n_train=10") == 2
    assert "data.n_train is a setting of data.source world, decoy, not of folder: delete it" in capsys.readouterr().err


def test_imagenet_wnid_folders_train_a_1000_way_model(tmp_path, capsys):
    for wnid in ("n01443537", "n01440764"):  # goldfish (1), tench (0)
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (40, 40), (k * 90, 10, 200)).save(tmp_path / "train" / wnid / f"{k}.JPEG")
    (tmp_path / "r.yaml").write_text(
        f"data:\n  source: folder\n  classes: imagenet\n  root: {tmp_path / 'train'}\n"
        "  masks: none\n  few_shot: {per_class: 1, class_fraction: 0.5, seed: 0}\nobjective:\n  name: erm\n"
    )
    assert finetune(tmp_path) == 0, capsys.readouterr().err
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["seen_classes"] in ([0], [1]) and split["unseen_classes"] == [
        c for c in (0, 1) if c not in split["seen_classes"]
    ]
    assert split["seen_class_names"][0] in ("tench", "goldfish")


def test_waterbirds_training_split(tmp_path, capsys):
    rows = [("a/0.png", 0, 0, 0), ("a/1.png", 1, 0, 1), ("a/2.png", 0, 0, 1), ("a/3.png", 1, 0, 0)]
    rows += [("v/0.png", 0, 1, 0), ("v/1.png", 1, 1, 1), ("t/0.png", 0, 2, 0)]
    write_metadata(tmp_path / "wb", "img_id,img_filename,y,split,place,place_filename", [
        (i, name, y, split, place, "x.jpg") for i, (name, y, split, place) in enumerate(rows)
    ])  # fmt: skip
    (tmp_path / "r.yaml").write_text(
        f"data:\n  source: waterbirds\n  root: {tmp_path / 'wb'}\n  masks: none\nobjective:\n  name: erm\n"
        "train:\n  select_by: val_top1\n"
    )
    assert finetune(tmp_path) == 0, capsys.readouterr().err
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("val_top1" in h for h in history)  # the val split (split 1) was evaluated
    # the folder source's fields have no meaning here: refused, not ignored
    for field, needle in (("val_root", "val_root is read by data.source folder only"),
                          ("classes", "classes is read by data.source folder only")):  # fmt: skip
        value = "imagenet" if field == "classes" else str(tmp_path)
        assert finetune(tmp_path, f"data.{field}={value}", out=f"run-{field}") == 2
        assert needle in capsys.readouterr().err


def test_grouped_dataset_trains_a_k_way_model(tmp_path, capsys):
    rows = [(f"i/{k}.png", k % 3, 0 if k < 6 else 1, k % 2) for k in range(8)]
    write_metadata(tmp_path / "g", "img_filename,y,split,group", rows)
    (tmp_path / "r.yaml").write_text(
        f"data:\n  source: grouped\n  root: {tmp_path / 'g'}\n  masks: none\n"
        "  few_shot: {per_class: 1, class_fraction: 1.0, seed: 0}\nobjective:\n  name: erm\n"
    )
    assert finetune(tmp_path) == 0, capsys.readouterr().err
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["seen_class_names"] == ["0", "1", "2"] and len(split["images"]) == 3


def test_cft_fine_tunes_convnext_and_hugging_face_models(tmp_path, tree, capsys):
    """The other model families of the recipes: timm ConvNeXt-V2 (Grad-CAM relevance) and an HF ViT (hf:DIR)."""
    from transformers import ViTConfig, ViTForImageClassification

    store = f"data.store={tmp_path / 'store'}"
    convnext = ["model.name=convnextv2_atto", "model.kwargs={depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}"]
    args = ["finetune", "--config", str(tmp_path / "r.yaml"), "--no-progress"]
    common = [*DISK, store, "objective.method=gradcam", "data.image_size=64", "data.resize=72"]
    assert main([*args, "--out", str(tmp_path / "cnx"), *(f"--set={s}" for s in (*common, *convnext))]) == 0
    history = [json.loads(x) for x in (tmp_path / "cnx" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(np.isfinite(h["train_align"]) for h in history)

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=48, num_labels=2)  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path / "hf-vit")
    hf = [f"model.name=hf:{tmp_path / 'hf-vit'}", "model.kwargs={}", "model.pretrained=true"]
    assert main([*args, "--out", str(tmp_path / "hf"), *(f"--set={s}" for s in (*TIMM, *DISK, store, *hf))]) == 0, (
        capsys.readouterr().err
    )
    assert (tmp_path / "hf" / "best.safetensors").is_file()


def test_held_out_validation_images_of_the_seen_classes(tmp_path, tree, capsys):
    """few_shot.val_per_class: other images of the seen classes validate (val_loss selects the checkpoint)."""
    sets = [f"data.store={tmp_path / 'store'}", "data.few_shot={per_class: 2, class_fraction: 0.5, val_per_class: 1}"]
    assert finetune(tmp_path, *sets, "train.select_by=val_loss") == 0, capsys.readouterr().err
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    (cls,) = split["seen_class_names"]
    assert len(split["images"]) == 2 and len(split["val_images"]) == 1
    assert not set(split["images"]) & set(split["val_images"])
    assert all(i.startswith(cls + "/") for i in split["images"] + split["val_images"])
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("val_loss" in h for h in history)
    assert finetune(tmp_path, *sets, f"data.val_root={tmp_path / 'images'}", out="run2") == 2
    assert "use one of the two" in capsys.readouterr().err
