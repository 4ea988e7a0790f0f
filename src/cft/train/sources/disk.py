"""`data.source: folder | waterbirds | grouped`: training data from disk for `cft finetune`, an ImageFolder tree
(ImageNet's train set, or a user's own) or Waterbirds (or any dataset in its layout), with the few-shot protocol and
guidance masks from the mask store (`cft masks`).

ImageFolder labels: with `classes: imagenet`, class folders are wnids (or ImageNet class names) and labels are
ImageNet-1k indices (a 1000-way model); with `classes: folders`, the sorted folder names are the classes.
Few-shot: `per_class` images from round(class_fraction x C) of the classes present (sorted, then a seeded
permutation), never an image listed in `few_shot.exclude` (a file of image ids, one per line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cft.data.folders import ImageItem, list_images, read_image_list
from cft.errors import CftError
from cft.train.model import build_model
from cft.train.sources.base import ImageSection, SourceData, register_data_source

if TYPE_CHECKING:
    from torch import nn

    from cft.data.fewshot import FewShotSplit
    from cft.grounding.store import MaskStore
    from cft.train.masked_data import PairedTransform, StoreImageDataset
    from cft.train.recipe import FinetuneRecipe


@dataclass
class DiskSection(ImageSection):
    """The fields of the disk sources (ImageSection's root, image_size, resize, mean and std, and these)."""

    source: str = "folder"
    val_root: str | None = None  # folder: validation images in the same layout (null: no validation)
    classes: str = "folders"  # folder: imagenet (wnid folders, 1000-way labels) | folders (sorted folder names)
    store: str | None = None  # the mask store (`cft masks`) holding the guidance masks of these images
    val_store: str | None = None  # folder with val_root: the store of the val_root images (null: data.store)

    def check(self) -> None:
        super().check()
        if not self.root:
            raise CftError(f"data.root is required for data.source={self.source}")
        if self.classes not in ("imagenet", "folders"):
            raise CftError(f"data.classes must be 'imagenet' or 'folders', got {self.classes!r}")
        if self.source != "folder":  # the metadata.csv layouts: their classes and val split come from the file
            if self.val_root:
                raise CftError(
                    f"data.val_root is read by data.source folder only; {self.source} validates on split 1 of its "
                    "metadata.csv: delete it"
                )
            if self.classes != "folders":
                raise CftError(
                    f"data.classes is read by data.source folder only; {self.source} takes its classes from the y "
                    "column of metadata.csv: delete it"
                )


@dataclass
class DiskData:
    train: StoreImageDataset
    val: StoreImageDataset | None
    class_names: list[str]
    selection: FewShotSplit | None
    items: list[ImageItem]  # the training images
    val_items: list[ImageItem]


WATERBIRDS_CLASSES = ["landbird", "waterbird"]


def label_space(d: DiskSection) -> list[str]:
    """The class names of a `folder`, `waterbirds` or `grouped` data section, in label order (grouped: "0".."K-1")."""
    if not d.root:
        raise CftError(f"data.root is required for data.source={d.source}")
    root = Path(d.root).expanduser()
    if d.source == "waterbirds":
        return list(WATERBIRDS_CLASSES)
    if d.source == "grouped":
        from cft.data.evalsets.waterbirds import GROUPED, read_metadata

        return [str(c) for c in range(max(r.y for r in read_metadata(root, GROUPED)) + 1)]
    if d.classes == "imagenet":
        from cft.data.classes import imagenet_class_names

        return imagenet_class_names()
    if d.classes != "folders":
        raise CftError(f"data.classes must be 'imagenet' or 'folders', got {d.classes!r}")
    if not root.is_dir():
        raise CftError(f"data.root {root} does not exist (expected root/<class folder>/<images>)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise CftError(f"data.root {root} has no class folders (expected root/<class folder>/<images>)")
    return names


def _grouped_items(d: DiskSection, split: int) -> list[ImageItem]:
    """The images of one split of a waterbirds / grouped dataset (image ids: paths relative to the data root)."""
    from cft.data.evalsets.waterbirds import GROUPED, WATERBIRDS, dataset_root, read_rows

    fmt = WATERBIRDS if d.source == "waterbirds" else GROUPED
    root = dataset_root(fmt, d.root)
    names = label_space(d)
    return [ImageItem(r.filename, root / r.filename, names[r.y]) for r in read_rows(fmt, root) if r.split == split]


def _transforms(d: DiskSection, model: nn.Module) -> tuple[PairedTransform, PairedTransform]:
    from cft.data.images import preprocessor
    from cft.train.masked_data import PairedTransform

    config = preprocessor(model).config
    mean = tuple(d.mean) if d.mean is not None else tuple(config["mean"])
    std = tuple(d.std) if d.std is not None else tuple(config["std"])
    common = dict(size=d.image_size, resize=d.resize, mean=mean, std=std)
    return PairedTransform(train=True, flip=d.flip, **common), PairedTransform(train=False, **common)


def _select(
    items: list[ImageItem], index: dict[str, int], d: DiskSection
) -> tuple[list[ImageItem], list[ImageItem], FewShotSplit | None]:
    """(few-shot training images, held-out validation images of the same classes, the split)."""
    from cft.data.fewshot import select_few_shot

    if d.few_shot is None:
        return items, [], None
    banned: set[str] = set()
    if d.few_shot.exclude:
        banned = set(read_image_list(d.few_shot.exclude))
    exclude = [i for i, it in enumerate(items) if it.image_id in banned]
    labels = [index[it.label] for it in items]
    f = d.few_shot
    try:
        selection = select_few_shot(labels, f.per_class, f.class_fraction, f.seed, exclude=exclude)
        held_out: list[int] = []
        if f.val_per_class:  # the same seen classes (the class draw comes first), other images
            others = [*exclude, *selection.indices]
            held_out = list(select_few_shot(labels, f.val_per_class, f.class_fraction, f.seed, exclude=others).indices)
    except CftError as err:
        raise CftError(f"data.few_shot: {err}") from None
    return [items[i] for i in selection.indices], [items[i] for i in held_out], selection


@dataclass
class ImageChoice:
    class_names: list[str]
    train: list[ImageItem]  # the few-shot images (or all of them without few_shot)
    val: list[ImageItem]
    selection: FewShotSplit | None


def choose_images(d: DiskSection) -> ImageChoice:
    """Which images a `folder`, `waterbirds` or `grouped` data section trains and validates on (no model needed:
    `cft run` makes their masks before fine-tuning)."""
    names = label_space(d)
    root = Path(d.root).expanduser()
    if d.source in ("waterbirds", "grouped"):
        items, val_items = _grouped_items(d, 0), _grouped_items(d, 1)
    else:
        items = list_images(root, names)
        val_items = list_images(Path(d.val_root).expanduser(), names) if d.val_root else []
    chosen, held_out, selection = _select(items, {n: i for i, n in enumerate(names)}, d)
    if held_out and val_items:
        raise CftError(
            "data.few_shot.val_per_class holds out validation images, but the data already has a validation set "
            "(data.val_root, or the dataset's own val split): use one of the two"
        )
    return ImageChoice(names, chosen, val_items or held_out, selection)


def disk_data(d: DiskSection, model: nn.Module, needs_mask: bool) -> DiskData:
    """The train (and val) sets of a `folder`, `waterbirds` or `grouped` data section. Validation images of a
    separate `val_root` take their masks from `val_store` (their ids are relative to `val_root`)."""
    from cft.train.masked_data import StoreImageDataset

    choice = choose_images(d)
    index = {n: i for i, n in enumerate(choice.class_names)}
    separate = d.source == "folder" and d.val_root is not None
    store = val_store = None
    if needs_mask:
        store = _store(d.store, choice.train if separate else [*choice.train, *choice.val], d.masks)
        val_store = (_store(d.val_store or d.store, choice.val, d.masks) if separate else store) if choice.val else None
    train_tf, eval_tf = _transforms(d, model)
    train = StoreImageDataset(choice.train, index, store, train_tf)
    val = StoreImageDataset(choice.val, index, val_store, eval_tf) if choice.val else None
    return DiskData(train, val, choice.class_names, choice.selection, choice.train, choice.val)


def _store(folder: str | None, items: list[ImageItem], masks: str) -> MaskStore:
    """The mask store, checked to hold an entry for every image trained or validated on, and the kind of masks
    `data.masks` asks for (a store holds one kind: concept masks, or object masks made with --object-masks)."""
    from cft.grounding.store import MaskStore

    if not folder:
        raise CftError("the objective is guided by masks: set data.store to a mask store made by `cft masks`")
    store = MaskStore(folder)
    holds_objects = store.description().get("object_masks")  # a clear error when it is not a store
    if holds_objects is not None and bool(holds_objects) != (masks == "object"):
        made = "with --object-masks: object" if holds_objects else "without --object-masks: concept"
        raise CftError(
            f"data.masks is {masks!r} but mask store {folder} was made {made} masks; give data.store a store made "
            f"{'without' if holds_objects else 'with'} `cft masks --object-masks`, or set data.masks="
            f"{'object' if holds_objects else 'concepts'}"
        )
    status = {it.image_id: store.status(it.image_id, "") for it in items}
    corrupt = [i for i, state in status.items() if state == "corrupt"]
    if corrupt:  # named with its file; `cft masks` redoes corrupt entries
        try:
            store.read(corrupt[0], verify=True)
        except CftError as err:
            raise CftError(f"{err} ({len(corrupt)} corrupt entr{'y' if len(corrupt) == 1 else 'ies'})") from None
    missing = [i for i, state in status.items() if state == "missing"]
    if missing:
        raise CftError(
            f"mask store {folder} has no masks for {len(missing)} image(s) used in training or validation, e.g. "
            f"{missing[0]}; run `cft masks` on them (`--list` takes the image ids, one per line)"
        )
    store.check_identity(list(status))
    return store


def disk_source(recipe: FinetuneRecipe, needs_mask: bool, out: Path) -> SourceData:
    from torch.utils.data import default_collate

    d: DiskSection = recipe.data  # type: ignore[assignment]  # the section of the disk sources
    classes = label_space(d)
    model = build_model(recipe, len(classes), d.image_size)
    data = disk_data(d, model, needs_mask)
    where = {
        "root": d.root,
        "images": [it.image_id for it in data.items],
        "val_images": [it.image_id for it in data.val_items],
    }
    return SourceData(classes, model, data.train, data.val, data.selection, default_collate, default_collate, where)


for _name, _description in (
    ("folder", "image folders: data.root/<class folder>/<images>, masks from a mask store"),
    ("waterbirds", "Waterbirds: data.root/metadata.csv and its images"),
    ("grouped", "a group-labelled dataset: data.root/metadata.csv (img_filename, y, split, group)"),
):
    register_data_source(_name, _description, section=DiskSection)(disk_source)


def disk_sources() -> tuple[str, ...]:
    """The data sources read from image folders on disk by this module (the ones `cft run` masks)."""
    from cft.train.sources.base import DATA_SOURCES

    return tuple(name for name, builder in DATA_SOURCES.items() if builder is disk_source)
