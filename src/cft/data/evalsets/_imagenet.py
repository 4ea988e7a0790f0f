"""Readers for the ImageNet-family evaluation sets: ImageNet val, ImageNet-V2, ImageNet-A, ImageNet-R, ImageNet-Sketch.

Labels always come from the folder's wnid (or class index) looked up in the ImageNet-1k order, never from the
order of the folders present, so a tree holding only some classes still gets the right labels.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cft.data.classes import imagenet_wnids, wnid_to_index
from cft.data.evalsets.class_lists import IMAGENET_A_WNIDS, IMAGENET_R_WNIDS
from cft.data.evalsets.common import EvalSet, Sample, class_folder_samples, require_dir, sort_samples, unwrap
from cft.data.walk import flat_images, subfolders
from cft.errors import CftError

VAL_LAYOUT = (
    "ROOT/<wnid>/<images>, or the images directly in ROOT with labels in ROOT/LOC_val_solution.csv (Kaggle) "
    "or ROOT/val_labels.txt"
)
V2_LAYOUT = "ROOT/<class index 0..999>/<images>"
WNID_LAYOUT = "ROOT/<wnid>/<images>"
KAGGLE_CSV = "LOC_val_solution.csv"
LABELS_TXT = "val_labels.txt"
DEVKIT_TXT = "ILSVRC2012_validation_ground_truth.txt"
_V2_FOLDERS = tuple(f"imagenetv2-{v}-format-val" for v in ("matched-frequency", "threshold0.7", "top-images")) + tuple(
    f"imagenetv2-{v}" for v in ("matched-frequency", "threshold0.7", "top-images")
)


def _wnid_labels(wnids: tuple[str, ...] | None = None) -> dict[str, tuple[int, ...]]:
    """wnid folder name -> (ImageNet-1k index,), for `wnids` (default: all 1000)."""
    index = wnid_to_index()
    return {w: (index[w],) for w in (wnids if wnids is not None else imagenet_wnids())}


def _info(root: Path, protocol: str, samples: list[Sample], counts: dict[str, int] | None = None) -> dict:
    info = {"root": str(root), "protocol": protocol, "num_samples": len(samples)}
    if counts is not None:
        info["num_class_folders"] = len(counts)
    return info


def load_imagenet_val(root: Path) -> list[EvalSet]:
    """ImageNet-1k validation: class folders, or flat images with a labels file (see VAL_LAYOUT)."""
    root = require_dir("imagenet-val", root, VAL_LAYOUT)
    protocol = "1000-way top-k over all ImageNet-1k logits"
    flat = bool(flat_images(root)) or (root / KAGGLE_CSV).is_file()
    if not flat and subfolders(root):
        samples, counts = class_folder_samples("imagenet-val", root, _wnid_labels(), VAL_LAYOUT, "ImageNet-1k wnids")
        info = {**_info(root, protocol, samples, counts), "layout": "class folders"}
        return [EvalSet("imagenet-val", samples, None, 1000, info)]
    samples, source = _flat_val(root)
    info = {**_info(root, protocol, samples), "layout": f"flat images + {source}"}
    return [EvalSet("imagenet-val", samples, None, 1000, info)]


def _flat_val(root: Path) -> tuple[list[Sample], str]:
    kaggle = root / KAGGLE_CSV
    if kaggle.is_file():
        images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
        folder = images if images.is_dir() else root
        return _kaggle_samples(kaggle, folder, root), KAGGLE_CSV
    if (root / LABELS_TXT).is_file():
        return _text_samples(root / LABELS_TXT, root), LABELS_TXT
    if (root / DEVKIT_TXT).is_file():
        raise CftError(
            f"imagenet-val: {root / DEVKIT_TXT} holds devkit ILSVRC2012_IDs (1..1000 in the devkit's order), not "
            f"ImageNet-1k class indices; sort the images into class folders or give ROOT/{LABELS_TXT} instead "
            f"(expected {VAL_LAYOUT})"
        )
    raise CftError(f"imagenet-val: {root} has neither class folders nor a labels file; expected {VAL_LAYOUT}")


def _label(token: str, where: str) -> int:
    """A class given as a wnid or an ImageNet-1k index (0..999)."""
    index = wnid_to_index()
    if token in index:
        return index[token]
    if token.isdigit() and int(token) < 1000:
        return int(token)
    raise CftError(f"{where}: {token!r} is neither an ImageNet-1k wnid nor a class index 0..999")


def _kaggle_samples(csv_path: Path, folder: Path, root: Path) -> list[Sample]:
    """Rows `ImageId,PredictionString` (first token of PredictionString = the wnid) -> samples of `folder`."""
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        for column in ("ImageId", "PredictionString"):
            if column not in (reader.fieldnames or []):
                raise CftError(f"imagenet-val: {csv_path} has no column {column!r} (expected ImageId,PredictionString)")
        labels = {}
        for line, row in enumerate(reader, start=2):
            tokens = (row["PredictionString"] or "").split()
            if not tokens:
                raise CftError(f"imagenet-val: {csv_path} line {line}: empty PredictionString")
            labels[row["ImageId"]] = _label(tokens[0], f"imagenet-val: {csv_path} line {line}")
    images = flat_images(folder)
    if not images:
        raise CftError(f"imagenet-val: no images in {folder}; expected {VAL_LAYOUT}")
    unlabelled = [p.name for p in images if p.stem not in labels]
    if unlabelled:
        raise CftError(f"imagenet-val: {csv_path} has no row for image(s) {', '.join(unlabelled[:5])}")
    return sort_samples([Sample(p, (labels[p.stem],)) for p in images], root)


def _text_samples(txt: Path, root: Path) -> list[Sample]:
    """val_labels.txt: one label per line in sorted file-name order, or `<file name> <label>` per line."""
    lines = [line.split() for line in txt.read_text().splitlines() if line.strip()]
    images = flat_images(root)
    if not images:
        raise CftError(f"imagenet-val: no images in {root}; expected {VAL_LAYOUT}")
    if lines and all(len(tokens) == 2 for tokens in lines):
        named = {tokens[0]: _label(tokens[1], f"imagenet-val: {txt} line {i}") for i, tokens in enumerate(lines, 1)}
        missing = [p.name for p in images if p.name not in named]
        if missing:
            raise CftError(f"imagenet-val: {txt} has no line for image(s) {', '.join(missing[:5])}")
        return [Sample(p, (named[p.name],)) for p in images]
    if any(len(tokens) != 1 for tokens in lines):
        raise CftError(f"imagenet-val: {txt}: expected one label per line, or '<file name> <label>' per line")
    if len(lines) != len(images):
        raise CftError(
            f"imagenet-val: {txt} has {len(lines)} labels but {root} has {len(images)} images; "
            "expected one label per image, in sorted file-name order"
        )
    pairs = enumerate(zip(images, lines, strict=True), start=1)
    return [Sample(p, (_label(t[0], f"imagenet-val: {txt} line {i}"),)) for i, (p, t) in pairs]


def load_imagenet_v2(root: Path) -> list[EvalSet]:
    """ImageNet-V2: ROOT/<class index>/<images> (also ROOT/imagenetv2-<variant>-format-val/...)."""
    root = unwrap(require_dir("imagenet-v2", root, V2_LAYOUT), _V2_FOLDERS)
    labels = {str(i): (i,) for i in range(1000)}
    samples, counts = class_folder_samples("imagenet-v2", root, labels, V2_LAYOUT, "class indices 0..999")
    info = _info(root, "1000-way top-k over all ImageNet-1k logits", samples, counts)
    return [EvalSet("imagenet-v2", samples, None, 1000, info)]


def _two_protocols(name: str, root: Path, wnids: tuple[str, ...], title: str) -> list[EvalSet]:
    """The 200-class protocol (logits restricted to the published list) and the 1000-way argmax one."""
    root = unwrap(require_dir(name, root, WNID_LAYOUT), (name,))
    samples, counts = class_folder_samples(name, root, _wnid_labels(wnids), WNID_LAYOUT, f"{title} class wnids")
    allowed = tuple(sorted(wnid_to_index()[w] for w in wnids))
    restricted = _info(root, f"200-class: logits restricted to the {len(allowed)} published {title} classes", samples)
    full = _info(root, "1000-way argmax over all ImageNet-1k logits (as the CFT paper and its code report)", samples)
    for info in (restricted, full):
        info.update(num_class_folders=len(counts), num_protocol_classes=len(allowed))
    return [
        EvalSet(name, samples, allowed, 1000, restricted),
        EvalSet(f"{name}:1000", list(samples), None, 1000, full),
    ]


def load_imagenet_a(root: Path) -> list[EvalSet]:
    """ImageNet-A: ROOT/<wnid>/<images> -> [200-class protocol, 1000-way protocol]."""
    return _two_protocols("imagenet-a", root, IMAGENET_A_WNIDS, "ImageNet-A")


def load_imagenet_r(root: Path) -> list[EvalSet]:
    """ImageNet-R: ROOT/<wnid>/<images> -> [200-class protocol, 1000-way protocol]."""
    return _two_protocols("imagenet-r", root, IMAGENET_R_WNIDS, "ImageNet-R")


def load_imagenet_sketch(root: Path) -> list[EvalSet]:
    """ImageNet-Sketch: ROOT/<wnid>/<images> (also ROOT/sketch/<wnid>/..., the archive's own folder)."""
    root = unwrap(require_dir("imagenet-sketch", root, WNID_LAYOUT), ("sketch",))
    samples, counts = class_folder_samples("imagenet-sketch", root, _wnid_labels(), WNID_LAYOUT, "ImageNet-1k wnids")
    info = _info(root, "1000-way top-k over all ImageNet-1k logits", samples, counts)
    return [EvalSet("imagenet-sketch", samples, None, 1000, info)]
