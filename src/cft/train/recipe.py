"""`cft finetune`: one recipe (YAML + `key.sub=value` overrides) for training from scratch and CFT fine-tuning.

recipe = load_recipe("world-cft", ["train.epochs=10"])  # a packaged recipe, or a path
result = run_finetune(recipe, "runs/cft")   # OUT/config.yaml, split.json, metrics.jsonl, best/last.safetensors
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cft.concepts.world import WorldConceptConfig, world_concepts
from cft.config import bounded, from_dict, load_config_data, load_yaml, save_config, to_dict
from cft.data.decoy import DECOY_SPLITS, DecoyConfig, check_decoy_config
from cft.distributed import Distributed
from cft.errors import CftError
from cft.io import exclusive_folder, write_json_atomic
from cft.registry import Registry
from cft.train.base import ObjectiveConfig, build_objective
from cft.train.objectives import CFTSettings
from cft.train.trainer import FitResult, TrainConfig, Trainer, check_run_dir, check_train_config

WORLD_VIT = "world-vit"
# Fields that may change between a run and its --resume: they do not change what is trained on or how.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.progress",
    "train.eval_batch_size",
    "train.save_every_steps",
)


@dataclass
class ModelSection:
    name: str = WORLD_VIT  # "world-vit" (the small ViT of cft.world) or a timm ViT name
    pretrained: bool = False  # timm models only: hub weights (needs the network)
    checkpoint: str | None = None  # weights to start from (.safetensors or .pt)
    kwargs: dict[str, Any] = field(default_factory=dict)  # timm models only: extra timm.create_model arguments
    depth: int = 4  # world-vit only, as cft.world.model.WorldModelConfig
    embed_dim: int = 128
    num_heads: int = 4
    patch_size: int = 8


@dataclass
class FewShotSection:
    per_class: int = 3  # images per seen class
    class_fraction: float = 0.5  # share of the classes that are seen; the rest are held out (unseen)
    seed: int = 0
    exclude: str | None = None  # folder / waterbirds: a file of image ids (relative paths) never chosen
    val_per_class: int = 0  # folder: also hold out this many other images per seen class for validation


@dataclass
class DataSection:
    source: str = "world"  # world (synthetic) | decoy (Decoy-(Fashion)MNIST) | folder | waterbirds | grouped
    world: dict[str, Any] = field(default_factory=dict)  # cft.world.WorldConfig fields
    decoy: DecoyConfig = field(default_factory=DecoyConfig)  # decoy: the dataset and how the decoy is planted
    train_split: str = "train"
    n_train: int = 6000  # images of train_split (with few_shot: the pool the few images are drawn from)
    val_split: str | None = "val"  # null: no validation (select_by falls back to the last epoch)
    n_val: int = 500
    few_shot: FewShotSection | None = None  # null: train on all n_train images
    masks: Literal["concepts", "object", "none"] = "concepts"
    # world, masks=concepts: where each class's concepts come from, as the demo's `concepts` section:
    # source llm (the packaged language model's answers, filtered and validated in the world; the bank is written
    # to OUT/concepts/) or parts (each class's part names minus exclude_parts)
    concepts: WorldConceptConfig = field(default_factory=WorldConceptConfig)
    flip: bool = True  # mirror each training image (and its mask) with probability 0.5
    # decoy with few_shot and objective.cls_target original: this many other pool images, unlabelled, ride with the
    # few-shot images (split evenly among them) and the KL to the original model is also taken on them
    anchor_images: int = 0
    # folder / waterbirds sources (cft.train.folder_data):
    root: str | None = None  # folder: root/<class folder>/<images>; waterbirds / grouped: folder with metadata.csv
    val_root: str | None = None  # folder: validation images in the same layout (null: no validation)
    classes: str = "folders"  # folder: imagenet (wnid folders, 1000-way labels) | folders (sorted folder names)
    store: str | None = None  # the mask store (`cft masks`) holding the guidance masks of these images
    val_store: str | None = None  # folder with val_root: the store of the val_root images (null: data.store)
    image_size: int = 224  # training crop
    resize: int = 256  # images and masks are resized to resize x resize first
    mean: list[float] | None = None  # normalisation; null: the model's pretrained config (the paper: 0.5)
    std: list[float] | None = bounded(None, gt=0)


@dataclass
class FinetuneRecipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    objective: ObjectiveConfig = field(default_factory=CFTSettings)  # the settings of objective.name's objective
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(FinetuneRecipe))


def recipe_from_dict(data: dict[str, Any] | None) -> FinetuneRecipe:
    """Build and check a recipe; errors name the field as it is written in YAML or --set (e.g. data.masks)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise CftError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise CftError(f"unknown section(s) {', '.join(unknown)} in the recipe; known: {', '.join(SECTIONS)}")
    hints = typing.get_type_hints(FinetuneRecipe)
    sections = {name: from_dict(hints[name], data.get(name), where=name) for name in SECTIONS}
    recipe = FinetuneRecipe(**sections)
    check_recipe(recipe)
    return recipe


