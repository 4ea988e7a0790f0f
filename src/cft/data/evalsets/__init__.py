"""Evaluation-set readers (a registry, EVAL_SETS) in the datasets' published layouts: `load_benchmark(name, root)`.

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
- objectnet: see cft.data.evalsets.objectnet (ROOT/images/<folder>/..., ROOT/mappings/*.json).
- si-location, si-rotation, si-size: see cft.data.evalsets.siscore (class folders named by object class).
- imagenet-seg: ROOT/gtsegs_ijcv.mat or the .mat itself; items read with `read_seg_item`.
- waterbirds (test split) / waterbirds:val: ROOT/metadata.csv + ROOT/<img_filename>; `group_sizes` for weights.
- grouped (test split) / grouped:val: any group-labelled dataset, ROOT/metadata.csv (img_filename,y,split,group).

Hidden files and folders are ignored; an unknown class folder is an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cft.data.evalsets.common import Benchmark, Sample
from cft.data.evalsets.imagenet import (
    load_imagenet_a,
    load_imagenet_r,
    load_imagenet_sketch,
    load_imagenet_v2,
    load_imagenet_val,
)
from cft.data.evalsets.objectnet import load_objectnet
from cft.data.evalsets.seg import load_imagenet_seg, read_seg_item
from cft.data.evalsets.siscore import load_si_score
from cft.data.evalsets.waterbirds import GROUP_NAMES, GROUPED, group_sizes, load_grouped, load_waterbirds
from cft.errors import CftError
from cft.registry import Registry

__all__ = [
    "BENCHMARKS",
    "EVAL_SETS",
    "GROUP_NAMES",
    "Benchmark",
    "Sample",
    "group_sizes",
    "load_benchmark",
    "read_seg_item",
    "register_eval_set",
]

BENCHMARKS: tuple[str, ...] = (
    "imagenet-val",
    "imagenet-v2",
    "imagenet-a",
    "imagenet-r",
    "imagenet-sketch",
    "objectnet",
    "si-location",
    "si-rotation",
    "si-size",
    "imagenet-seg",
    "waterbirds",
    "grouped",
)

Reader = Callable[[Path], list[Benchmark]]
EVAL_SETS: Registry[Reader] = Registry("evaluation set")  # name -> reader of ROOT (see register_eval_set)
EVAL_SETS.update(
    {
        "imagenet-val": load_imagenet_val,
        "imagenet-v2": load_imagenet_v2,
        "imagenet-a": load_imagenet_a,
        "imagenet-r": load_imagenet_r,
        "imagenet-sketch": load_imagenet_sketch,
        "objectnet": load_objectnet,
        "si-location": lambda root: load_si_score("si-location", root),
        "si-rotation": lambda root: load_si_score("si-rotation", root),
        "si-size": lambda root: load_si_score("si-size", root),
        "imagenet-seg": load_imagenet_seg,
        "waterbirds": load_waterbirds,
        "waterbirds:val": lambda root: load_waterbirds(root, split=1, name="waterbirds:val"),
        "grouped": lambda root: load_grouped(root, fmt=GROUPED),
        "grouped:val": lambda root: load_grouped(root, split=1, name="grouped:val", fmt=GROUPED),
    }
)


def register_eval_set(name: str, reader: Reader) -> None:
    """Add an evaluation set: `reader(root)` returns its protocols as Benchmarks (`cft evaluate --bench NAME=ROOT`)."""
    EVAL_SETS.add(name, reader)


def load_benchmark(name: str, root: str | Path) -> list[Benchmark]:
    """The protocols of benchmark `name` read from `root`: two for imagenet-a / imagenet-r, else one."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in EVAL_SETS:
        extra = "waterbirds:val, grouped:val"
        raise CftError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)} (or {extra})")
    return EVAL_SETS[key](Path(root).expanduser())
