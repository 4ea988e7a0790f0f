"""The concept bank: each class's concepts (name, weight, kind, stats), what was dropped and why, and provenance.

On disk (JSON, written atomically):

    {"concepts": {CLASS: [{"name": str, "weight": float, "kind": str, "stats": {...}}, ...]},
     "dropped": {CLASS: [{"name": str, "reason": str}, ...]},
     "provenance": {...}}

"stats" is written only when a concept has some. A hand-written bank (`read_hand_bank`, JSON or YAML) is simpler:
`{class: [name | [name, weight], ...]}`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cft.errors import CftError
from cft.io import write_json_atomic

KINDS = ("important", "around", "superclass", "bank")


@dataclass
class Concept:
    """One visual concept of a class. `kind` says where it came from: the three LLM questions or a hand bank."""

    name: str
    weight: float = 1.0
    kind: str = "bank"
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise CftError(f"a concept needs a non-empty name, got {self.name!r}")
        if not _is_number(self.weight):
            raise CftError(f"concept {self.name!r}: weight must be a number, got {self.weight!r}")
        self.weight = float(self.weight)
        if self.kind not in KINDS:
            raise CftError(f"concept {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "weight": self.weight, "kind": self.kind}
        if self.stats:
            d["stats"] = dict(self.stats)
        return d


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class ConceptBank:
    """concepts[class] in proposal order; dropped[class] = [{"name", "reason"}]; provenance: free-form record."""

    concepts: dict[str, list[Concept]] = field(default_factory=dict)
    dropped: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.concepts)

    def names(self, cls: str) -> list[str]:
        """The concept names of a class, in order."""
        return [c.name for c in self.concepts.get(cls, [])]

    def as_names(self) -> dict[str, list[str]]:
        """{class: [concept name, ...]}: what a segmenter needs."""
        return {cls: self.names(cls) for cls in self.concepts}

    def weights(self, cls: str) -> dict[str, float]:
        return {c.name: c.weight for c in self.concepts.get(cls, [])}

    def copy(self) -> ConceptBank:
        return copy.deepcopy(self)

    def drop(self, cls: str, name: str, reason: str) -> Concept:
        """Remove concept `name` from class `cls` and record why in `dropped`; returns the removed concept."""
        kept = self.concepts.get(cls)
        if kept is None:
            raise CftError(f"cannot drop {name!r}: no class {cls!r} in the concept bank")
        for i, c in enumerate(kept):
            if c.name == name:
                del kept[i]
                self.dropped.setdefault(cls, []).append({"name": name, "reason": reason})
                return c
        raise CftError(f"cannot drop {name!r}: class {cls!r} has no such concept (has: {', '.join(self.names(cls))})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": {cls: [c.to_dict() for c in cs] for cls, cs in self.concepts.items()},
            "dropped": {
                cls: [{"name": d["name"], "reason": d["reason"]} for d in ds] for cls, ds in self.dropped.items()
            },
            "provenance": copy.deepcopy(self.provenance),
        }

    def save(self, path: str | Path) -> Path:
        """Write the bank as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "concept bank") -> ConceptBank:
        """Build and validate a bank from its JSON layout; errors name `source` and the field."""
        if not isinstance(data, dict):
            raise CftError(f"{source}: expected a JSON object with 'concepts', got {type(data).__name__}")
        if "concepts" not in data:
            raise CftError(f"{source}: missing field 'concepts'")
        raw = data["concepts"]
        if not isinstance(raw, dict):
            raise CftError(f"{source}: 'concepts' must be an object {{class: [concept, ...]}}")
        concepts: dict[str, list[Concept]] = {}
        for klass, items in raw.items():
            where = f"{source}: concepts[{klass!r}]"
            if not isinstance(items, list):
                raise CftError(f"{where} must be a list of concepts, got {type(items).__name__}")
            out = []
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise CftError(f"{where}[{i}] must be an object with 'name', got {item!r}")
                name = item.get("name")
                if not isinstance(name, str) or not name.strip():
                    raise CftError(f"{where}[{i}] has no 'name' (a non-empty string): {item!r}")
                weight = item.get("weight", 1.0)
                if not _is_number(weight):
                    raise CftError(f"{where}[{i}] ({name!r}): 'weight' must be a number, got {weight!r}")
                kind = item.get("kind", "bank")
                if kind not in KINDS:
                    raise CftError(f"{where}[{i}] ({name!r}): 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
                stats = item.get("stats", {})
                if not isinstance(stats, dict):
                    raise CftError(f"{where}[{i}] ({name!r}): 'stats' must be an object, got {stats!r}")
                out.append(Concept(name, float(weight), kind, dict(stats)))
            concepts[str(klass)] = out
        dropped_raw = data.get("dropped", {})
        if not isinstance(dropped_raw, dict):
            raise CftError(f"{source}: 'dropped' must be an object {{class: [{{name, reason}}, ...]}}")
        dropped: dict[str, list[dict[str, str]]] = {}
        for klass, items in dropped_raw.items():
            if not isinstance(items, list):
                raise CftError(f"{source}: dropped[{klass!r}] must be a list, got {type(items).__name__}")
            for i, d in enumerate(items):
                if not (isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("reason"), str)):
                    raise CftError(f"{source}: dropped[{klass!r}][{i}] needs string 'name' and 'reason', got {d!r}")
            dropped[str(klass)] = [{"name": d["name"], "reason": d["reason"]} for d in items]
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise CftError(f"{source}: 'provenance' must be an object, got {type(provenance).__name__}")
        return cls(concepts, dropped, dict(provenance))

    @classmethod
    def load(cls, path: str | Path) -> ConceptBank:
        """Read and validate a bank written by `save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CftError(f"concept bank {path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CftError(f"concept bank {path}: not valid JSON ({e})") from None
        bank = cls.from_dict(data, f"concept bank {path}")
        if not bank.concepts:
            raise CftError(f"concept bank {path} has no classes")
        return bank


def read_hand_bank(path: str | Path) -> ConceptBank:
    """A hand-written bank, JSON (.json) or YAML (.yaml/.yml): {class: [name | [name, weight], ...]}.

    Every concept gets kind "bank"; names must be unique within a class and weights finite and positive. A bank
    that cft wrote ({"concepts": {class: [{"name", ...}]}, ...}) is read as it is, kinds and weights kept.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise CftError(f"concept bank {path}: use a .json, .yaml or .yml file, got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CftError(f"concept bank {path}: no such file") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CftError(f"concept bank {path}: not valid JSON ({e})") from None
    else:
        from cft.config import load_yaml

        data = load_yaml(text, f"concept bank {path}")
    if not isinstance(data, dict) or not data:
        raise CftError(f"concept bank {path}: expected a mapping {{class: [concept, ...]}} with at least one class")
    if isinstance(data.get("concepts"), dict) and all(isinstance(v, list) for v in data["concepts"].values()):
        if all(isinstance(c, dict) for v in data["concepts"].values() for c in v):
            return ConceptBank.from_dict(data, source=f"concept bank {path}")
    concepts: dict[str, list[Concept]] = {}
    for klass, items in data.items():
        if not isinstance(klass, str) or not klass.strip():
            raise CftError(f"concept bank {path}: class names must be non-empty strings, got {klass!r}")
        if not isinstance(items, list):
            raise CftError(f"concept bank {path}: class {klass!r} must map to a list of concepts, got {items!r}")
        seen: set[str] = set()
        out = []
        for i, item in enumerate(items):
            where = f"concept bank {path}: class {klass!r}, item {i} ({item!r})"
            if isinstance(item, str):
                name, weight = item, 1.0
            elif isinstance(item, list) and len(item) == 2:
                name, weight = item
            else:
                raise CftError(f"{where}: write a concept as a name or as [name, weight]")
            if not isinstance(name, str) or not name.strip():
                raise CftError(f"{where}: the name must be a non-empty string")
            if not _is_number(weight) or weight <= 0:
                raise CftError(f"{where}: the weight must be a positive number")
            name = name.strip()
            if name.lower() in seen:
                raise CftError(f"{where}: {name!r} appears twice in class {klass!r}")
            seen.add(name.lower())
            out.append(Concept(name, float(weight), "bank"))
        concepts[klass.strip()] = out
    return ConceptBank(concepts, {}, {"source": "hand", "file": str(path)})
