"""ImageFolder trees as ImageItems: class folders to class names (ImageNet wnids included), image lists, the
items of a tree (walked by cft.data.walk)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cft.data.classes import imagenet_class_names, imagenet_wnids
from cft.data.walk import IMAGE_SUFFIXES, Skipped, image_files, subfolders
from cft.errors import CftError


@dataclass(frozen=True)
class ImageItem:
    image_id: str  # the path relative to the image root, with forward slashes
    path: Path
    label: str  # the class name, as in the concept bank


def _imagenet_wnids() -> dict[str, str]:
    return dict(zip(imagenet_wnids(), imagenet_class_names(), strict=True))


def folder_classes(folders: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    """Class folder name -> class name: the folder name itself when it is a known class, else an ImageNet wnid
    (n01440764 -> its name in `--classes imagenet`)."""
    known_set = set(known)
    wnids: dict[str, str] | None = None
    out = {}
    for folder in folders:
        if folder in known_set:
            out[folder] = folder
            continue
        if wnids is None:
            wnids = _imagenet_wnids()
        if folder in wnids:
            out[folder] = wnids[folder]
        else:
            raise CftError(
                f"class folder {folder!r} is neither a class of the concept bank nor an ImageNet wnid "
                f"(bank classes: {', '.join(list(known)[:5])}{', ...' if len(known) > 5 else ''})"
            )
    return out


def list_images(root: str | Path, known_classes: Sequence[str], only: Sequence[str] | None = None) -> list[ImageItem]:
    """The images of an ImageFolder tree (root/<class folder>/.../<image>), sorted by id; `only` restricts to
    the given image ids (paths relative to `root`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CftError(f"image folder {root} does not exist (expected root/<class folder>/<images>)")
    folders = [p.name for p in subfolders(root)]
    if not folders:
        raise CftError(f"image folder {root} has no class folders (expected root/<class folder>/<images>)")
    if only is not None:
        wanted = {str(Path(i).as_posix()) for i in only}
        folders = sorted({i.split("/", 1)[0] for i in wanted} & set(folders)) or folders
    names = folder_classes(folders, known_classes)
    skipped = Skipped()
    items = [
        ImageItem(path.relative_to(root).as_posix(), path, names[folder])
        for folder in folders
        for path in image_files(root / folder, skipped)
    ]
    skipped.report(root)
    if only is not None:
        have = {it.image_id for it in items}
        missing = sorted(wanted - have)
        if missing:
            raise CftError(f"image list names {len(missing)} image(s) not under {root}, e.g. {missing[0]!r}")
        items = [it for it in items if it.image_id in wanted]
    if not items:
        raise CftError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return items


def read_image_list(path: str | Path) -> list[str]:
    """Image ids (relative paths), one per line; blank lines and # comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise CftError(f"image list {path}: cannot read ({e})") from None
    ids = [line.split("#", 1)[0].strip() for line in lines]
    ids = [i for i in ids if i]
    if not ids:
        raise CftError(f"image list {path} names no images")
    return ids