def load_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> FinetuneRecipe:
    """The recipe file or packaged recipe (if any) with `key.sub=value` overrides on top."""
    return recipe_from_dict(load_config_data(path, overrides, kind="finetune"))


def check_recipe(recipe: FinetuneRecipe) -> None:
    """Checks that span fields (types were checked when the recipe was read)."""
    m, d = recipe.model, recipe.data
    if d.source not in DATA_SOURCES:
        raise CftError(f"data.source must be one of {', '.join(DATA_SOURCES)}, got {d.source!r}")
    from cft.world import SPLITS

    splits = DECOY_SPLITS if d.source == "decoy" else SPLITS
    for name, split in (("train_split", d.train_split), ("val_split", d.val_split)):
        if split is not None and split not in splits:
            raise CftError(f"data.{name} must be one of {', '.join(splits)}, got {split!r}")
    for name in ("n_train", "n_val"):
        if getattr(d, name) < 1:
            raise CftError(f"data.{name} must be >= 1, got {getattr(d, name)}")
    if d.few_shot is not None:
        if d.few_shot.per_class < 1:
            raise CftError(f"data.few_shot.per_class must be >= 1, got {d.few_shot.per_class}")
        if d.few_shot.val_per_class < 0:
            raise CftError(f"data.few_shot.val_per_class must be >= 0, got {d.few_shot.val_per_class}")
        if not 0.0 < d.few_shot.class_fraction <= 1.0:
            raise CftError(f"data.few_shot.class_fraction must be in (0, 1], got {d.few_shot.class_fraction}")
    check_train_config(recipe.train)
    objective = build_objective(recipe.objective)  # checks objective.*
    if d.anchor_images:
        if (
            d.anchor_images < 0
            or d.source != "decoy"
            or d.few_shot is None
            or getattr(recipe.objective, "cls_target", None) != "original"
        ):
            raise CftError(
                f"data.anchor_images={d.anchor_images}: anchor images are for data.source=decoy with few_shot and "
                "objective.cls_target=original (the KL to the original model is taken on them); set it to 0 otherwise"
            )
    if objective.needs_mask and d.masks == "none":
        raise CftError(
            f"objective {recipe.objective.name!r} is guided by masks but data.masks is 'none'; "
            "set data.masks to concepts or object (or use objective.name=erm / no-guidance)"
        )
    if m.name == WORLD_VIT:
        if m.pretrained:
            raise CftError("model.pretrained: world-vit has no hub weights; start from a model.checkpoint instead")
        if m.kwargs:
            raise CftError("model.kwargs is for timm models; world-vit takes depth, embed_dim, num_heads, patch_size")
    if m.checkpoint is not None and not Path(m.checkpoint).is_file():
        raise CftError(f"model.checkpoint {m.checkpoint} does not exist (relative to the working directory)")
    if d.source == "world":
        make_world(recipe)  # checks data.world.*
    elif d.source == "decoy":
        check_decoy_config(d.decoy)
    elif d.source in disk_sources():
        _check_disk_data(d)


def _check_disk_data(d: DataSection) -> None:
    if not d.root:
        raise CftError(f"data.root is required for data.source={d.source}")
    if not 0 < d.image_size <= d.resize:
        raise CftError(f"data.image_size must be in (0, data.resize={d.resize}], got {d.image_size}")
    for name in ("mean", "std"):
        value = getattr(d, name)
        if value is not None and len(value) != 3:
            raise CftError(f"data.{name} must be 3 numbers (R, G, B), got {value}")
    if d.classes not in ("imagenet", "folders"):
        raise CftError(f"data.classes must be 'imagenet' or 'folders', got {d.classes!r}")


def make_world(recipe: FinetuneRecipe):
    from cft.world import SyntheticWorld
    from cft.world.world import world_config

    return SyntheticWorld(world_config(recipe.data.world, "data.world"))


