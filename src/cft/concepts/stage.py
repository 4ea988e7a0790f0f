"""The concept stage end to end: proposals to a bank, filtering and validation, with provenance recorded."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cft.concepts.bank import Concept, ConceptBank, read_hand_bank
from cft.concepts.filters import FilterConfig, filter_bank
from cft.concepts.llm import LLM, ResponseCache, Sampling
from cft.concepts.prompts import PROMPT_KINDS, messages_for
from cft.concepts.propose import propose
from cft.concepts.validate import ValidationConfig, validate_bank, world_validation_inputs
from cft.data.folders import ImageItem
from cft.errors import CftError
from cft.registry import Registry
from cft.segmenter import IdentifiedSegmenter

if TYPE_CHECKING:
    from cft.world import SyntheticWorld

LLMFactory = Callable[..., LLM]
LLM_BACKENDS: Registry[LLMFactory] = Registry("LLM backend")  # factory(model, base_url, key env, timeout, ...)


def register_llm_backend(name: str, description: str | None = None) -> Callable[[LLMFactory], LLMFactory]:
    """Decorator: register an LLM backend factory under `name` (`make_llm(name, ...)`); description: one line for
    `cft ls llm-backends` (None: the factory's docstring)."""
    return LLM_BACKENDS.register(name, description)


@register_llm_backend("openai", "an OpenAI-compatible chat server (base URL and model name)")
def _openai(model, base_url, api_key_env, timeout, concurrency, missing) -> LLM:
    if not base_url or not model:
        raise CftError(f"the openai backend needs {missing}")
    from cft.concepts.llm_openai import OpenAIBackend

    return OpenAIBackend(base_url, model, api_key_env=api_key_env, timeout=timeout, concurrency=concurrency)


@register_llm_backend("gguf", "a local GGUF model through llama-cpp-python (default: the packaged Gemma)")
def _gguf(model, base_url, api_key_env, timeout, concurrency, missing) -> LLM:
    from cft.concepts.llm_gguf import GGUFBackend

    return GGUFBackend(model)


def make_llm(
    backend: str,
    model: str | None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    concurrency: int = 4,
    missing: str = "a base URL and a model name",
) -> LLM:
    """The backend `backend` of LLM_BACKENDS: `openai` (needs base_url and model) or `gguf` (model: a .gguf
    file, None: the packaged Gemma); `missing` says how the caller names the openai backend's two settings."""
    if backend not in LLM_BACKENDS:
        raise CftError(f"LLM backend must be one of {', '.join(LLM_BACKENDS)}, got {backend!r}")
    return LLM_BACKENDS[backend](model, base_url, api_key_env, timeout, concurrency, missing)


def proposed_bank(
    backend: str,
    classes: list[str],
    sampling: Sampling,
    cache: ResponseCache,
    *,
    bank_file: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    concurrency: int = 4,
    progress: bool = False,
    names: tuple[str, str] = ("--bank FILE", "--base-url URL and --model NAME"),
) -> ConceptBank:
    """The one propose-or-read-bank flow: backend "bank" reads a hand-written bank file for `classes`; any LLM
    backend proposes. `names`: how the caller spells the bank file and the openai backend's two settings."""
    if backend != "bank" and backend not in LLM_BACKENDS:
        raise CftError(f"concepts backend must be one of bank, {', '.join(LLM_BACKENDS)}; got {backend!r}")
    if backend == "bank":
        if not bank_file:
            raise CftError(f"the bank backend needs {names[0]}")
        return hand_bank(bank_file, classes)
    llm = make_llm(backend, model, base_url, api_key_env, timeout, concurrency, missing=names[1])
    return propose_bank(llm, classes, sampling, cache, concurrency, progress)


def bank_from_proposals(proposals: dict[str, dict[str, list[str]]], provenance: dict[str, Any]) -> ConceptBank:
    """{class: {kind: [concept]}} to a bank; a concept proposed under several kinds keeps the first."""
    concepts: dict[str, list[Concept]] = {}
    for cls, by_kind in proposals.items():
        seen: set[str] = set()
        concepts[cls] = []
        for kind, names in by_kind.items():
            for name in names:
                if name.lower() not in seen:
                    seen.add(name.lower())
                    concepts[cls].append(Concept(name=name, kind=kind))
    return ConceptBank(concepts=concepts, dropped={c: [] for c in concepts}, provenance=provenance)


def propose_bank(
    llm: LLM,
    classes: list[str],
    sampling: Sampling,
    cache: ResponseCache | None,
    concurrency: int = 4,
    progress: bool = False,
) -> ConceptBank:
    """Ask `llm` the three questions for every class; the bank records backend, model, prompts and sampling."""
    if not classes:
        raise CftError("no classes to propose concepts for")
    proposals = propose(llm, classes, PROMPT_KINDS, sampling, cache, concurrency, progress)
    empty = [c for c, by_kind in proposals.items() if not any(by_kind.values())]
    if empty:
        print(
            f"cft: note: no usable answer for {', '.join(empty[:10])} after retries; left empty and not cached "
            "(a rerun asks again)",
            file=sys.stderr,
        )
    provenance = {
        "backend": llm.backend,
        "model": llm.model,
        "prompts": {kind: messages_for(kind, "{class}") for kind in PROMPT_KINDS},
        "sampling": asdict(sampling),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return bank_from_proposals(proposals, provenance)


def hand_bank(path: str, classes: list[str] | None) -> ConceptBank:
    """A hand-written bank file, restricted to `classes` when given (each must be in the file)."""
    bank = read_hand_bank(path)
    if classes:
        missing = [c for c in classes if c not in bank.concepts]
        if missing:
            raise CftError(f"concept bank {path} has no concepts for {', '.join(missing[:5])}")
        bank.concepts = {c: bank.concepts[c] for c in classes}
        bank.dropped = {c: bank.dropped.get(c, []) for c in classes}
    bank.provenance.setdefault("backend", "bank")
    bank.provenance.setdefault("source", str(path))
    return bank


def filter_stage(bank: ConceptBank, class_names: list[str], cfg: FilterConfig) -> ConceptBank:
    out = filter_bank(bank, class_names, cfg)
    out.provenance["filter_config"] = asdict(cfg)
    return out


def validate_in_world(
    bank: ConceptBank,
    cfg: ValidationConfig,
    world_seed: int = 0,
    threshold: float = 0.5,
    world: SyntheticWorld | None = None,
    segmenter: IdentifiedSegmenter | None = None,
) -> tuple[ConceptBank, dict[str, Any]]:
    """Validate a bank of world classes on the val images of `world` (default: the default world with
    `world_seed`) with a world segmenter (default: the world's, which reads a phrase as a VLM would; `threshold`
    is its embedding mode's)."""
    from cft.world.segmenter import WorldSegmenter
    from cft.world.world import build_world

    world = world or build_world({"seed": world_seed}, "world")
    world_seed = world.config.seed
    unknown = [c for c in bank.concepts if c not in world.classes]
    if unknown:
        raise CftError(f"validation in the world needs world classes; not world classes: {', '.join(unknown[:5])}")
    images, objects = world_validation_inputs(world, "val", list(bank.concepts), cfg.images_per_class)
    segmenter = segmenter or WorldSegmenter(threshold)
    out, stats = validate_bank(bank, images, segmenter, objects, cfg)
    out.provenance["validation"] = {"config": asdict(cfg), "segmenter": segmenter.identity(), "world_seed": world_seed}
    return out, stats


def validate_on_images(
    bank: ConceptBank, images: Mapping[str, Sequence[ImageItem]], segmenter: Any, cfg: ValidationConfig
) -> tuple[ConceptBank, dict[str, Any]]:
    """Validation on real images (any segmenter): each class's first P images; the object mask is what the
    segmenter finds for the class name itself (the paper's coverage rule needs an object mask; this is the
    object-mask mode of `cft masks`)."""
    import numpy as np

    from cft.data.images import load_image

    arrays: dict[str, list] = {}
    objects: dict[str, list] = {}
    for cls in bank.concepts:
        items = images.get(cls, [])[: cfg.images_per_class]
        if not items:
            raise CftError(f"concept validation: no training images of class {cls!r}")
        arrays[cls] = [np.asarray(load_image(it.path)) for it in items]
        found = segmenter.segment(arrays[cls], [[cls]] * len(items))
        objects[cls] = [f[cls][0] for f in found]
    bank, stats = validate_bank(bank, arrays, segmenter, objects, cfg)
    identity = segmenter.identity() if hasattr(segmenter, "identity") else {"name": segmenter.name}
    bank.provenance["validation"] = {"config": asdict(cfg), "segmenter": identity}
    return bank, stats
