"""What every evaluation-set reader shares: the Sample / EvalSet records and the checks of a layout."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from cft.data.walk import Skipped, image_files, subfolders
from cft.errors import CftError


@dataclass(frozen=True)
class Sample:
    """One evaluation item: an image file and the class indices that count as a correct answer."""

    path: Path  # the image file (imagenet-seg: the .mat file, with `index` the item inside it)
    targets: tuple[int, ...]  # acceptable classes in the model's label space; () = no label (imagenet-seg)
    group: int | None = None  # waterbirds: 2 * y + place; else None
    index: int | None = None  # imagenet-seg: the item's index in the .mat; else None


@dataclass(frozen=True)
class EvalSet:
    """A evaluation set under one protocol: its samples and the logits the protocol looks at."""

    name: str  # e.g. "imagenet-a" (200-class protocol) or "imagenet-a:1000"
    samples: list[Sample]
    allowed: tuple[int, ...] | None  # restrict the logits to these classes before top-k; None = all
    num_classes: int  # size of the label space `targets` refer to (1000, or 2 for waterbirds)
    info: dict = field(default_factory=dict)  # protocol, root, counts (JSON-serialisable)


def require_dir(name: str, root: Path, layout: str) -> Path:
    """`root` as an existing folder, or a CftError naming the evaluation set, the path and the layout it expects."""
    if not root.exists():
        raise CftError(f"{name}: {root} does not exist; expected {layout}")
    if not root.is_dir():
        raise CftError(f"{name}: {root} is not a folder; expected {layout}")
    return root


def unwrap(root: Path, names: tuple[str, ...]) -> Path:
    """`root/<name>` for the first of `names` that is a folder there (the archive's own top folder), else root."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def sort_samples(samples: list[Sample], root: Path) -> list[Sample]:
    """Samples in a deterministic order: by path relative to `root`, then by index."""
    return sorted(samples, key=lambda s: (_relative(s.path, root), -1 if s.index is None else s.index))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def class_folder_samples(
    name: str,
    root: Path,
    label_of: dict[str, tuple[int, ...]],
    layout: str,
    what: str,
    skip: Collection[str] = (),
) -> tuple[list[Sample], dict[str, int]]:
    """Samples of a ROOT/<class folder>/<images> tree; a folder neither in `label_of` nor in `skip` is an error.

    Returns the samples (sorted by relative path) and the image count per folder read (skipped ones excluded).
    """
    folders = [f for f in subfolders(root) if f.name not in skip]
    if not folders and not skip:
        raise CftError(f"{name}: no class folders in {root}; expected {layout}")
    unknown = [f.name for f in folders if f.name not in label_of]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise CftError(f"{name}: folder(s) {shown} in {root} are not {what}; expected {layout}")
    samples, counts = [], {}
    skipped = Skipped()
    for folder in folders:
        files = image_files(folder, skipped)
        counts[folder.name] = len(files)
        samples.extend(Sample(path=p, targets=label_of[folder.name]) for p in files)
    if not samples:
        raise CftError(f"{name}: no images under {root}; expected {layout}")
    skipped.report(root)
    return sort_samples(samples, root), counts