def build_model(recipe: FinetuneRecipe, num_classes: int, image_size: int) -> nn.Module:
    """The model of `recipe.model` for `num_classes` classes at `image_size`, from its checkpoint if one is set."""
    from cft.models import load_checkpoint, load_model, size_kwargs
    from cft.world.model import WorldModelConfig

    m = recipe.model
    if m.name == WORLD_VIT:
        model = WorldModelConfig(m.depth, m.embed_dim, m.num_heads, m.patch_size).create(num_classes, image_size)
    else:
        kwargs = {**size_kwargs(m.name, num_classes, image_size), **m.kwargs}
        try:
            model = load_model(m.name, pretrained=m.pretrained, **kwargs)
        except CftError as err:
            raise CftError(f"model.name: {err}") from None
    _check_patch_grid(model, image_size)
    if m.checkpoint is not None:
        try:
            load_checkpoint(model, m.checkpoint)
        except CftError as err:
            raise CftError(f"model.checkpoint: {err} (do the model fields match the checkpoint's model?)") from None
    return model


def _check_patch_grid(model: nn.Module, image_size: int) -> None:
    """A ViT's patches must tile the image: otherwise the last pixels are cut off and the relevance map, upsampled
    to the image, is stretched against the masks it is compared with."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    sizes = tuple(patch) if isinstance(patch, list | tuple) else (patch,)
    if all(isinstance(p, int) and p > 0 for p in sizes) and any(image_size % p for p in sizes):
        raise CftError(
            f"the image size {image_size} is not a multiple of the model's patch size {sizes[0]}: the patch grid "
            "would not cover the image and its relevance maps would be stretched; choose a multiple "
            "(data.image_size, or data.world.image_size)"
        )


# ---- data ------------------------------------------------------------------------------------------------
def world_concept_masks(
    samples: list[dict], concepts: dict[str, list[str]], classes: Sequence[str], segmenter
) -> list[np.ndarray]:
    """The guidance masks of world samples: each sample's class concepts as the world's segmenter finds them."""
    from cft.grounding.guidance import segment_guidance

    phrases = [concepts[classes[s["label"]]] for s in samples]
    return segment_guidance(segmenter, samples, phrases, samples[0]["object_mask"].shape)


def _world_dataset(world, split, indices: Sequence[int], masks: str, concepts: dict[str, list[str]] | None, segmenter):
    """Images, labels and (unless masks is "none") guidance masks of the samples `indices` of `split`."""
    from cft.world.datasets import ArrayDataset

    images, labels, out = [], [], []
    for start in range(0, len(indices), 256):  # in chunks: part masks of many samples take memory
        samples = [split.sample(int(i)) for i in indices[start : start + 256]]
        images.extend(s["image"] for s in samples)
        labels.extend(int(s["label"]) for s in samples)
        if masks == "object":
            out.extend(s["object_mask"].astype(np.float32) for s in samples)
        elif masks == "concepts":
            out.extend(world_concept_masks(samples, concepts, world.classes, segmenter))
    m = torch.from_numpy(np.stack(out).astype(np.float32)) if out else None
    return ArrayDataset(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), m)


def build_data(recipe: FinetuneRecipe, world, needs_mask: bool, out: Path | None = None):
    """(train set, val set or None, the few-shot split or None); `out`: where an llm concept bank is written."""
    from cft.data.fewshot import select_few_shot

    d = recipe.data
    masks = d.masks if needs_mask else "none"
    segmenter, concepts = None, None
    if masks == "concepts":
        from cft.sentences import embed

        segmenter = d.concepts.make_segmenter()
        embed(sorted({p for c in world.classes for p in world.part_names(c)}))  # one batch: concepts are part names
        try:
            concepts = world_concepts(world, d.concepts, out)
        except CftError as err:
            raise CftError(f"data.{err}" if str(err).startswith("concepts.") else str(err)) from None
    pool = world.split(d.train_split, d.n_train)
    selection = None
    if d.few_shot is None:
        indices: Sequence[int] = range(d.n_train)
    else:
        labels, _ = pool.labels_and_backgrounds()
        try:
            selection = select_few_shot(
                labels, d.few_shot.per_class, d.few_shot.class_fraction, d.few_shot.seed, len(world.classes)
            )
        except CftError as err:
            raise CftError(f"data.few_shot: {err} (data.n_train={d.n_train} is the pool)") from None
        indices = selection.indices
    train = _world_dataset(world, pool, indices, masks, concepts, segmenter)
    val = None
    if d.val_split is not None:
        split = world.split(d.val_split, d.n_val)
        val = _world_dataset(world, split, range(d.n_val), masks, concepts, segmenter)
    return train, val, selection


# ---- the run ---------------------------------------------------------------------------------------------
def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and k != "kwargs" and k != "world":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resume(recipe: FinetuneRecipe, path: Path) -> None:
    """A resumed run must train on the same data with the same model and objective as the run it continues. A
    field the saved recipe lacks (added since) counts as its default; a saved field the recipe's objective or data
    source does not have (another one's, or one removed since) is never read, so it cannot differ."""
    if not path.is_file():
        return
    saved = load_yaml(path.read_text(), f"the saved recipe {path}") or {}
    saved = _flat({k: v for k, v in saved.items() if k != "kind"} if isinstance(saved, dict) else {})
    now = _flat(to_dict(recipe))
    defaults = _flat(to_dict(FinetuneRecipe(**{s: _defaults_of(getattr(recipe, s)) for s in SECTIONS})))
    fields = {f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(recipe, s))}
    changed = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUMABLE_CHANGES
        and ".".join(k.split(".")[:2]) in fields
        and (saved[k] if k in saved else defaults.get(k)) != now.get(k)
    )
    if changed:
        raise CftError(
            f"--resume with a recipe that differs from the run's {path} in {', '.join(changed)}; "
            "only train.epochs (and logging fields) may change when resuming"
        )


