"""The concept stage on the synthetic world: each class's concepts from the language model (propose, filter,
validate in the world) or from the world's own part names.

The package ships the packaged Gemma 3 270M's answers for the world's classes under the default sampling (a
read-only response cache), so the default needs neither llama-cpp-python nor a generation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cft.concepts.bank import ConceptBank
from cft.concepts.filters import FilterConfig
from cft.concepts.llm import Sampling
from cft.concepts.validate import ValidationConfig
from cft.errors import CftError, FieldError
from cft.io import write_json_atomic
from cft.world import SyntheticWorld
from cft.world.segmenter import MODES as SEGMENTER_MODES
from cft.world.segmenter import WorldSegmenter

CONCEPT_SOURCES = ("llm", "parts")
DEFAULT_EXCLUDED_PARTS = ["body"]  # the world part every class shares: no concept of any class
SHIPPED_CONCEPTS = "world_concepts"  # under cft/assets: the packaged model's answers (a response cache)


@dataclass
class WorldConceptConfig:
    """Where each class's concepts come from. `llm`: the concept stage (cft.concepts) with the gguf backend
    (the packaged Gemma 3 270M unless `model` names a .gguf file), its filters, then validation in the world,
    which drops the concepts that are not drawn there. The package ships the packaged model's answers for the
    world's classes under the default sampling (a read-only response cache), so the default demo needs neither
    llama-cpp-python nor a generation; other settings generate and cache under OUT/concepts. `parts`: each class's
    own part names, minus `exclude_parts` (no language model)."""

    source: str = "llm"
    model: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    filters: FilterConfig = field(default_factory=FilterConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    exclude_parts: list[str] | None = None  # source parts: parts that are no concept (null: body, shared by all)
    threshold: float = 0.5  # the embedding segmenter's phrase-to-part similarity threshold
    # the world segmenter: vlm (a phrase read as an open-vocabulary detector reads it: cft.world.vocabulary) or
    # embedding (a phrase gets its class's nearest part name at cosine >= threshold, even one that names nothing)
    segmenter: str = "vlm"

    def __post_init__(self) -> None:
        if self.source not in CONCEPT_SOURCES:
            raise FieldError("source", f"must be one of {', '.join(CONCEPT_SOURCES)}, got {self.source!r}")
        if self.segmenter not in SEGMENTER_MODES:
            raise FieldError("segmenter", f"must be one of {', '.join(SEGMENTER_MODES)}, got {self.segmenter!r}")
        if self.source == "llm" and self.exclude_parts is not None:
            raise FieldError("exclude_parts", "applies to source parts only (llm concepts are validated instead)")

    def make_segmenter(self) -> WorldSegmenter:
        """The world segmenter these settings describe (the one home of its construction)."""
        return WorldSegmenter(self.threshold, self.filters.text_model, mode=self.segmenter)

    def excluded_parts(self) -> list[str]:
        """The parts that are no concept with source parts (default: body, which every class shares)."""
        return DEFAULT_EXCLUDED_PARTS if self.exclude_parts is None else list(self.exclude_parts)


def shipped_concept_answers() -> Path:
    """The packaged model's answers for the world's classes (made by `cft concepts propose --classes world
    --backend gguf --cache src/cft/assets/world_concepts --out ...` with the default sampling)."""
    return Path(str(resources.files("cft") / "assets" / SHIPPED_CONCEPTS))


def world_concepts(world: SyntheticWorld, cfg: WorldConceptConfig, out: Path | None = None) -> dict[str, list[str]]:
    """Each class's concept phrases (see WorldConceptConfig); with `source="llm"` and `out`, the bank, its
    per-concept validation statistics and the dropped concepts with their reasons are written to OUT/concepts/
    (without `out`, new answers are cached only for this call)."""
    if cfg.source == "parts":
        return part_concepts(world, cfg.excluded_parts())
    if out is None:
        with tempfile.TemporaryDirectory() as scratch:
            return _llm_concepts(world, cfg, Path(scratch) / "concepts", save=False)
    return _llm_concepts(world, cfg, out / "concepts", save=True)


def part_concepts(world: SyntheticWorld, exclude_parts: Sequence[str]) -> dict[str, list[str]]:
    """Each class's own part names minus `exclude_parts` (each must be a part of some class)."""
    known = {p for c in world.classes for p in world.part_names(c)}
    unknown = sorted(set(exclude_parts) - known)
    if unknown:
        raise CftError(
            f"concepts.exclude_parts names {', '.join(unknown)}, not a part of any class; "
            f"parts: {', '.join(sorted(known))}"
        )
    concepts = {c: [p for p in world.part_names(c) if p not in exclude_parts] for c in world.classes}
    empty = [c for c, names in concepts.items() if not names]
    if empty:
        raise CftError(f"concepts.exclude_parts leaves no concept for {', '.join(empty)}")
    return concepts


def validated_llm_bank(world: SyntheticWorld, cfg: WorldConceptConfig, cache: Path) -> tuple[ConceptBank, dict]:
    """The language model's bank for the world's classes (answers cached under `cache`, the shipped ones read
    first), filtered and validated in `world`; a class may be left without concepts. Returns it and the
    validation statistics."""
    from cft.concepts.llm import ResponseCache
    from cft.concepts.llm_gguf import GGUFBackend
    from cft.concepts.stage import filter_stage, propose_bank, validate_in_world

    answers = ResponseCache(cache, read_only=[shipped_concept_answers()])
    bank = propose_bank(GGUFBackend(cfg.model), list(world.classes), cfg.sampling, answers)
    bank = filter_stage(bank, list(world.classes), cfg.filters)
    return validate_in_world(bank, cfg.validation, world=world, segmenter=cfg.make_segmenter())


def _llm_concepts(world: SyntheticWorld, cfg: WorldConceptConfig, folder: Path, save: bool) -> dict[str, list[str]]:
    bank, stats = validated_llm_bank(world, cfg, folder / "llm-cache")
    if save:
        bank.save(folder / "bank.json")
        write_json_atomic(folder / "bank.stats.json", stats)
    empty = [c for c in world.classes if not bank.names(c)]
    if empty:
        where = f" (see {folder / 'bank.json'})" if save else ""
        raise CftError(
            f"concept validation left no concepts for {', '.join(empty)}{where}; "
            "lower concepts.validation.min_occurrence or set concepts.source=parts"
        )
    return bank.as_names()
