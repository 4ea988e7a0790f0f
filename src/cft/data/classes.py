"""Class lists: ImageNet-1k names and wnids, the world's classes, and a class spec string to class names."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cft.data.walk import subfolders
from cft.errors import CftError

# ImageNet readable names that collide (two synsets, the same first synonym): disambiguated by index.
_IMAGENET_OVERRIDES = {134: "crane (bird)", 517: "crane (machine)", 638: "maillot", 639: "tank suit"}


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in index order (timm's ImageNetInfo; sorted wnids, the torchvision order)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """wnid -> ImageNet-1k index."""
    return {w: i for i, w in enumerate(imagenet_wnids())}


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order: the first synonym of each synset timm ships."""
    from timm.data import ImageNetInfo

    descriptions = ImageNetInfo().label_descriptions()
    return [_IMAGENET_OVERRIDES.get(i, d.split(", ")[0].strip()) for i, d in enumerate(descriptions)]


def world_class_names() -> list[str]:
    """The synthetic world's classes (the default world)."""
    from cft.world.world import class_names

    return list(class_names())


def resolve_classes(spec: str) -> list[str]:
    """Class names from a spec:

    - "imagenet": the 1000 ImageNet-1k names; "world": the synthetic world's classes;
    - a text file: one class per line, blank lines and `#` comments ignored;
    - a folder: the names of its sub-folders (an ImageFolder layout), sorted;
    - anything else: a comma-separated list ("goldfish, tabby cat").

    Raises CftError when the spec gives no class or a class twice.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CftError("empty class spec: give 'imagenet', 'world', a file, a folder or a comma-separated list")
    spec = spec.strip()
    path = Path(spec).expanduser()
    if spec == "imagenet":
        names, what = imagenet_class_names(), "'imagenet'"
    elif spec == "world":
        names, what = world_class_names(), "'world'"
    elif path.is_dir():
        names = [p.name for p in subfolders(path)]
        what = f"folder {path}"
    elif path.is_file():
        names = []
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
        what = f"file {path}"
    elif "," not in spec and ("/" in spec or path.suffix.lower() in (".txt", ".csv", ".lst")):
        raise CftError(f"class spec {spec!r}: no such file or folder")
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        what = f"class list {spec!r}"
    if not names:
        raise CftError(f"{what} gives no class names")
    seen: set[str] = set()
    dups = [n for n in names if n in seen or seen.add(n)]
    if dups:
        raise CftError(f"{what}: duplicate class name(s): {', '.join(dict.fromkeys(dups))}")
    return names