def _defaults_of(section: Any) -> Any:
    """A section of the same dataclass (the same objective, the same data source) at its defaults."""
    try:
        return type(section)()
    except TypeError:  # a plug-in's dataclass with required fields: no defaults to compare with
        return section


@dataclass
class SourceData:
    """What a data source gives the trainer: the label space, the model sized for it, the data and its split."""

    classes: list[str]
    model: nn.Module
    train: Any
    val: Any
    selection: Any  # the few-shot split (FewShotSplit) or None
    collate: Callable
    eval_collate: Callable
    where: dict[str, Any]  # what split.json records about the images


def _world_source(recipe: FinetuneRecipe, needs_mask: bool, out: Path) -> SourceData:
    from cft.world.datasets import make_collate

    world = make_world(recipe)
    classes = list(world.classes)
    model = build_model(recipe, len(classes), world.config.image_size)
    train, val, selection = build_data(recipe, world, needs_mask, out)
    where = {"split": recipe.data.train_split, "pool": recipe.data.n_train}
    return SourceData(
        classes, model, train, val, selection, make_collate(flip=recipe.data.flip), make_collate(flip=False), where
    )


def _decoy_source(recipe: FinetuneRecipe, needs_mask: bool, out: Path) -> SourceData:
    """Decoy-(Fashion)MNIST (cft.data.decoy): guidance masks are the foreground (masks=object or concepts). All
    of train_split without few_shot (its decoys drawn anew each epoch), else a few-shot set of its first n_train."""
    from cft.data.decoy import DecoySource, DecoyStream
    from cft.data.fewshot import select_few_shot
    from cft.world.datasets import ArrayDataset, make_collate

    d = recipe.data
    source = DecoySource(d.decoy)
    classes = list(source.classes)
    model = build_model(recipe, len(classes), 28)
    with_masks = needs_mask and d.masks != "none"

    def dataset(planted, anchors: torch.Tensor | None = None) -> ArrayDataset:
        masks = torch.from_numpy(planted.foreground.astype(np.float32)) if with_masks else None
        return ArrayDataset(torch.from_numpy(planted.rgb()), torch.from_numpy(planted.labels), masks, anchors)

    selection = None
    if d.few_shot is None and d.train_split == "train" and not with_masks:
        train: Any = DecoyStream(source, d.n_train)
    else:
        pool = source.split(d.train_split, d.n_train)
        if d.few_shot is not None:
            try:
                selection = select_few_shot(
                    pool.labels, d.few_shot.per_class, d.few_shot.class_fraction, d.few_shot.seed, len(classes)
                )
            except CftError as err:
                raise CftError(f"data.few_shot: {err} (data.n_train={d.n_train} is the pool)") from None
            chosen = np.asarray(selection.indices)
            anchors = _anchor_images(pool, chosen, d.anchor_images, d.few_shot.seed)
            pool = pool.take(chosen)
            train = dataset(pool, anchors)
        else:
            train = dataset(pool)
    val = None if d.val_split is None else dataset(source.split(d.val_split, d.n_val))
    where = {"dataset": d.decoy.dataset, "split": d.train_split, "pool": d.n_train}
    return SourceData(classes, model, train, val, selection, make_collate(flip=d.flip), make_collate(flip=False), where)


