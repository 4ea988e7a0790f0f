"""The one image-folder walker: image files under a folder, class sub-folders, the images directly in a folder.

Hidden files and folders (a leading ".") are skipped everywhere; every listing is sorted, so the same tree
always gives the same order; what a walk leaves out is counted (`Skipped`), never dropped in silence.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# the raster formats Pillow reads (those of its plugins that this install has): every one is walked
_RASTER = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff", ".ppm",
    ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".ico", ".avif", ".qoi", ".jp2", ".j2k", ".jpx", ".pcx", ".sgi",
    ".ras", ".psd", ".dds", ".xbm", ".xpm",
}  # fmt: skip


def _readable_suffixes() -> frozenset[str]:
    from PIL import Image

    Image.init()
    return frozenset(e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and e in _RASTER)


IMAGE_SUFFIXES = _readable_suffixes()


@dataclass
class Skipped:
    """What a walk left out, by reason, with one example each: reported, never silent."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, Path] = field(default_factory=dict)

    def add(self, reason: str, path: Path) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, path)

    def note(self, root: Path) -> str | None:
        """One line for the user, or None when nothing was skipped."""
        if not self.counts:
            return None
        parts = [f"{n} {reason} (e.g. {self.examples[reason]})" for reason, n in sorted(self.counts.items())]
        return f"cft: note: {root}: skipped {sum(self.counts.values())} file(s): " + "; ".join(parts)

    def report(self, root: Path) -> None:
        line = self.note(root)
        if line:
            print(line, file=sys.stderr)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def subfolders(root: Path) -> list[Path]:
    """The non-hidden sub-folders of `root` (symlinked folders included), sorted by name."""
    return sorted((p for p in root.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)


def image_files(folder: Path, skipped: Skipped | None = None) -> list[Path]:
    """Image files under `folder`, sorted by relative path: recursive, symlinked folders followed (each real
    folder walked once, so a link loop ends), hidden entries skipped. What is left out is counted in `skipped`
    by reason: hidden, not an image format, a broken link, a folder seen before (a link loop)."""
    skipped = skipped if skipped is not None else Skipped()
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            info = current.stat()
            entries = list(os.scandir(current))
        except OSError:
            skipped.add("unreadable folder(s)", current)
            continue
        if (info.st_dev, info.st_ino) in seen:
            skipped.add("folder(s) already walked through another link", current)
            continue
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            path = Path(entry.path)
            if not _visible(path):
                skipped.add("hidden", path)
            elif entry.is_dir():  # follows links
                stack.append(path)
            elif not entry.is_file():
                skipped.add("broken link(s) or special file(s)", path)
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.add(f"not an image format ({path.suffix.lower() or 'no suffix'})", path)
            else:
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def flat_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES)
