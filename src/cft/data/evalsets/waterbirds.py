"""Datasets with group labels, for worst-group accuracy: Waterbirds, and any dataset in the same CSV layout.

Waterbirds (Sagawa et al. 2020): ROOT/metadata.csv (columns img_id, img_filename, y, split, place[,
place_filename]) and ROOT/<img_filename>; ROOT may also be the folder holding waterbird_complete95_forest2water2/
(or waterbirds_v1.0/). y: 0 landbird, 1 waterbird; place: 0 land, 1 water; split: 0 train, 1 val, 2 test.
Group = 2 * y + place: 0 landbird/land, 1 landbird/water, 2 waterbird/land, 3 waterbird/water.

Any other group-labelled dataset (`grouped`): ROOT/metadata.csv with columns img_filename, y (class index >= 0),
split (0 train, 1 val, 2 test) and group (an integer >= 0, e.g. class x attribute), and ROOT/<img_filename>;
the classes are 0..max(y) over the whole file.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cft.data.evalsets.common import EvalSet, Sample, require_dir, sort_samples, unwrap
from cft.errors import CftError

METADATA = "metadata.csv"
SPLITS = {0: "train", 1: "val", 2: "test"}
GROUP_NAMES = {0: "landbird on land", 1: "landbird on water", 2: "waterbird on land", 3: "waterbird on water"}


@dataclass(frozen=True)
class GroupedFormat:
    name: str
    layout: str
    columns: tuple[str, ...]  # int columns besides img_filename
    allowed: dict[str, tuple[int, ...] | None]  # allowed values per int column (None: any integer >= 0)
    group: Callable[[dict[str, int]], int]
    group_names: dict[int, str] | None = None
    archive_folders: tuple[str, ...] = ()


WATERBIRDS = GroupedFormat(
    "waterbirds",
    "ROOT/metadata.csv (img_id,img_filename,y,split,place,place_filename) and ROOT/<img_filename>",
    ("y", "split", "place"),
    {"y": (0, 1), "split": (0, 1, 2), "place": (0, 1)},
    lambda row: 2 * row["y"] + row["place"],
    GROUP_NAMES,
    ("waterbird_complete95_forest2water2", "waterbirds_v1.0"),
)
GROUPED = GroupedFormat(
    "grouped",
    "ROOT/metadata.csv (img_filename,y,split,group) and ROOT/<img_filename>",
    ("y", "split", "group"),
    {"y": None, "split": (0, 1, 2), "group": None},
    lambda row: row["group"],
)


@dataclass(frozen=True)
class Row:
    filename: str
    y: int
    split: int
    group: int


def dataset_root(fmt: GroupedFormat, root: str | Path) -> Path:
    """The dataset folder: `root`, or the archive's own top folder inside it."""
    return unwrap(require_dir(fmt.name, Path(root).expanduser(), fmt.layout), fmt.archive_folders)


def _int(fmt: GroupedFormat, row: dict, column: str, path: Path, line: int) -> int:
    value = (row[column] or "").strip()
    try:
        number = float(value)  # pandas-written files may say 1.0
    except ValueError:
        number = None
    allowed = fmt.allowed[column]
    ok = number is not None and (number in allowed if allowed else number >= 0 and number == int(number))
    if not ok:
        want = f"one of {list(allowed)}" if allowed else "an integer >= 0"
        raise CftError(f"{fmt.name}: {path} line {line}: {column} = {value!r}, expected {want}")
    return int(number)


def read_rows(fmt: GroupedFormat, root: Path) -> list[Row]:
    """The rows of ROOT/metadata.csv, validated."""
    path = root / METADATA
    if not path.is_file():
        raise CftError(f"{fmt.name}: {path} does not exist; expected {fmt.layout}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("img_filename", *fmt.columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise CftError(f"{fmt.name}: {path} has no column(s) {', '.join(missing)}; expected {fmt.layout}")
        rows = []
        for line, row in enumerate(reader, start=2):
            name = (row["img_filename"] or "").strip()
            if not name:
                raise CftError(f"{fmt.name}: {path} line {line}: empty img_filename")
            ints = {c: _int(fmt, row, c, path, line) for c in fmt.columns}
            rows.append(Row(name, ints["y"], ints["split"], fmt.group(ints)))
    if not rows:
        raise CftError(f"{fmt.name}: {path} has no rows")
    return rows


def read_metadata(root: Path, fmt: GroupedFormat = WATERBIRDS) -> list[Row]:
    """The validated rows of a dataset root (the archive's own top folder is stepped into)."""
    return read_rows(fmt, dataset_root(fmt, root))


def _all_groups(fmt: GroupedFormat, rows: list[Row]) -> list[int]:
    return sorted(fmt.group_names) if fmt.group_names else sorted({r.group for r in rows})


def group_sizes(root: str | Path, split: int = 0, fmt: GroupedFormat = WATERBIRDS) -> dict[int, int]:
    """Image count per group in `split` (default 0, the training split: the weights of the weighted mean)."""
    if split not in SPLITS:
        raise CftError(f"{fmt.name}: split must be one of {sorted(SPLITS)}, got {split!r}")
    rows = read_metadata(Path(root), fmt)
    counts = Counter(r.group for r in rows if r.split == split)
    return {g: counts.get(g, 0) for g in _all_groups(fmt, rows)}


def load_grouped(root: Path, split: int = 2, name: str | None = None, fmt: GroupedFormat = WATERBIRDS):
    """The rows of `split` (default 2, test) as samples with targets (y,) and their group."""
    root = dataset_root(fmt, root)
    rows = read_rows(fmt, root)
    samples = [Sample(root / r.filename, (r.y,), group=r.group) for r in rows if r.split == split]
    if not samples:
        raise CftError(f"{fmt.name}: {root / METADATA} has no row with split = {split} ({SPLITS[split]})")
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise CftError(f"{fmt.name}: {len(missing)} image(s) listed in {root / METADATA} are missing: {shown}")
    groups = _all_groups(fmt, rows)
    train = Counter(r.group for r in rows if r.split == 0)
    here = Counter(s.group for s in samples)
    info = {
        "root": str(root),
        "split": SPLITS[split],
        "protocol": "accuracy per group; report the worst group and the mean, plain and weighted by the training "
        "group sizes",
        "num_samples": len(samples),
        "groups": {str(g): (fmt.group_names or {}).get(g, str(g)) for g in groups},
        "group_counts": {str(g): here.get(g, 0) for g in groups},
        "train_group_sizes": {str(g): train.get(g, 0) for g in groups},
    }
    num_classes = 2 if fmt is WATERBIRDS else max(r.y for r in rows) + 1
    return [EvalSet(name or fmt.name, sort_samples(samples, root), None, num_classes, info)]


def load_waterbirds(root: Path, split: int = 2, name: str = "waterbirds") -> list[EvalSet]:
    return load_grouped(root, split, name, WATERBIRDS)