def _anchor_images(pool, chosen: np.ndarray, count: int, seed: int) -> torch.Tensor | None:
    """`count` pool images other than the chosen ones (seeded), as (len(chosen), count // len(chosen), 3, H, W)."""
    if count <= 0:
        return None
    per_item = max(count // len(chosen), 1)
    others = np.setdiff1d(np.arange(len(pool)), chosen)
    if len(others) < per_item * len(chosen):
        raise CftError(f"data.anchor_images={count}: the pool has only {len(others)} other images")
    picked = np.random.default_rng([seed, 1]).choice(others, per_item * len(chosen), replace=False)
    images = torch.from_numpy(pool.take(picked).rgb())
    return images.reshape(len(chosen), per_item, *images.shape[1:])


def _disk_source(recipe: FinetuneRecipe, needs_mask: bool, out: Path) -> SourceData:
    from torch.utils.data import default_collate

    from cft.train.folder_data import disk_data, label_space

    classes = label_space(recipe.data)
    model = build_model(recipe, len(classes), recipe.data.image_size)
    data = disk_data(recipe.data, model, needs_mask)
    where = {
        "root": recipe.data.root,
        "images": [it.image_id for it in data.items],
        "val_images": [it.image_id for it in data.val_items],
    }
    return SourceData(classes, model, data.train, data.val, data.selection, default_collate, default_collate, where)


DataSourceBuilder = Callable[[FinetuneRecipe, bool, Path], SourceData]  # (recipe, needs_mask, out) -> SourceData
# data.source -> builder; the folder-like sources share one builder (cft.train.folder_data tells them apart)
DATA_SOURCES: Registry[DataSourceBuilder] = Registry("data source")


def register_data_source(name: str, description: str | None = None) -> Callable[[DataSourceBuilder], DataSourceBuilder]:
    """Decorator: register a builder `(recipe, needs_mask, out) -> SourceData` as `data.source: name` (it checks the
    data fields it reads; `build_model` sizes the model); description: one line for `cft ls data-sources`."""
    return DATA_SOURCES.register(name, description)


def disk_sources() -> tuple[str, ...]:
    """The data sources read from image folders on disk by `cft.train.folder_data` (the ones `cft run` masks)."""
    return tuple(name for name, builder in DATA_SOURCES.items() if builder is _disk_source)


for _name, _builder, _description in (
    ("world", _world_source, "the synthetic world (cft.world): images, labels and masks made on the fly"),
    ("decoy", _decoy_source, "Decoy-MNIST / Decoy-FashionMNIST: real images with a planted decoy (data.decoy)"),
    ("folder", _disk_source, "image folders: data.root/<class folder>/<images>, masks from a mask store"),
    ("waterbirds", _disk_source, "Waterbirds: data.root/metadata.csv and its images"),
    ("grouped", _disk_source, "a group-labelled dataset: data.root/metadata.csv (img_filename, y, split, group)"),
):
    DATA_SOURCES.add(_name, _builder, _description)


def run_finetune(recipe: FinetuneRecipe, out_dir: str | Path, resume: bool = False, progress: bool = True) -> FitResult:
    """Train as `recipe` says; write OUT/config.yaml (and split.json) first, then checkpoints and metrics."""
    out = Path(out_dir)
    check_recipe(recipe)
    first = Distributed.current().rank == 0  # under torchrun rank 0 holds the folder's lock for the job
    with exclusive_folder(out, "--out") if first else contextlib.nullcontext():
        return _run_finetune(recipe, out, resume, progress)


def _run_finetune(recipe: FinetuneRecipe, out: Path, resume: bool, progress: bool) -> FitResult:
    check_run_dir(out, resume)  # before anything is built or written
    if resume:
        _check_resume(recipe, out / "config.yaml")
    objective = build_objective(recipe.objective)
    tcfg = dataclasses.replace(recipe.train, progress=recipe.train.progress and progress)
    torch.manual_seed(recipe.train.seed)  # the initial weights of a model trained from scratch
    source = DATA_SOURCES[recipe.data.source](recipe, objective.needs_mask, out)
    if getattr(objective, "wants_reference", False):
        objective.bind_reference(source.model)  # the starting weights (a resumed state loads after this)
    trainer = Trainer(source.model, objective, tcfg, out, source.collate, source.eval_collate)

    def write_run_files() -> None:  # after a resumed state has loaded: a failed --resume changes nothing
        save_config(recipe, out / "config.yaml", kind="finetune")
        selection, classes = source.selection, source.classes
        if selection is not None:
            split = {
                **selection.to_dict(),
                "seen_class_names": [classes[c] for c in selection.seen_classes],
                "unseen_class_names": [classes[c] for c in selection.unseen_classes],
                **source.where,
            }
            write_json_atomic(out / "split.json", split)

    return trainer.fit(source.train, source.val, resume=resume, before_training=write_run_files)
