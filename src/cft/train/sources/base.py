"""What every data source shares: the recipe's `data:` section (its common fields), what a source gives the
trainer, and the registry by name.

A source registers a builder `(recipe, needs_mask, out) -> SourceData` under its name with the dataclass of its
section (`@register_data_source("decoy", ..., section=DecoySection)`), a subclass of DataSection that adds the
fields it reads. The YAML section stays flat: `from_dict(DataSection, {"source": "decoy", ...})` picks the dataclass
by `source`, and a key of another source is an error naming the field and its sources. Two bases add what several
sources share: SplitSection (images drawn from named splits: the world, the decoy) and ImageSection (images on disk at
a size: the disk sources); a source registered without a section gets ImageSection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from cft.config import bounded
from cft.errors import CftError
from cft.registry import SettingsRegistry

if TYPE_CHECKING:
    from cft.data.fewshot import FewShotSplit
    from cft.train.recipe import FinetuneRecipe


@dataclass
class FewShotSection:
    per_class: int = 3  # images per seen class
    class_fraction: float = 0.5  # share of the classes that are seen; the rest are held out (unseen)
    seed: int = 0
    exclude: str | None = None  # folder / waterbirds: a file of image ids (relative paths) never chosen
    val_per_class: int = 0  # folder: also hold out this many other images per seen class for validation


@dataclass
class DataSection:
    """The fields every data source has; each source's section adds its own (`data.source` picks it)."""

    source: str = "world"  # world (synthetic) | decoy (Decoy-(Fashion)MNIST) | folder | waterbirds | grouped
    few_shot: FewShotSection | None = None  # null: train on all the images
    masks: Literal["concepts", "object", "none"] = "concepts"
    flip: bool = True  # mirror each training image (and its mask) with probability 0.5

    @classmethod
    def config_variant(cls, data: dict[str, Any], where: str) -> type:
        """The section dataclass of the source `data["source"]` names (for `cft.config.from_dict`)."""
        return DATA_SOURCES.settings_of(data, where, "source", _default_source(cls)) or cls

    def check(self) -> None:
        """Checks that span fields (types were checked when the recipe was read); each error names the data.* field.
        A source's section extends it with its own."""
        f = self.few_shot
        if f is not None:
            if f.per_class < 1:
                raise CftError(f"data.few_shot.per_class must be >= 1, got {f.per_class}")
            if f.val_per_class < 0:
                raise CftError(f"data.few_shot.val_per_class must be >= 0, got {f.val_per_class}")
            if not 0.0 < f.class_fraction <= 1.0:
                raise CftError(f"data.few_shot.class_fraction must be in (0, 1], got {f.class_fraction}")


def _default_source(cls: type) -> str:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "source")


@dataclass
class SplitSection(DataSection):
    """A source that draws its images from named splits (the world's, the decoy's): how many of which split are
    trained and validated on. `split_names()` says which names the splits may take."""

    train_split: str = "train"
    n_train: int = 6000  # images of train_split (with few_shot: the pool the few images are drawn from)
    val_split: str | None = "val"  # null: no validation (select_by falls back to the last epoch)
    n_val: int = 500

    def split_names(self) -> tuple[str, ...]:
        """The names train_split and val_split may take (none: any name)."""
        return ()

    def check(self) -> None:
        super().check()
        splits = self.split_names()
        for name, split in (("train_split", self.train_split), ("val_split", self.val_split)):
            if splits and split is not None and split not in splits:
                raise CftError(f"data.{name} must be one of {', '.join(splits)}, got {split!r}")
        for name in ("n_train", "n_val"):
            if getattr(self, name) < 1:
                raise CftError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        f = self.few_shot
        for name, unread in (("exclude", f and f.exclude), ("val_per_class", f and f.val_per_class)):
            if unread:  # split sources validate on data.val_split and draw from n_train: these would be ignored
                raise CftError(
                    f"data.few_shot.{name} is read by the disk sources only (folder, waterbirds, grouped); "
                    f"data.source {self.source} validates on data.val_split: delete it"
                )


@dataclass
class ImageSection(DataSection):
    """Images at a size: where they are and how they are resized and normalised (the disk sources' base, and the
    section of a plug-in source registered without one)."""

    source: str = "folder"
    root: str | None = None  # folder: root/<class folder>/<images>; waterbirds / grouped: folder with metadata.csv
    image_size: int = 224  # training crop
    resize: int = 256  # images and masks are resized to resize x resize first
    mean: list[float] | None = None  # normalisation; null: the model's pretrained config (the paper: 0.5)
    std: list[float] | None = bounded(None, gt=0)

    def check(self) -> None:
        super().check()
        if not 0 < self.image_size <= self.resize:
            raise CftError(f"data.image_size must be in (0, data.resize={self.resize}], got {self.image_size}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise CftError(f"data.{name} must be 3 numbers (R, G, B), got {value}")


@dataclass
class SourceData:
    """What a data source gives the trainer: the label space, the model sized for it, the data and its split."""

    classes: list[str]
    model: nn.Module
    train: Any
    val: Any
    selection: FewShotSplit | None  # the few-shot split
    collate: Callable
    eval_collate: Callable
    where: dict[str, Any]  # what split.json records about the images


DataSourceBuilder = Callable[["FinetuneRecipe", bool, Path], SourceData]  # (recipe, needs_mask, out) -> SourceData
# data.source -> builder; the folder-like sources share one builder (cft.train.sources.disk tells them apart)
DATA_SOURCES: SettingsRegistry[DataSourceBuilder] = SettingsRegistry(
    "data source", DataSection, ImageSection, "section"
)


def register_data_source(
    name: str, description: str | None = None, section: type[DataSection] | None = None
) -> Callable[[DataSourceBuilder], DataSourceBuilder]:
    """Decorator: register a builder `(recipe, needs_mask, out) -> SourceData` as `data.source: name` (`build_model`
    sizes the model); description: one line for `cft ls data-sources`; section: the dataclass of its `data:` fields,
    a subclass of DataSection whose `check()` checks them (None: ImageSection, the common fields with root,
    image_size, resize, mean and std)."""
    return lambda builder: DATA_SOURCES.add(name, builder, description, section)


def section_class(name: str) -> type[DataSection]:
    """The section dataclass of the registered data source `name`."""
    return DATA_SOURCES.settings(name, "data.source")
