"""The synthetic world: configuration, deterministic biased splits and their on-disk cache."""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from cft.errors import CftError, FieldError
from cft.io import atomic_path
from cft.world._backgrounds import TEXTURES, BackgroundBank
from cft.world.marks import MARK_COLOURS, MARK_FRAME, mark_colour, place_mark
from cft.world.objects import CATEGORIES, draw_labels, paint, sample_palette

__all__ = ["BIASED_SPLITS", "CUES", "MARK_PLACES", "SPLITS", "SyntheticWorld", "WorldConfig", "WorldSplit", "collate"]

SPLITS = ("train", "val", "test-id", "test-ood", "test-flipped")
BIASED_SPLITS = ("train", "val", "test-id")
CUES = ("background", "mark", "colour")
MARK_PLACES = ("object", "background")
MARK_PARTS = ((-2, "mark"), (-2, "mark frame"))  # the mark's entries in a part table (no class's parts)
_CACHE_KEYS = (
    "images",
    "labels",
    "backgrounds",
    "label_maps",
    "part_class",
    "part_name",
    "classes",
    "background_names",
    "split",
)


def _default_sizes() -> dict[str, int]:
    return {"train": 10_000, "val": 1_000, "test-id": 2_000, "test-ood": 2_000, "test-flipped": 2_000}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world; the same config (and seed) always gives the same samples.

    The spurious cue (`cue`) takes one of `num_cue_values` values; values below num_classes belong to a class,
    the others are neutral. `cue="background"`: the value is the background texture. `cue="mark"`: the value is
    the colour of a `mark_size`-pixel square mark drawn on the object (`mark_place="object"`: inside its
    silhouette, so an object mask cannot exclude it, but off the named parts) or beside it
    (`mark_place="background"`), its corner on a multiple of `mark_grid` pixels (the patch size: the mark fills
    patches of its own), and the background texture is drawn at random, independent of the class.
    `cue="colour"`: the value is the colour of the object's carrier part (its body, wall, hull: the largest,
    least telling part), backgrounds again at random; a hidden object (context_only) leaves its carrier alone.
    Splits: class c carries its own cue value c with probability `bias` in train, val and test-id (else a
    uniformly random other value), a uniformly random value in test-ood and never its own in test-flipped.
    Pretraining knobs (leave them at 0 for evaluation): `context_only` is the share of samples of the biased
    splits drawn without their object (the cue alone carries the label, as in photos where the object is
    hidden); `neutral_cue` the share whose cue takes a neutral value (the object alone carries the label); the
    two never fall on the same sample, so context_only + neutral_cue must not exceed 1.
    Difficulty knobs: object
    size (`scale_range`: longest side of the object's bounding box as a fraction of the image), pose
    (`max_rotation` degrees, `flip`), `shape_jitter` (0: canonical shapes), part colours (`part_hue_jitter`
    degrees, `part_value_jitter`), painting (`pixel_noise`, `shading`, `outline` darkening) and backgrounds
    (`bg_contrast` scales texture contrast; per sample the texture is shifted to a mean colour drawn from its
    background's range, widened by the hue (degrees), saturation and brightness jitters, and its contrast is
    jittered; `bg_tiles` precomputed tiles per background and split).
    """

    RENAMED: ClassVar[dict[str, str]] = {"num_backgrounds": "num_cue_values"}

    image_size: int = 64
    num_classes: int = 10
    num_cue_values: int = 12  # background textures (cue background) or colours (mark, colour); textures drawn too
    bias: float = 0.95
    context_only: float = 0.0
    neutral_cue: float = 0.0
    cue: str = "background"
    mark_place: str = "object"
    mark_size: int = 8
    mark_grid: int = 1
    seed: int = 0
    scale_range: tuple[float, float] = (0.55, 0.9)
    max_rotation: float = 25.0
    flip: bool = True
    shape_jitter: float = 1.0
    part_hue_jitter: float = 10.0
    part_value_jitter: float = 0.1
    pixel_noise: float = 0.03
    shading: float = 0.25
    outline: float = 0.35
    bg_contrast: float = 1.0
    bg_contrast_jitter: float = 0.3
    bg_hue_jitter: float = 10.0
    bg_saturation_jitter: float = 0.2
    bg_brightness_jitter: float = 0.15
    bg_tiles: int = 8
    split_sizes: Mapping[str, int] = field(default_factory=_default_sizes)

    def __post_init__(self) -> None:
        _check_config(self)

    def to_json(self) -> str:
        """The config as a JSON string (stored in cached splits)."""
        return json.dumps(dataclasses.asdict(self) | {"split_sizes": dict(self.split_sizes)})


def build_world(fields: Mapping[str, Any], where: str = "world") -> SyntheticWorld:
    """The one place a world is built from WorldConfig fields (plain YAML data); a bad field is a CftError naming
    `where.<field>` (a recipe's data.world, the demo's world, each pretraining stage, concept validation)."""
    return SyntheticWorld(world_config(fields, where))


def class_names(config: WorldConfig | None = None) -> tuple[str, ...]:
    """The classes of a world with `config` (default: the default world), without building the world."""
    return tuple(CATEGORIES)[: (config or WorldConfig()).num_classes]


def world_config(fields: Mapping[str, Any], where: str = "world") -> WorldConfig:
    """A WorldConfig from plain (YAML) data through the one config loader: unknown keys, types and non-finite
    numbers are errors that name the field as `where.<field>`."""
    from cft.config import from_dict

    return from_dict(WorldConfig, dict(fields), where)


def _fail(name: str, message: str, value: Any) -> None:
    raise FieldError(name, f"{message}, got {value!r}")  # from_dict names it where the config sits


def _check_config(c: WorldConfig) -> None:
    """Raise a CftError that names the first bad field."""
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if f.type in ("float", "int") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(f.name, "must be a number", value)
    if not isinstance(c.image_size, int) or c.image_size < 32:
        _fail("image_size", "must be an integer >= 32", c.image_size)
    if not isinstance(c.num_classes, int) or not 2 <= c.num_classes <= len(CATEGORIES):
        _fail(
            "num_classes",
            f"must be an integer in [2, {len(CATEGORIES)}] (the object categories available)",
            c.num_classes,
        )
    if not isinstance(c.num_cue_values, int) or not 2 <= c.num_cue_values <= len(TEXTURES):
        _fail(
            "num_cue_values", f"must be an integer in [2, {len(TEXTURES)}] (the textures available)", c.num_cue_values
        )
    if c.num_classes > c.num_cue_values:
        _fail(
            "num_classes",
            f"must not exceed num_cue_values={c.num_cue_values} (each class needs its own)",
            c.num_classes,
        )
    if not 0.0 <= c.bias <= 1.0:
        _fail("bias", "must be a probability in [0, 1]", c.bias)
    if not 0.0 <= c.context_only < 1.0:
        _fail("context_only", "must be a probability in [0, 1)", c.context_only)
    if not 0.0 <= c.neutral_cue <= 1.0:
        _fail("neutral_cue", "must be a probability in [0, 1]", c.neutral_cue)
    if c.context_only + c.neutral_cue > 1.0:
        _fail("neutral_cue", f"plus context_only={c.context_only} must not exceed 1", c.neutral_cue)
    if c.neutral_cue > 0 and c.num_cue_values <= c.num_classes:
        _fail("neutral_cue", "needs neutral cue values: num_cue_values must exceed num_classes", c.neutral_cue)
    if c.cue not in CUES:
        _fail("cue", f"must be one of {', '.join(CUES)}", c.cue)
    if c.mark_place not in MARK_PLACES:
        _fail("mark_place", f"must be one of {', '.join(MARK_PLACES)}", c.mark_place)
    if c.cue != "background" and c.num_cue_values > len(MARK_COLOURS):
        _fail(
            "num_cue_values",
            f"must be at most {len(MARK_COLOURS)} (the cue colours) with cue={c.cue!r}",
            c.num_cue_values,
        )
    if not isinstance(c.mark_size, int) or not 2 <= c.mark_size <= c.image_size // 2:
        _fail("mark_size", "must be an integer in [2, image_size / 2]", c.mark_size)
    if not isinstance(c.mark_grid, int) or not 1 <= c.mark_grid <= c.image_size - c.mark_size + 1:
        _fail("mark_grid", "must be an integer in [1, image_size - mark_size + 1]", c.mark_grid)
    if not isinstance(c.seed, int) or c.seed < 0:
        _fail("seed", "must be a non-negative integer", c.seed)
    if len(c.scale_range) != 2 or not 0.0 < c.scale_range[0] <= c.scale_range[1] <= 1.0:
        _fail("scale_range", "must be (low, high) with 0 < low <= high <= 1", c.scale_range)
    if not 0.0 <= c.max_rotation <= 180.0:
        _fail("max_rotation", "must be in [0, 180] degrees", c.max_rotation)
    for name in (
        "shape_jitter",
        "part_hue_jitter",
        "part_value_jitter",
        "pixel_noise",
        "shading",
        "bg_contrast",
        "bg_hue_jitter",
    ):
        if getattr(c, name) < 0:
            _fail(name, "must be >= 0", getattr(c, name))
    for name in ("outline", "bg_contrast_jitter", "bg_saturation_jitter", "bg_brightness_jitter"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            _fail(name, "must be in [0, 1]", getattr(c, name))
    if not isinstance(c.bg_tiles, int) or c.bg_tiles < 1:
        _fail("bg_tiles", "must be an integer >= 1", c.bg_tiles)
    for split, n in dict(c.split_sizes).items():
        if split not in SPLITS:
            _fail("split_sizes", f"has unknown split {split!r} (known: {', '.join(SPLITS)})", dict(c.split_sizes))
        if not isinstance(n, int) or n <= 0:
            _fail("split_sizes", f"must give a positive integer size for {split!r}", dict(c.split_sizes))


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise CftError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
    return name


def _split_code(name: str) -> int:
    return zlib.crc32(name.encode())


class Rendered(NamedTuple):
    """One sample as `SyntheticWorld.generate` draws it."""

    image: np.ndarray  # (H, W, 3) uint8
    label_map: np.ndarray  # (H, W) uint8 ids into the world's part table (0: background)
    label: int
    background: int
    cue: int  # the cue's value: the background (cue="background") or the mark's colour (cue="mark")


class Choice(NamedTuple):
    """What a sample shows, decided before drawing it."""

    label: int
    background: int
    cue: int
    hidden: bool  # drawn without its object (context_only)
    rng: np.random.Generator


class SyntheticWorld:
    """Objects of `classes` drawn from named parts on procedural `backgrounds`, with exact part masks.

    Class i's own cue value is i (background i, or mark colour i); values beyond num_classes belong to no class
    (neutral). Sample i of a split depends only on (config, split name, i).
    """

    def __init__(self, config: WorldConfig | None = None, **overrides: Any) -> None:
        config = config or WorldConfig()
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(WorldConfig)})
        for old in set(unknown) & set(WorldConfig.RENAMED):
            raise CftError(f"WorldConfig field {old} was renamed: write {WorldConfig.RENAMED[old]} instead")
        if unknown:
            raise CftError(f"unknown WorldConfig field(s): {', '.join(unknown)}")
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.classes: tuple[str, ...] = class_names(self.config)
        self.backgrounds: tuple[str, ...] = tuple(TEXTURES)[: self.config.num_cue_values]
        table: list[tuple[int, str]] = [(-1, "background")]
        for c, name in enumerate(self.classes):
            table.extend((c, part) for part in CATEGORIES[name].parts)
        if self.config.cue == "mark":
            table.extend(MARK_PARTS)
        if len(table) > 256:
            raise CftError(f"too many parts ({len(table) - 1}) for a uint8 label map")
        self.part_table: tuple[tuple[int, str], ...] = tuple(table)
        self._part_ids = [{p: i for i, (c, p) in enumerate(table) if c == k} for k in range(len(self.classes))]
        self._mark_id = len(table) - 2 if self.config.cue == "mark" else None  # then its frame
        self._banks: dict[str, BackgroundBank] = {}

    def __repr__(self) -> str:
        return f"SyntheticWorld({self.config})"

    def class_index(self, cls: int | str) -> int:
        """The index of a class given by index or name."""
        if isinstance(cls, str):
            if cls not in self.classes:
                raise CftError(f"unknown class {cls!r}; classes: {', '.join(self.classes)}")
            return self.classes.index(cls)
        if not 0 <= int(cls) < len(self.classes):
            raise CftError(f"class index {cls} out of range [0, {len(self.classes)})")
        return int(cls)

    def part_names(self, cls: int | str) -> tuple[str, ...]:
        """The part names of a class, in drawing (z) order."""
        return CATEGORIES[self.classes[self.class_index(cls)]].parts

    def own_cue(self, cls: int | str) -> int:
        """The cue value a class is correlated with in the biased splits (its background, mark or carrier colour)."""
        return self.class_index(cls)

    def neutral_value(self, index: int) -> int:
        """The neutral cue value that sample `index` takes when its cue is neutralised."""
        neutral = len(self.backgrounds) - len(self.classes)
        if neutral <= 0:
            raise CftError("this world has no neutral cue value: num_cue_values must exceed num_classes")
        return len(self.classes) + index % neutral

    def split(self, name: str, n: int | None = None, neutral_cue: bool = False) -> WorldSplit:
        """A split of n samples (default: config.split_sizes[name]), generated on access.

        neutral_cue: every sample drawn exactly as in the split, but with its cue replaced by a neutral value
        (`neutral_value`): the same objects, poses and backgrounds without the spurious information.
        """
        _check_split(name)
        n = self.config.split_sizes.get(name, 1_000) if n is None else n
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise CftError(f"split size n must be a positive integer, got {n!r}")
        if neutral_cue:
            self.neutral_value(0)
        self._bank(name)  # built now, so DataLoader workers inherit it
        return WorldSplit(
            name,
            int(n),
            self.classes,
            self.backgrounds,
            self.part_table,
            world=self,
            neutral_cue=neutral_cue,
            cue_ids=self._cue_ids(),
            cue_on_object=self.config.cue == "colour" or self.config.mark_place == "object",
        )

    def _cue_ids(self) -> tuple[int, ...]:
        """Part-table ids whose pixels are the cue: the mark and its frame, or every class's carrier part."""
        if self.config.cue == "mark":
            return (self._mark_id, self._mark_id + 1)
        if self.config.cue == "colour":
            return tuple(self._part_ids[k][CATEGORIES[name].carrier] for k, name in enumerate(self.classes))
        return ()

    def _bank(self, split: str) -> BackgroundBank:
        """Background tiles of one split (each split has its own, so no two splits share background pixels)."""
        if split not in self._banks:
            rng = np.random.default_rng([self.config.seed, _split_code(split), 1, 0])
            size = self.config.image_size
            self._banks[split] = BackgroundBank(self.backgrounds, 2 * size, self.config.bg_tiles, rng)
        return self._banks[split]

    def _choose(self, split: str, index: int) -> Choice:
        """What sample `index` of a split shows, and its generator (seeded from seed, split name and index)."""
        c = self.config
        rng = np.random.default_rng([c.seed, _split_code(split), 0, index])
        label = index % len(self.classes)
        count = len(self.backgrounds)
        background = int(rng.integers(count)) if c.cue != "background" else -1
        if split == "test-ood":
            value = int(rng.integers(count))
        elif split in BIASED_SPLITS and rng.random() < c.bias:
            value = label
        else:
            other = int(rng.integers(count - 1))
            value = other + (other >= label)
        hidden = False
        if split in BIASED_SPLITS and (c.context_only > 0 or c.neutral_cue > 0):
            u = rng.random()
            hidden = u < c.context_only
            if c.context_only <= u < c.context_only + c.neutral_cue:
                value = self.neutral_value(int(rng.integers(count)))
        return Choice(label, value if background < 0 else background, value, hidden, rng)

    def generate(self, split: str, index: int, neutral_cue: bool = False) -> Rendered:
        """Sample `index` of a split (with `neutral_cue`: its cue replaced by a neutral value, all else equal)."""
        c = self.config
        label, background, cue, hidden, rng = self._choose(_check_split(split), index)
        if neutral_cue:
            cue = self.neutral_value(index)
            background = cue if c.cue == "background" else background
        size = c.image_size
        bg = self._bank(split).draw(
            background,
            rng,
            size,
            contrast=c.bg_contrast,
            contrast_jitter=c.bg_contrast_jitter,
            hue_jitter=c.bg_hue_jitter,
            saturation_jitter=c.bg_saturation_jitter,
            brightness_jitter=c.bg_brightness_jitter,
        )
        category, ids = CATEGORIES[self.classes[label]], self._part_ids[label]
        labels = (
            np.zeros((size, size), np.uint8)
            if hidden and c.cue != "colour"
            else draw_labels(
                category,
                ids,
                rng,
                size,
                scale_range=c.scale_range,
                max_rotation=c.max_rotation,
                flip=c.flip,
                shape_jitter=c.shape_jitter,
            )
        )
        palette = np.zeros((len(self.part_table), 3), np.float32)
        for part, rgb in sample_palette(category, rng, c.part_hue_jitter, c.part_value_jitter).items():
            palette[ids[part]] = rgb
        if c.cue == "colour":  # the carrier part wears the cue's colour; a hidden object leaves only the carrier
            carrier = ids[category.carrier]
            palette[carrier] = mark_colour(cue)
            if hidden:
                labels[labels != carrier] = 0
        if self._mark_id is not None:
            on_object = c.mark_place == "object" and not hidden
            y, x = place_mark(labels, c.mark_size, rng, ids[category.carrier] if on_object else None, c.mark_grid)
            labels[y : y + c.mark_size, x : x + c.mark_size] = self._mark_id + 1
            labels[y + 1 : y + c.mark_size - 1, x + 1 : x + c.mark_size - 1] = self._mark_id
            palette[self._mark_id], palette[self._mark_id + 1] = mark_colour(cue), MARK_FRAME
        image = paint(bg, labels, palette, rng, noise=c.pixel_noise, shading=c.shading, outline=c.outline)
        return Rendered(image, labels, label, background, cue)


class WorldSplit(Dataset):
    """One split of a world: generated on access, or held in memory after `materialize()` or `load()`.

    `sample(i)` gives numpy arrays, `split[i]` the same as torch tensors: image (3, H, W) uint8, label, background,
    cue (its value), object_mask (H, W) bool (the object's silhouette, a mark drawn on it included),
    cue_mask (H, W) bool (the mark's pixels, the carrier's with cue="colour", the pixels off the object when the
    background is the cue),
    part_masks {part name: (H, W) bool} for the parts of the sample's class (some may be empty when a small part
    falls between pixels; a mark drawn over a part takes its pixels), label_map (H, W) uint8 part ids (see
    `part_table`) and index. Batch with `collate` (part names differ between classes).
    """

    def __init__(
        self,
        name: str,
        size: int,
        classes: Sequence[str],
        backgrounds: Sequence[str],
        part_table: Sequence[tuple[int, str]],
        *,
        world: SyntheticWorld | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        neutral_cue: bool = False,
        cue_ids: Sequence[int] = (),
        cue_on_object: bool = True,
    ) -> None:
        self.name, self.size = name, size
        self.classes, self.backgrounds = tuple(classes), tuple(backgrounds)
        self.part_table = tuple((int(c), str(p)) for c, p in part_table)
        self.world = world
        self.neutral_cue, self.cue_on_object = bool(neutral_cue), bool(cue_on_object)
        self.cue_ids = tuple(int(i) for i in cue_ids)  # empty: the cue is the background
        self._arrays = dict(arrays) if arrays is not None else None
        self._ids = [{p: i for i, (c, p) in enumerate(self.part_table) if c == k} for k in range(len(self.classes))]

    def __repr__(self) -> str:
        source = "cached" if self._arrays is not None else "generated"
        neutral = ", neutral cue" if self.neutral_cue else ""
        return f"WorldSplit({self.name!r}, n={self.size}, {source}{neutral})"

    def __len__(self) -> int:
        return self.size

    def part_names(self, cls: int) -> tuple[str, ...]:
        """The part names of class index `cls`, in drawing order."""
        return tuple(self._ids[cls])

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for a split of {self.size}")
        return i

    def _raw(self, i: int) -> Rendered:
        if self._arrays is not None:
            a = self._arrays
            cue = int(a["cues"][i]) if "cues" in a else int(a["backgrounds"][i])
            return Rendered(a["images"][i], a["label_maps"][i], int(a["labels"][i]), int(a["backgrounds"][i]), cue)
        assert self.world is not None
        return self.world.generate(self.name, i, self.neutral_cue)

    def masks(self, label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The object mask and the cue mask of a label map (see the class docstring)."""
        drawn = label_map > 0
        if not self.cue_ids:
            return drawn, ~drawn
        cue = np.isin(label_map, self.cue_ids)
        return (drawn if self.cue_on_object else drawn & ~cue), cue

    def sample(self, i: int) -> dict[str, Any]:
        """Sample i as numpy arrays (see the class docstring)."""
        i = self._index(i)
        image, label_map, label, background, cue = self._raw(i)
        object_mask, cue_mask = self.masks(label_map)
        return {
            "image": np.ascontiguousarray(image.transpose(2, 0, 1)),
            "label": label,
            "background": background,
            "cue": cue,
            "object_mask": object_mask,
            "cue_mask": cue_mask,
            "part_masks": {p: label_map == k for p, k in self._ids[label].items()},
            "label_map": label_map,
            "index": i,
            "class_name": self.classes[label],
            "background_name": self.backgrounds[background] if 0 <= background < len(self.backgrounds) else "",
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.sample(i)
        tensors = {k: torch.from_numpy(s[k]) for k in ("image", "object_mask", "cue_mask", "label_map")}
        masks = {p: torch.from_numpy(m) for p, m in s["part_masks"].items()}
        return {**s, **tensors, "part_masks": masks}

    def labels_and_backgrounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Class and background id of every sample, without rendering any image."""
        labels, backgrounds, _ = self._metadata()
        return labels, backgrounds

    def labels_and_cues(self) -> tuple[np.ndarray, np.ndarray]:
        """Class and cue value of every sample, without rendering any image."""
        labels, _, cues = self._metadata()
        return labels, cues

    def _metadata(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is not None:
            a = self._arrays
            cues = a["cues"] if "cues" in a else a["backgrounds"]
            return a["labels"].copy(), a["backgrounds"].copy(), np.array(cues, np.int64)
        assert self.world is not None
        world = self.world
        rows = []
        for i in range(self.size):
            label, background, cue, *_ = world._choose(self.name, i)
            if self.neutral_cue:
                cue = world.neutral_value(i)
                background = cue if world.config.cue == "background" else background
            rows.append((label, background, cue))
        labels, backgrounds, cues = np.array(rows, dtype=np.int64).reshape(-1, 3).T
        return labels, backgrounds, cues

    def materialize(self) -> WorldSplit:
        """Generate every sample into memory (a no-op when already there); returns self."""
        if self._arrays is None:
            assert self.world is not None
            s = self.world.config.image_size
            a = {
                "images": np.empty((self.size, s, s, 3), np.uint8),
                "label_maps": np.empty((self.size, s, s), np.uint8),
                "labels": np.empty(self.size, np.int64),
                "backgrounds": np.empty(self.size, np.int64),
                "cues": np.empty(self.size, np.int64),
            }
            for i in range(self.size):
                r = self.world.generate(self.name, i, self.neutral_cue)
                a["images"][i], a["label_maps"][i] = r.image, r.label_map
                a["labels"][i], a["backgrounds"][i], a["cues"][i] = r.label, r.background, r.cue
            self._arrays = a
        return self

    def save(self, path: str | Path) -> Path:
        """Write the whole split to a compressed .npz, atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        self.materialize()
        assert self._arrays is not None
        config = self.world.config.to_json() if self.world is not None else self._arrays.get("config", "")
        labels, backgrounds, cues = self._metadata()
        payload = {
            **{k: self._arrays[k] for k in ("images", "labels", "backgrounds", "label_maps")},
            "cues": cues,
            "part_class": np.array([c for c, _ in self.part_table], np.int64),
            "part_name": np.array([p for _, p in self.part_table]),
            "classes": np.array(self.classes),
            "background_names": np.array(self.backgrounds),
            "split": np.array(self.name),
            "config": np.array(str(config)),
            "neutral_cue": np.array(self.neutral_cue),
            "cue_ids": np.array(self.cue_ids, np.int64),
            "cue_on_object": np.array(self.cue_on_object),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **payload)
        return path

    @classmethod
    def load(cls, path: str | Path) -> WorldSplit:
        """A split cached by `save`, held in memory; equal, sample by sample, to the one that was saved."""
        path = Path(path)
        if not path.is_file():
            raise CftError(f"cached split {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _CACHE_KEYS if k not in z.files]
                if missing:
                    raise CftError(f"{path} is not a cached world split (missing {', '.join(missing)})")
                data = {k: z[k] for k in z.files}
        except CftError:
            raise
        except Exception as err:  # zipfile / numpy raise many types for foreign or truncated files
            raise CftError(f"cannot read cached split {path} ({type(err).__name__}: {err})") from None
        n = len(data["labels"])
        table = list(zip(data["part_class"].tolist(), data["part_name"].tolist(), strict=True))
        arrays = {k: data[k] for k in ("images", "labels", "backgrounds", "label_maps", "cues", "config") if k in data}
        return cls(
            str(data["split"]),
            n,
            data["classes"].tolist(),
            data["background_names"].tolist(),
            table,
            arrays=arrays,
            neutral_cue=bool(data.get("neutral_cue", False)),
            cue_ids=data["cue_ids"].tolist() if "cue_ids" in data else (),
            cue_on_object=bool(data.get("cue_on_object", True)),
        )


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch WorldSplit items for a DataLoader: tensors stacked, part_masks kept as a list of dicts."""
    keys = ("image", "object_mask", "cue_mask", "label_map")
    out: dict[str, Any] = {k: torch.stack([b[k] for b in batch]) for k in keys}
    for k in ("label", "background", "cue", "index"):
        out[k] = torch.tensor([int(b[k]) for b in batch], dtype=torch.long)
    out["part_masks"] = [b["part_masks"] for b in batch]
    return out
