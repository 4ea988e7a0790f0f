"""Evaluation-set readers (a registry, EVAL_SETS) in the datasets' published layouts: `load_eval_set(name, root)`.

Every reader labels from the dataset's own class identifiers (wnid, class index, mapping files), never from
the order of the folders present, and sorts samples by path relative to ROOT. Layouts accepted:

- imagenet-val: ROOT/<wnid>/<images>; or the images directly in ROOT with either ROOT/LOC_val_solution.csv
  (Kaggle; ImageId,PredictionString, first token of PredictionString = the wnid; images in ROOT or in
  ROOT/ILSVRC/Data/CLS-LOC/val) or ROOT/val_labels.txt (one label per line in sorted file-name order, or
  "<file name> <label>" per line; a label is a wnid or an ImageNet-1k index 0..999 in timm/torchvision order).
  The devkit's ILSVRC2012_validation_ground_truth.txt is refused: its numbers are devkit ids, not indices.
- imagenet-v2: ROOT/<class index 0..999>/<images> (or ROOT/imagenetv2-<variant>-format-val/...).
- imagenet-a, imagenet-r: ROOT/<wnid>/<images> (or ROOT/imagenet-a|imagenet-r/...), a wnid of the dataset's
  published 200. Two protocols: the plain name restricts the logits to those 200 classes (the datasets' own
  protocol), "<name>:1000" takes the argmax over all 1000 (what the CFT paper and its code report).
- imagenet-sketch: ROOT/<wnid>/<images> (or ROOT/sketch/...).
- objectnet: see cft.data.evalsets._objectnet (ROOT/images/<folder>/..., ROOT/mappings/*.json).
- si-location, si-rotation, si-size: see cft.data.evalsets._siscore (class folders named by object class).
- imagenet-seg: ROOT/gtsegs_ijcv.mat or the .mat itself; items read with `read_seg_item`.
- waterbirds (test split) / waterbirds:val: ROOT/metadata.csv + ROOT/<img_filename>; `group_sizes` for weights.
- grouped (test split) / grouped:val: any group-labelled dataset, ROOT/metadata.csv (img_filename,y,split,group).

Hidden files and folders are ignored; an unknown class folder is an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cft.data.evalsets._imagenet import (
    load_imagenet_a,
    load_imagenet_r,
    load_imagenet_sketch,
    load_imagenet_v2,
    load_imagenet_val,
)
from cft.data.evalsets._objectnet import load_objectnet
from cft.data.evalsets._seg import load_imagenet_seg, read_seg_item
from cft.data.evalsets._siscore import load_si_score
from cft.data.evalsets.common import EvalSet, Sample
from cft.data.evalsets.waterbirds import GROUP_NAMES, GROUPED, group_sizes, load_grouped, load_waterbirds
from cft.errors import CftError
from cft.registry import Registry

__all__ = [
    "EVAL_SETS",
    "GROUP_NAMES",
    "EvalSet",
    "Sample",
    "eval_set_names",
    "group_sizes",
    "load_eval_set",
    "read_seg_item",
    "register_eval_set",
    "split_names",
]

Reader = Callable[[Path], list[EvalSet]]
EVAL_SETS: Registry[Reader] = Registry("evaluation set")  # name -> reader of ROOT (see register_eval_set)


def register_eval_set(name: str, reader: Reader, description: str | None = None) -> None:
    """Add an evaluation set: `reader(root)` returns its protocols as EvalSet objects (`cft evaluate --eval-set
    NAME=ROOT`); description: one line for `cft ls eval-sets` (None: the reader's docstring). A name with a colon
    ("waterbirds:val") is another split of an evaluation set: listed apart from the sets."""
    EVAL_SETS.add(name, reader, description)


def eval_set_names() -> tuple[str, ...]:
    """The registered evaluation sets, other splits ("waterbirds:val") left out."""
    return tuple(name for name in EVAL_SETS if ":" not in name)


def split_names() -> tuple[str, ...]:
    """The registered other splits of evaluation sets ("waterbirds:val", "grouped:val")."""
    return tuple(name for name in EVAL_SETS if ":" in name)


for _name, _reader, _description in (
    ("imagenet-val", load_imagenet_val, "ImageNet-1k validation, 1000-way"),
    ("imagenet-v2", load_imagenet_v2, "ImageNet-V2, 1000-way"),
    ("imagenet-a", load_imagenet_a, "ImageNet-A: the 200-class and the 1000-way protocol"),
    ("imagenet-r", load_imagenet_r, "ImageNet-R: the 200-class and the 1000-way protocol"),
    ("imagenet-sketch", load_imagenet_sketch, "ImageNet-Sketch, 1000-way"),
    ("objectnet", load_objectnet, "ObjectNet restricted to the classes that map to ImageNet-1k"),
    ("si-location", lambda root: load_si_score("si-location", root), "SI-Score, object location varied"),
    ("si-rotation", lambda root: load_si_score("si-rotation", root), "SI-Score, object rotation varied"),
    ("si-size", lambda root: load_si_score("si-size", root), "SI-Score, object size varied"),
    ("imagenet-seg", load_imagenet_seg, "ImageNet-Segmentation (gtsegs_ijcv.mat): relevance against object masks"),
    ("waterbirds", load_waterbirds, "Waterbirds test split: worst-group and mean accuracy"),
    (
        "waterbirds:val",
        lambda root: load_waterbirds(root, split=1, name="waterbirds:val"),
        "Waterbirds validation split",
    ),
    ("grouped", lambda root: load_grouped(root, fmt=GROUPED), "a grouped dataset's test split (metadata.csv)"),
    (
        "grouped:val",
        lambda root: load_grouped(root, split=1, name="grouped:val", fmt=GROUPED),
        "a grouped dataset's validation split",
    ),
):
    register_eval_set(_name, _reader, _description)


def load_eval_set(name: str, root: str | Path) -> list[EvalSet]:
    """The protocols of evaluation set `name` read from `root`: two for imagenet-a / imagenet-r, else one."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in EVAL_SETS:
        extra = f" (or {', '.join(split_names())})" if split_names() else ""
        raise CftError(f"unknown evaluation set {name!r}; choose one of: {', '.join(eval_set_names())}{extra}")
    return EVAL_SETS[key](Path(root).expanduser())
