"""ObjectNet reader, with the dataset's own mapping files.

Layout (objectnet-1.0 as released; ROOT may also be the folder holding `objectnet-1.0/`):

    ROOT/images/<ObjectNet folder>/<images>     (or ROOT/<ObjectNet folder>/<images> when ROOT/images is absent)
    ROOT/mappings/folder_to_objectnet_label.json  {"<folder>": "<ObjectNet label>", ...}
    ROOT/mappings/objectnet_to_imagenet_1k.json   {"<ObjectNet label>": "<ImageNet label>; <ImageNet label>", ...}
    ROOT/mappings/pytorch_to_imagenet_2012_id.json {"<ImageNet-1k index>": <line of imagenet_to_label_2012_v2>}
    ROOT/mappings/imagenet_to_label_2012_v2        one ImageNet label per line, in the devkit's order

ImageNet labels are resolved with the last two files when both are there; without them, by exact match against
the ImageNet-1k label descriptions timm ships ("analog clock", "mountain bike, all-terrain bike, off-roader").

Rules:
- Only ObjectNet classes listed in objectnet_to_imagenet_1k.json are kept (113 of the 313 in the release); the
  folders of the other classes are skipped (counted in `info`). A folder missing from
  folder_to_objectnet_label.json is an error.
- A class that maps to several ImageNet classes (e.g. "Alarm clock" -> analog clock; digital clock) gives its
  samples ALL of them as targets: a prediction of any of them counts as correct.
- `allowed` is the union of the ImageNet classes of every mapped class in the mapping file (not only of the
  folders present): the logits are restricted to it before top-k.
- ObjectNet images have a 1-pixel red border; standard practice is to crop it before the eval transform (the
  model-soups / imagenet-testbed loaders crop 2 px a side). `info["crop_border"] = 2` tells `cft evaluate` to
  crop 2 px from each side before the model's transform.
"""

from __future__ import annotations

import json
from pathlib import Path

from cft.data.evalsets.common import EvalSet, class_folder_samples, require_dir, unwrap
from cft.data.walk import subfolders
from cft.errors import CftError

LAYOUT = (
    "ROOT/images/<ObjectNet folder>/<images> (or ROOT/<folder>/<images>) and ROOT/mappings/"
    "{folder_to_objectnet_label.json, objectnet_to_imagenet_1k.json}"
)
FOLDERS_JSON = "folder_to_objectnet_label.json"
MAPPING_JSON = "objectnet_to_imagenet_1k.json"
IDS_JSON = "pytorch_to_imagenet_2012_id.json"
LABELS_TXT = "imagenet_to_label_2012_v2"
BORDER_NOTE = (
    "ObjectNet images have a 1-pixel red border; standard practice is to crop it before the transform "
    "(model-soups / imagenet-testbed crop 2 px per side)"
)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CftError(f"objectnet: mapping file {path} is missing; expected {LAYOUT}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CftError(f"objectnet: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CftError(f"objectnet: {path} should hold a JSON object, got {type(data).__name__}")
    return data


def _imagenet_labels(mappings: Path) -> tuple[dict[str, list[int]], str]:
    """ImageNet label text -> the ImageNet-1k indices carrying it, and where the table came from."""
    lines, ids = mappings / LABELS_TXT, mappings / IDS_JSON
    if lines.is_file() and ids.is_file():
        texts = [t.strip() for t in lines.read_text().splitlines()]
        try:
            line_to_index = {int(line): int(index) for index, line in _read_json(ids).items()}
        except (TypeError, ValueError):
            raise CftError(f"objectnet: {ids} should map ImageNet-1k indices to line numbers (integers)") from None
        bad = [i for i in line_to_index.values() if not 0 <= i < 1000]
        if bad or any(not 0 <= line < len(texts) for line in line_to_index):
            raise CftError(f"objectnet: {ids} has indices or line numbers out of range for {lines}")
        pairs = [(texts[line], index) for line, index in line_to_index.items()]
        source = f"{IDS_JSON} + {LABELS_TXT}"
    else:
        from timm.data import ImageNetInfo

        pairs = [(text, i) for i, text in enumerate(ImageNetInfo().label_descriptions())]
        source = "timm ImageNet-1k label descriptions"
    table: dict[str, list[int]] = {}
    for text, index in pairs:
        table.setdefault(text, []).append(index)
    return table, source


def _mapped_classes(mappings: Path, labels: set[str]) -> tuple[dict[str, tuple[int, ...]], str]:
    """ObjectNet label -> sorted ImageNet-1k indices, for every class in objectnet_to_imagenet_1k.json."""
    table, source = _imagenet_labels(mappings)
    path = mappings / MAPPING_JSON
    mapped = {}
    for label, names in _read_json(path).items():
        if label not in labels:
            raise CftError(f"objectnet: {path}: class {label!r} is not a label in {FOLDERS_JSON}")
        if not isinstance(names, str):
            raise CftError(f"objectnet: {path}: class {label!r} should map to a '; '-separated string of labels")
        indices = set()
        for text in (t.strip() for t in names.split(";")):
            hits = table.get(text, [])
            if len(hits) != 1:
                why = "matches no ImageNet-1k label" if not hits else f"is ambiguous (indices {hits})"
                raise CftError(f"objectnet: {path}: {label!r} -> {text!r} {why} (labels from {source})")
            indices.add(hits[0])
        mapped[label] = tuple(sorted(indices))
    return mapped, source


def load_objectnet(root: Path) -> list[EvalSet]:
    """ObjectNet restricted to the classes that map to ImageNet-1k (see the module docstring)."""
    root = unwrap(require_dir("objectnet", root, LAYOUT), ("objectnet-1.0",))
    mappings = root / "mappings"
    folder_to_label = _read_json(mappings / FOLDERS_JSON)
    mapped, source = _mapped_classes(mappings, set(folder_to_label.values()))
    images = root / "images" if (root / "images").is_dir() else root
    targets = {f: mapped[label] for f, label in folder_to_label.items() if label in mapped}
    skip = {f for f in folder_to_label if f not in targets} | ({"mappings"} if images == root else set())
    samples, counts = class_folder_samples(
        "objectnet", images, targets, LAYOUT, f"ObjectNet folders listed in {FOLDERS_JSON}", skip
    )
    allowed = tuple(sorted({i for indices in mapped.values() for i in indices}))
    present = {f.name for f in subfolders(images)}
    info = {
        "root": str(root),
        "protocol": (
            f"top-k over the {len(allowed)} ImageNet-1k classes the {len(mapped)} mapped ObjectNet classes map to; "
            "correct when the prediction is any ImageNet class of the sample's ObjectNet class"
        ),
        "num_samples": len(samples),
        "num_mapped_classes": len(mapped),
        "num_class_folders": len(counts),
        "num_skipped_folders": len((present & set(folder_to_label)) - set(targets)),
        "label_source": source,
        "border": BORDER_NOTE,
        "crop_border": 2,
    }
    return [EvalSet("objectnet", samples, allowed, 1000, info)]
