"""Waterbirds (Sagawa et al. 2020) for worst-group accuracy.

Layout: ROOT/metadata.csv (columns img_id, img_filename, y, split, place[, place_filename]) and
ROOT/<img_filename>; ROOT may also be the folder holding waterbird_complete95_forest2water2/ (or waterbirds_v1.0/).
y: 0 landbird, 1 waterbird; place: 0 land, 1 water; split: 0 train, 1 val, 2 test.
Group = 2 * y + place: 0 landbird/land, 1 landbird/water, 2 waterbird/land, 3 waterbird/water.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from cft.data.bench_common import Benchmark, Sample, require_dir, sort_samples, unwrap
from cft.errors import CftError

METADATA = "metadata.csv"
LAYOUT = "ROOT/metadata.csv (img_id,img_filename,y,split,place,place_filename) and ROOT/<img_filename>"
COLUMNS = ("img_id", "img_filename", "y", "split", "place")
SPLITS = {0: "train", 1: "val", 2: "test"}
GROUP_NAMES = {0: "landbird on land", 1: "landbird on water", 2: "waterbird on land", 3: "waterbird on water"}
_ARCHIVE_FOLDERS = ("waterbird_complete95_forest2water2", "waterbirds_v1.0")


def _root(root: str | Path) -> Path:
    return unwrap(require_dir("waterbirds", Path(root).expanduser(), LAYOUT), _ARCHIVE_FOLDERS)


def _int(row: dict, column: str, allowed: tuple[int, ...], path: Path, line: int) -> int:
    value = (row[column] or "").strip()
    try:
        number = float(value)  # pandas-written files may say 1.0
    except ValueError:
        number = None
    if number not in allowed:
        raise CftError(f"waterbirds: {path} line {line}: {column} = {value!r}, expected one of {list(allowed)}")
    return int(number)


def read_metadata(root: Path) -> list[tuple[str, int, int, int]]:
    """(img_filename, y, split, place) per row of ROOT/metadata.csv, validated."""
    path = root / METADATA
    if not path.is_file():
        raise CftError(f"waterbirds: {path} does not exist; expected {LAYOUT}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CftError(f"waterbirds: {path} has no column(s) {', '.join(missing)}; expected {LAYOUT}")
        rows = []
        for line, row in enumerate(reader, start=2):
            name = (row["img_filename"] or "").strip()
            if not name:
                raise CftError(f"waterbirds: {path} line {line}: empty img_filename")
            y = _int(row, "y", (0, 1), path, line)
            split = _int(row, "split", (0, 1, 2), path, line)
            rows.append((name, y, split, _int(row, "place", (0, 1), path, line)))
    if not rows:
        raise CftError(f"waterbirds: {path} has no rows")
    return rows


def group_sizes(root: str | Path, split: int = 0) -> dict[int, int]:
    """Image count per group (0..3) in `split` (default 0, the training split: the weights of the weighted mean)."""
    if split not in SPLITS:
        raise CftError(f"waterbirds: split must be one of {sorted(SPLITS)}, got {split!r}")
    counts = Counter(2 * y + place for _, y, s, place in read_metadata(_root(root)) if s == split)
    return {g: counts.get(g, 0) for g in GROUP_NAMES}


def load_waterbirds(root: Path, split: int = 2, name: str = "waterbirds") -> list[Benchmark]:
    """The rows of `split` (default 2, test) as samples with targets (y,) and group 2 * y + place."""
    root = _root(root)
    rows = read_metadata(root)
    samples = [Sample(root / f, (y,), group=2 * y + place) for f, y, s, place in rows if s == split]
    if not samples:
        raise CftError(f"waterbirds: {root / METADATA} has no row with split = {split} ({SPLITS[split]})")
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise CftError(f"waterbirds: {len(missing)} image(s) listed in {root / METADATA} are missing: {shown}")
    train = Counter(2 * y + place for _, y, s, place in rows if s == 0)
    here = Counter(s.group for s in samples)
    info = {
        "root": str(root),
        "split": SPLITS[split],
        "protocol": "accuracy per group (2*y + place); report the worst group and the mean, plain and weighted "
        "by the training group sizes",
        "num_samples": len(samples),
        "groups": {str(g): n for g, n in GROUP_NAMES.items()},
        "group_counts": {str(g): here.get(g, 0) for g in GROUP_NAMES},
        "train_group_sizes": {str(g): train.get(g, 0) for g in GROUP_NAMES},
    }
    return [Benchmark(name, sort_samples(samples, root), None, 2, info)]
