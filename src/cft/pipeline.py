"""`cft run RECIPE`: concepts -> validation -> masks -> fine-tuning -> evaluation, for several class-subset seeds,
each stage cached so that a rerun (or a run killed at any point) skips what is done and resumes what is not.

OUT/
  recipe.yaml                   the resolved recipe
  concepts/bank.json            proposed, filtered and (with `concepts.validate`) validated concepts
  masks/                        one mask store for every seed's images (entries keyed, so shared safely)
  seed<k>/images.txt            the few-shot images of class-subset seed k
  seed<k>/finetune/             the `cft finetune` run (best.safetensors, split.json, ...)
  seed<k>/eval.json             `cft evaluate` of its best checkpoint, seen vs unseen classes
  original/                     the starting weights and their `cft evaluate` (evaluate.original)
  results.json, results.md      mean and std over the seeds, and the paired gain over the original
A stage is done when its `.done.json` marker holds the hash of everything that determines it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cft.concepts.filters import FilterConfig
from cft.concepts.llm import Sampling
from cft.concepts.validate import ValidationConfig
from cft.config import from_dict, load_config_data, save_config, to_dict
from cft.errors import CftError
from cft.io import exclusive_folder, file_sha256, write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    from torch import nn

    from cft.data.folders import ImageItem
    from cft.evaluate.checkpoints import EvalSpec
    from cft.segmenter import Segmenter
    from cft.train.recipe import FinetuneRecipe

Log = Callable[[str], None]  # where a stage reports progress (print, or the CLI's logger)


@dataclass
class ConceptStage:
    classes: str | None = None  # resolve_classes spec; null: the fine-tuning data's classes
    backend: str = "gguf"  # openai | gguf | bank
    base_url: str | None = None
    model: str | None = None  # openai: model name; gguf: a .gguf file (null: the packaged Gemma)
    api_key_env: str = "OPENAI_API_KEY"
    bank: str | None = None  # backend bank: the hand-written bank file
    sampling: Sampling = field(default_factory=Sampling)
    filters: FilterConfig = field(default_factory=FilterConfig)
    validate: bool = True  # validation on the training images with the masks' segmenter
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class MaskStage:
    segmenter: str = "grounded-sam"
    options: dict[str, Any] = field(default_factory=dict)
    guidance: str = "union"
    object_masks: bool = False
    batch_size: int = 8


@dataclass
class EvalStage:
    RENAMED: ClassVar[dict[str, str]] = {"benches": "eval_sets"}

    eval_sets: dict[str, str] = field(default_factory=dict)  # name -> root, as `cft evaluate --eval-set`
    # also evaluate the model fine-tuning starts from (once, when its weights are fully determined: a checkpoint, or
    # hub weights whose head is kept) and report each seed's paired gain over it
    original: bool = True
    batch_size: int = 64
    workers: int = 4
    device: str = "auto"


@dataclass
class RunRecipe:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    concepts: ConceptStage = field(default_factory=ConceptStage)
    masks: MaskStage = field(default_factory=MaskStage)
    finetune: dict[str, Any] = field(default_factory=dict)  # a `cft finetune` recipe (data.store is set here)
    evaluate: EvalStage = field(default_factory=EvalStage)


def load_run_recipe(path: str | Path, overrides: list[str] = ()) -> RunRecipe:
    data = load_config_data(path, overrides, kind="run")
    recipe = from_dict(RunRecipe, data, where="run recipe")
    if not recipe.seeds:
        raise CftError("run recipe: seeds must list at least one class-subset seed")
    fr = finetune_recipe(recipe, recipe.seeds[0], Path("."))  # checks the finetune section now
    if fr.model.name == "world-vit":
        raise CftError("run recipe: finetune.model.name must be a timm model (e.g. vit_base_patch16_224)")
    return recipe


def finetune_recipe(recipe: RunRecipe, seed: int, out: Path) -> FinetuneRecipe:
    """The `cft finetune` recipe of one class-subset seed: few_shot.seed = seed, masks from OUT/masks."""
    from cft.train.recipe import recipe_from_dict
    from cft.train.sources import disk_sources

    data = json.loads(json.dumps(recipe.finetune))
    section = data.setdefault("data", {})
    if section.get("source", "folder") not in disk_sources():
        raise CftError(f"run recipe: finetune.data.source must be one of {', '.join(disk_sources())}")
    section.setdefault("source", "folder")
    kind = "object" if recipe.masks.object_masks else "concepts"  # what OUT/masks holds
    if section.get("masks", kind) not in (kind, "none"):
        raise CftError(
            f"run recipe: finetune.data.masks is {section['masks']!r} but masks.object_masks is "
            f"{recipe.masks.object_masks}, so the run's masks are {kind} masks; set finetune.data.masks={kind} (or "
            f"masks.object_masks={str(not recipe.masks.object_masks).lower()})"
        )
    section.setdefault("masks", kind)
    few = section.get("few_shot") or {}
    section["few_shot"] = {**few, "seed": seed}
    section["store"] = str(out / "masks")
    section["val_store"] = str(out / "masks-val")
    return recipe_from_dict(data)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(folder: Path, key: str) -> bool:
    marker = folder / ".done.json"
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


def _mark(folder: Path, key: str) -> None:
    write_json_atomic(folder / ".done.json", {"key": key})


def _set_aside(folder: Path) -> Path:
    """Rename `folder` to the first free `<name>.old-<n>` beside it (a rename: nothing is copied or lost)."""
    n = 1
    while (aside := folder.with_name(f"{folder.name}.old-{n}")).exists():
        n += 1
    folder.rename(aside)
    return aside


# ---- stages --------------------------------------------------------------------------------------------------
def concept_stage(
    recipe: RunRecipe, out: Path, class_names: list[str], segmenter: Segmenter, images: dict[str, list], log: Log
) -> Path:
    from cft.concepts.llm import ResponseCache
    from cft.concepts.stage import filter_stage, proposed_bank, validate_on_images
    from cft.data.classes import resolve_classes

    c = recipe.concepts
    folder = out / "concepts"
    key = _hash({"concepts": to_dict(c), "classes": class_names, "segmenter": segmenter.identity()})
    path = folder / "bank.json"
    if _done(folder, key) and path.is_file():
        log(f"concepts: cached ({path})")
        return path
    classes = resolve_classes(c.classes) if c.classes else class_names
    names = ("concepts.bank (a file)", "concepts.base_url and concepts.model")
    cache = ResponseCache(folder / "llm-cache")
    try:
        bank = proposed_bank(
            c.backend, classes, c.sampling, cache, bank_file=c.bank, model=c.model, base_url=c.base_url,
            api_key_env=c.api_key_env, names=names,
        )  # fmt: skip
    except CftError as err:
        raise CftError(f"run recipe: {err}") from None
    bank = filter_stage(bank, classes, c.filters)
    stats = None
    if c.validate:
        bank, stats = validate_on_images(bank, images, segmenter, c.validation)
    bank.save(path)
    if stats is not None:
        write_json_atomic(folder / "bank.stats.json", stats)
    _mark(folder, key)
    kept = sum(len(v) for v in bank.concepts.values())
    log(f"concepts: {kept} kept over {len(bank.concepts)} classes ({path})")
    return path


def class_name_bank(out: Path, class_names: list[str], log: Log) -> Path:
    """The bank of an object-masks run (masks.object_masks): the class names alone, since each image is masked by
    its class name; no language model is asked and nothing is validated."""
    from cft.concepts.bank import ConceptBank

    path = out / "concepts" / "class-names.json"
    bank = ConceptBank({name: [] for name in class_names}, provenance={"source": "class names (masks.object_masks)"})
    bank.save(path)
    log(f"concepts: not needed by object masks; {len(class_names)} class names ({path})")
    return path


def mask_stage(
    recipe: RunRecipe, bank_path: Path, segmenter: Segmenter, items: list[ImageItem], folder: Path, log: Log
) -> None:
    from cft.concepts.bank import ConceptBank
    from cft.grounding.build import build_masks, open_store, store_settings
    from cft.grounding.store import MaskStore

    if not items:
        return
    m = recipe.masks
    bank = ConceptBank.load(bank_path)
    differences = MaskStore(folder).differences(store_settings(segmenter, m.guidance, m.object_masks))
    if differences:  # made with other settings: kept beside, and the store is made anew
        aside = _set_aside(folder)
        log(f"masks {folder.name}: settings changed ({differences}); the previous store is kept in {aside}")
    store, _ = open_store(folder, bank, segmenter, m.guidance, m.object_masks)
    result = build_masks(
        items, bank, segmenter, store, mode=m.guidance, object_masks=m.object_masks,
        batch_size=m.batch_size, progress=True,
    )  # fmt: skip
    log(f"masks {folder.name}: {result.made} made, {result.skipped} already done")
    if result.without_concepts:
        raise CftError(
            f"the concept bank has no concepts for {', '.join(result.without_concepts[:5])}: their images have no "
            "masks; drop these classes from the data or relax concepts.validation"
        )


def finetune_stage(recipe: RunRecipe, seed: int, out: Path, start: str | None, log: Log) -> Path:
    """Fine-tune seed `seed` (cached; `start` is the sha256 of model.checkpoint's bytes, hashed once per run)."""
    from cft.train.recipe import resume_conflicts, run_finetune

    fr = finetune_recipe(recipe, seed, out)
    folder = out / f"seed{seed}" / "finetune"
    inputs = _finetune_inputs(fr, start)
    changed = resume_conflicts(fr, folder / "config.yaml") + _changed_inputs(folder, inputs)
    if changed:  # made with other settings or inputs: kept beside, never overwritten (more train.epochs continue)
        aside = _set_aside(folder)
        log(f"seed {seed}: fine-tuning settings changed ({', '.join(changed)}); the previous run is kept in {aside}")
    if not (folder / INPUTS_FILE).is_file():
        write_json_atomic(folder / INPUTS_FILE, inputs)
    key = _hash({"recipe": to_dict(fr), "inputs": inputs})
    if _done(folder, key):
        log(f"seed {seed}: fine-tuning cached")
        return folder
    resume = (folder / "state.pt").is_file()
    log(f"seed {seed}: fine-tuning{' (resumed)' if resume else ''}")
    run_finetune(fr, folder, resume=resume)
    _mark(folder, key)
    return folder


INPUTS_FILE = ".inputs.json"  # what a fine-tuning was made from besides its recipe


def _finetune_inputs(fr: FinetuneRecipe, start: str | None) -> dict[str, str | None]:
    """What a seed's fine-tuning is made from besides its recipe, each as a digest: the bytes of model.checkpoint
    (`start`: new weights at the same path) and the identity of the mask stores it reads (other segmenter settings,
    guidance or concepts)."""
    from cft.train import build_objective

    masks = None
    if build_objective(fr.objective).needs_mask:
        stores = [Path(p) for p in dict.fromkeys((fr.data.store, fr.data.val_store)) if p]
        masks = _hash([_store_identity(folder) for folder in stores])
    return {"model.checkpoint (its bytes)": start, "masks": masks}


def _store_identity(folder: Path) -> Any:
    """What a store's masks depend on: the settings all its entries share and each class's entry key."""
    from cft.grounding.store import IDENTITY_FIELDS, MaskStore

    if not (folder / "store.json").is_file():
        return None  # no store there (a folder source without separate val masks)
    description = MaskStore(folder).description()
    return {k: description.get(k) for k in (*IDENTITY_FIELDS, "class_keys")}


def _changed_inputs(folder: Path, inputs: dict[str, str | None]) -> list[str]:
    """The inputs that differ from those `folder`'s fine-tuning recorded (none recorded: a run from before the
    record, taken as made from these)."""
    try:
        recorded = json.loads((folder / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [name for name, value in inputs.items() if name in recorded and recorded[name] != value]


def evaluate_stage(recipe: RunRecipe, seed: int, run: Path, out: Path, num_classes: int, log: Log) -> dict[str, Any]:
    from cft.evaluate.checkpoints import evaluate_checkpoints

    path = out / f"seed{seed}" / "eval.json"
    settings = {k: v for k, v in to_dict(recipe.evaluate).items() if k != "original"}  # a seed's scores ignore it
    key = _hash({"evaluate": settings, "run": (run / ".done.json").read_text()})
    if _done(path.parent / "eval", key) and path.is_file():
        return json.loads(path.read_text())
    spec = _eval_spec(recipe, finetune_recipe(recipe, seed, out), run / "best.safetensors", num_classes)
    results = evaluate_checkpoints(
        dataclasses.replace(spec, split=str(run / "split.json")), path, log=_prefixed(log, f"seed {seed}")
    )
    _mark(path.parent / "eval", key)
    return results


def original_stage(recipe: RunRecipe, out: Path, num_classes: int, start: str | None, log: Log) -> dict[str, Any]:
    """`cft evaluate` of the weights fine-tuning starts from (the same for every seed), on every evaluation set,
    without a class split, keyed by `start` (the sha256 of model.checkpoint's bytes); {"skipped": reason} when those
    weights are partly random (a new head for these classes: no classifier to compare with)."""
    from cft.evaluate.checkpoints import evaluate_checkpoints

    fr = finetune_recipe(recipe, recipe.seeds[0], out)
    folder = out / "original"
    path = folder / "eval.json"
    key = _hash({"evaluate": to_dict(recipe.evaluate), "model": to_dict(fr.model), "classes": num_classes,
                 "size": fr.data.image_size, "seed": fr.train.seed, "checkpoint_sha256": start})  # fmt: skip
    if _done(folder, key) and path.is_file():
        return json.loads(path.read_text())
    weights = starting_weights(fr, num_classes)
    if isinstance(weights, str):
        result: dict[str, Any] = {"skipped": weights}
        write_json_atomic(path, result)
    else:
        from cft.models import save_checkpoint

        checkpoint = save_checkpoint(weights, folder / "original.safetensors")
        result = evaluate_checkpoints(
            _eval_spec(recipe, fr, checkpoint, num_classes), path, log=_prefixed(log, "original")
        )
    _mark(folder, key)
    return result


def starting_weights(fr: FinetuneRecipe, num_classes: int) -> nn.Module | str:
    """The model `cft finetune` starts from (built as it builds it), or why there is none to compare with: built
    under two seeds, a model whose weights differ has a part initialised at random."""
    import torch

    from cft.train.model import build_model

    models = []
    with torch.random.fork_rng(devices=[]):
        for seed in (fr.train.seed, fr.train.seed + 1):
            torch.manual_seed(seed)
            models.append(build_model(fr, num_classes, fr.data.image_size))
    first, second = (m.state_dict() for m in models)
    random = [name for name, tensor in first.items() if not torch.equal(tensor, second[name])]
    if random:
        return (
            f"fine-tuning starts from partly random weights ({', '.join(random[:3])}"
            f"{', ...' if len(random) > 3 else ''} differ between seeds: a new head or no pretrained weights), so "
            "there is no original model to compare with; compare with a baseline run instead (cft compare)"
        )
    return models[0]


def _eval_spec(recipe: RunRecipe, fr: FinetuneRecipe, checkpoint: Path, num_classes: int) -> EvalSpec:
    from cft.evaluate.checkpoints import EvalSpec
    from cft.evaluate.scoring import EvalOptions
    from cft.models import size_kwargs

    e = recipe.evaluate
    kwargs = {**size_kwargs(fr.model.name, num_classes, fr.data.image_size), **fr.model.kwargs}
    return EvalSpec(
        model=fr.model.name,
        eval_sets=dict(e.eval_sets),
        checkpoints=[str(checkpoint)],
        model_kwargs=kwargs,
        options=EvalOptions(batch_size=e.batch_size, workers=e.workers, device=e.device, progress=False),
    )


def _prefixed(log: Log, prefix: str) -> Log:
    return lambda line: log(f"{prefix}: {line}")


# ---- the run -------------------------------------------------------------------------------------------------
def run_pipeline(recipe: RunRecipe, out: str | Path, log: Log = print) -> dict[str, Any]:
    """Run every stage for every seed (cached), then aggregate; returns the aggregated results. The run folder
    is locked while this runs."""
    with exclusive_folder(out, "--out"):
        return _run_pipeline(recipe, Path(out), log)


def _run_pipeline(recipe: RunRecipe, out: Path, log: Log) -> dict[str, Any]:
    from cft.evaluate.compare import comparison_table
    from cft.evaluate.scoring import RESULTS_FORMAT, aggregate, markdown_table
    from cft.grounding.registry import build_segmenter
    from cft.train import build_objective
    from cft.train.sources.disk import choose_images

    save_config(recipe, out / "recipe.yaml", kind="run")
    first = finetune_recipe(recipe, recipe.seeds[0], out)
    everything = choose_images(dataclasses.replace(first.data, few_shot=None))
    needs_mask = build_objective(first.objective).needs_mask
    start = file_sha256(first.model.checkpoint) if first.model.checkpoint else None  # once: it may be GBs
    if needs_mask:
        segmenter = build_segmenter(recipe.masks.segmenter, **recipe.masks.options)
        by_class: dict[str, list] = {}
        for it in everything.train:
            by_class.setdefault(it.label, []).append(it)
        if recipe.masks.object_masks:  # each image's mask is its class name's: no concepts to propose
            bank_path = class_name_bank(out, sorted(by_class), log)
        else:
            bank_path = concept_stage(recipe, out, sorted(by_class), segmenter, by_class, log)
    else:  # a baseline without guidance (erm, no-guidance): no concepts, no segmenter, no masks
        log(f"concepts and masks: not needed by objective {first.objective.name!r}")
    runs: dict[str, dict[str, Any]] = {}
    for seed in recipe.seeds:
        data = finetune_recipe(recipe, seed, out).data
        choice = choose_images(data)
        write_bytes_atomic(
            out / f"seed{seed}" / "images.txt", "".join(f"{i.image_id}\n" for i in choice.train).encode()
        )
        if needs_mask:
            mask_stage(recipe, bank_path, segmenter, choice.train, out / "masks", log)
            separate = data.source == "folder" and data.val_root
            mask_stage(recipe, bank_path, segmenter, choice.val, out / ("masks-val" if separate else "masks"), log)
        run = finetune_stage(recipe, seed, out, start, log)
        if recipe.evaluate.eval_sets:
            result = evaluate_stage(recipe, seed, run, out, len(everything.class_names), log)
            runs[f"seed{seed}"] = result["runs"][str(run / "best.safetensors")]
    mean, std = aggregate(runs) if runs else ({}, {})
    results = {"format": RESULTS_FORMAT, "eval_sets": mean, "std": std, "runs": runs, "seeds": recipe.seeds}
    table = markdown_table(mean, std, len(runs)) if runs else ""
    if runs and recipe.evaluate.original:
        original = original_stage(recipe, out, len(everything.class_names), start, log)
        results["original"], gain = _gain(runs, original, out)
        if gain is not None:
            results["gain"] = gain["eval_sets"]
            table += "\n## Gain over the original model\n\n" + comparison_table(gain)
    write_json_atomic(out / "results.json", results)
    if runs:
        write_bytes_atomic(out / "results.md", table.encode())
    return results


def _gain(runs: dict[str, Any], original: dict[str, Any], out: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(what results.json says of the original, the paired comparison fine-tuned - original over the seeds)."""
    from cft.evaluate.compare import ResultsFile, compare_results

    if "skipped" in original:
        return {"skipped": original["skipped"]}, None
    scores = next(iter(original["runs"].values()))
    tuned = ResultsFile(out / "results.json", runs, by_seed=False)
    start = ResultsFile(out / "original" / "eval.json", {seed: scores for seed in runs}, by_seed=False)
    gain = compare_results(tuned, start)
    gain.update(a="fine-tuned (each seed's best checkpoint)", b="the original model (original/eval.json)")
    return {"eval_sets": scores}, gain


__all__ = ["RunRecipe", "load_run_recipe", "run_pipeline"]
