"""SI-Score readers (Djolonga et al. 2020, google-research/si-score): object location, rotation and size.

Published layout: each variant is a folder of class folders named by the object class ("koala", "taxi", ...),
holding `<image id>.jpg` files; the S3 copies (object_<kind>/) also carry foreground_classes.csv (columns
int,label: ImageNet-1k index, class name) and metadata.csv (per-image factor values). Accepted, first found:

    ROOT/<variant folder>/<class>/<images>, variant folder one of
        si-location: location20_area02_min0pc (location.zip), object_location (S3), location
        si-rotation: rotation, object_rotation
        si-size:     area (size.zip), object_size, size
    ROOT/<class>/<images>   (ROOT is the variant folder itself)

A class folder is resolved by, in order: the variant folder's foreground_classes.csv when present, else the 61
published class names (their ImageNet indices from the dataset's generator table); an ImageNet-1k wnid or
index 0..999 is also accepted as a folder name. Any other folder is an error naming it. The protocol is the
paper's: 1000-way top-k over all ImageNet-1k logits.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cft.data.classes import wnid_to_index
from cft.data.evalsets.class_lists import SI_SCORE_CLASSES
from cft.data.evalsets.common import EvalSet, class_folder_samples, require_dir, unwrap
from cft.errors import CftError

VARIANT_FOLDERS = {
    "si-location": ("location20_area02_min0pc", "object_location", "location"),
    "si-rotation": ("rotation", "object_rotation"),
    "si-size": ("area", "object_size", "size"),
}
CLASSES_CSV = "foreground_classes.csv"


def layout(name: str) -> str:
    """The layout `name` expects, for error messages."""
    folders = "|".join(VARIANT_FOLDERS[name])
    return f"ROOT/{{{folders}}}/<class name>/<images> or ROOT/<class name>/<images>"


def _csv_classes(path: Path) -> dict[str, int]:
    """foreground_classes.csv: columns int (ImageNet-1k index), label (class folder name)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        for column in ("int", "label"):
            if column not in (reader.fieldnames or []):
                raise CftError(f"SI-Score: {path} has no column {column!r} (expected int,label)")
        classes = {}
        for line, row in enumerate(reader, start=2):
            value = (row["int"] or "").strip()
            if not value.isdigit() or int(value) >= 1000:
                raise CftError(f"SI-Score: {path} line {line}: int {value!r} is not an ImageNet-1k index 0..999")
            classes[(row["label"] or "").strip()] = int(value)
    return classes


def _folder_labels(folder: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """Folder name -> (ImageNet-1k index,), and the source of the class names."""
    csv_path = folder / CLASSES_CSV
    named, source = (_csv_classes(csv_path), str(csv_path)) if csv_path.is_file() else (SI_SCORE_CLASSES, "built-in")
    labels = {str(i): (i,) for i in range(1000)}
    labels.update({w: (i,) for w, i in wnid_to_index().items()})
    labels.update({name: (index,) for name, index in named.items()})
    return labels, source


def load_si_score(name: str, root: Path) -> list[EvalSet]:
    """One SI-Score variant ("si-location", "si-rotation" or "si-size"), 1000-way."""
    expected = layout(name)
    folder = unwrap(require_dir(name, root, expected), VARIANT_FOLDERS[name])
    labels, source = _folder_labels(folder)
    samples, counts = class_folder_samples(name, folder, labels, expected, "SI-Score class names, wnids or indices")
    info = {
        "root": str(folder),
        "protocol": "1000-way top-k over all ImageNet-1k logits",
        "num_samples": len(samples),
        "num_class_folders": len(counts),
        "class_names": source,
    }
    if (folder / "metadata.csv").is_file():
        info["metadata"] = str(folder / "metadata.csv")
    return [EvalSet(name, samples, None, 1000, info)]
