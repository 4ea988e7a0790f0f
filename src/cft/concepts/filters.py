"""Concept filters (docs/method.md, step 1): too long, the class name itself, too close to a class, near-duplicates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cft.concepts.bank import ConceptBank
from cft.errors import CftError
from cft.sentences import DEFAULT_TEXT_MODEL, similarity

Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class FilterConfig:
    max_length: int = 30  # characters
    class_similarity: float = 0.85  # drop a concept this similar to ANY class name
    duplicate_similarity: float = 0.9  # of two concepts this similar, keep the first
    text_model: str = DEFAULT_TEXT_MODEL

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise CftError(f"filters: max_length must be a positive integer, got {self.max_length!r}")
        for name in ("class_similarity", "duplicate_similarity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0:
                raise CftError(f"filters: {name} must be a number in [-1, 1], got {v!r}")


def _matrix(sim: Similarity, a: list[str], b: list[str]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)), np.float32)
    m = np.asarray(sim(a, b), dtype=np.float64)
    if m.shape != (len(a), len(b)):
        raise CftError(f"similarity returned shape {m.shape}, expected {(len(a), len(b))}")
    return m


def filter_bank(
    bank: ConceptBank, all_class_names: Sequence[str], cfg: FilterConfig | None = None, sim: Similarity | None = None
) -> ConceptBank:
    """A filtered copy of `bank`; each dropped concept goes to `dropped[class]` with its reason.

    Per class, in proposal order, a concept is dropped when it is longer than `max_length` characters, equals the
    class name (case-insensitive), equals or has similarity >= `class_similarity` to any class name (the bank's
    classes and `all_class_names`), or is a near-duplicate (same text ignoring case, or similarity >=
    `duplicate_similarity`) of an earlier concept of the class that was kept. `sim(a, b)` gives the similarity
    matrix (len(a), len(b)); by default sentence-embedding cosine with `cfg.text_model`.
    """
    cfg = cfg or FilterConfig()
    if sim is None:
        model = cfg.text_model

        def sim(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
            return similarity(a, b, model)

    out = bank.copy()
    class_names = list(dict.fromkeys([*all_class_names, *bank.concepts]))
    lower_class = {c.lower(): c for c in class_names}
    everything = list(dict.fromkeys(c.name for cs in bank.concepts.values() for c in cs))
    to_class = _matrix(sim, everything, class_names)
    row = {name: i for i, name in enumerate(everything)}
    counts = {"in": len(everything), "dropped": 0}

    for cls, concepts in bank.concepts.items():
        names = [c.name for c in concepts]
        mutual = _matrix(sim, names, names)
        kept: list[int] = []
        for i, name in enumerate(names):
            reason = None
            key = name.strip().lower()
            if len(name) > cfg.max_length:
                reason = f"longer than {cfg.max_length} characters ({len(name)})"
            elif key == cls.strip().lower():
                reason = "is the class name"
            elif key in lower_class:
                reason = f"is the name of class {lower_class[key]!r}"
            else:
                s = to_class[row[name]]
                j = int(np.argmax(s)) if len(s) else -1
                if j >= 0 and s[j] >= cfg.class_similarity:
                    reason = f"similar to class {class_names[j]!r} ({s[j]:.2f})"
                else:
                    for k in kept:
                        if names[k].strip().lower() == key:
                            reason = f"duplicate of {names[k]!r}"
                            break
                        if mutual[i, k] >= cfg.duplicate_similarity or mutual[k, i] >= cfg.duplicate_similarity:
                            reason = f"near-duplicate of {names[k]!r} ({max(mutual[i, k], mutual[k, i]):.2f})"
                            break
            if reason is None:
                kept.append(i)
            else:
                _drop_nth(out, cls, len(kept), name, reason)  # the earlier dropped ones are gone already
                counts["dropped"] += 1
    out.provenance = {**out.provenance, "filters": {**asdict(cfg), **counts}}
    return out


def _drop_nth(bank: ConceptBank, cls: str, index: int, name: str, reason: str) -> None:
    """Drop the concept at `index` of the filtered list (names may repeat, so drop by position, not by name)."""
    concepts = bank.concepts[cls]
    assert concepts[index].name == name
    del concepts[index]
    bank.dropped.setdefault(cls, []).append({"name": name, "reason": reason})
