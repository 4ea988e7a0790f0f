"""Typed configs: dataclasses filled from YAML files and `key.sub=value` overrides, checked field by field.

Unknown keys and wrong types are errors that name the field; the resolved config is saved beside every
output so a run can be repeated exactly.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cft.errors import CftError, FieldError
from cft.io import write_bytes_atomic

T = TypeVar("T")
# Numbers YAML 1.2 reads as floats but PyYAML (YAML 1.1) leaves as strings: 1e-4, 5E3 (no dot in the mantissa).
_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


MAX_YAML_NODES = 1_000_000  # a YAML document's size with every alias expanded: refuses "billion laughs" files


def load_yaml(text: str, where: str) -> Any:
    """The one YAML reader (safe tags only): aliases are counted as what they expand to, so a document that
    would grow past MAX_YAML_NODES (an alias bomb) is refused before it is built. A syntax error is a
    CftError naming `where`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            raise CftError(
                f"{where}: its aliases expand to more than {MAX_YAML_NODES:,} YAML nodes; refusing to read it"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise CftError(f"{where} is not valid YAML: {err}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in the document once every alias is expanded (a shared node counts at each use)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_NODES + 1  # a node that contains itself expands without end
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_YAML_NODES + 1)
    return memo[id(node)]


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from a plain dict; reject unknown keys and values of the wrong type. A class with a
    `config_variant(data, where)` classmethod names the dataclass (a subclass) that `data` is read into."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise CftError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    # a section whose dataclass depends on one of its keys (objective.name, data.source): the class picks it
    choose = getattr(cls, "config_variant", None)
    if choose is not None:
        variant = choose(data, where)
        if variant is not cls:
            return from_dict(variant, data, where)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    renamed = getattr(cls, "RENAMED", {})  # old key -> new key: a config written before a rename says what to write
    removed = getattr(cls, "REMOVED", {})  # old key -> why it went
    for old in unknown:
        if old in renamed:
            raise CftError(f"{where}.{old} was renamed: write {renamed[old]} instead")
        if old in removed:
            raise CftError(f"{where}.{old} was removed ({removed[old]}): delete it")
    if unknown:
        raise CftError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    for name, value in values.items():
        bounds = fields[name].metadata.get("range")
        if bounds is not None:
            bounds.check(f"{where}.{name}", value)
    try:
        return cls(**values)
    except FieldError as err:
        raise CftError(f"{where}.{err.field} {err.message}") from None
    except CftError:
        raise
    except (TypeError, ValueError) as err:
        raise CftError(f"{where}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except CftError as err:
                errors.append(str(err))
        raise CftError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise CftError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise CftError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise CftError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):  # PyYAML reads 1e-4 as a string
            value = float(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CftError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):  # .nan / .inf: every float field of every config is finite
            raise CftError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise CftError(f"{where} must be {hint.__name__}, got {value!r}")
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            raise CftError(f"{where} must be one of {list(typing.get_args(hint))}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number (None: unbounded on that side); `check` applies them to a number or to each item of a
    list of numbers."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def describe(self) -> str:
        bounds = ((">", self.gt), (">=", self.ge), ("<=", self.le))
        parts = [f"{op} {bound:g}" for op, bound in bounds if bound is not None]
        return "a finite number " + " and ".join(parts)

    def check(self, where: str, value: Any) -> None:
        if isinstance(value, list | tuple):
            for i, item in enumerate(value):
                self.check(f"{where}[{i}]", item)
            return
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return
        ok = (
            math.isfinite(value)
            and (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.le is None or value <= self.le)
        )
        if not ok:
            raise CftError(f"{where} must be {self.describe()}, got {value!r}")


def bounded(default: Any = dataclasses.MISSING, *, gt: float | None = None, ge: float | None = None,
            le: float | None = None) -> Any:  # fmt: skip
    """A dataclass field whose value `from_dict` checks against the bounds (a list: each item); a mutable default
    (a list) is copied per instance."""
    meta = {"range": Range(gt, ge, le)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def number_arg(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """An argparse `type` for a number flag with these bounds (finite always): a bad value is a usage error."""
    bounds = Range(gt, ge, le)

    def parse(text: str) -> float:
        try:
            value = float(text)
            bounds.check("value", value)
        except (ValueError, CftError):
            raise argparse.ArgumentTypeError(f"expected {bounds.describe()}, got {text!r}") from None
        return value

    return parse


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-able data (tuples become lists)."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """`["train.lr=1e-4", "model.name=vit_small_patch16_224"]` to a nested dict; values parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CftError(f"override {item!r} must look like key.sub=value")
        value = load_yaml(raw, f"override {item!r}: its value") if raw.strip() else ""
        *parents, leaf = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CftError(f"override {item!r} conflicts with an earlier override of {part}")
        node[leaf] = value
    return nested


def parse_model_args(items: Sequence[str]) -> dict[str, object]:
    """`--model-arg` KEY=VALUE strings to keyword arguments, each VALUE parsed as a YAML scalar or list."""
    kwargs: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CftError(f"--model-arg expects KEY=VALUE with KEY a Python name, got {item!r}")
        kwargs[key] = load_yaml(value, f"--model-arg {key}: {value!r}")
        count = kwargs[key]
        if key in ("num_classes", "num_labels") and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise CftError(f"--model-arg {key} must be an integer >= 1, got {value!r}")
    return kwargs


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values in `update` win; nested mappings merge."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CftError(f"config file {path} does not exist")
    data = load_yaml(path.read_text(), f"config file {path}") or {}
    if not isinstance(data, dict):
        raise CftError(f"config file {path} must hold a mapping at the top level")
    return data


def packaged_recipes() -> dict[str, Path]:
    """The recipes shipped inside the package by name ("world-cft", "imagenet/vit-b16", ...) -> file."""
    root = Path(str(resources.files("cft") / "recipes"))
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def resolve_config(source: str | Path) -> Path:
    """A config file: `source` itself when it is a file, else the packaged recipe of that name."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    recipes = packaged_recipes()
    name = str(source).removesuffix(".yaml").removeprefix("recipes/")
    if name in recipes:
        return recipes[name]
    if path.suffix in (".yaml", ".yml") or path.is_absolute():
        raise CftError(f"config file {path} does not exist (packaged recipes: {', '.join(recipes)})")
    raise CftError(
        f"config {str(source)!r} is neither a file nor a packaged recipe; packaged: {', '.join(recipes)} "
        "(`cft recipes ls`)"
    )


# what a recipe is for, declared by its top-level `kind:` line -> the command that runs it
RECIPE_KINDS = {
    "finetune": "cft finetune --config",
    "run": "cft run",
    "demo": "cft demo --config",
    "decoy-demo": "cft demo --data decoy --config",
}


def declared_kind(data: dict[str, Any], where: str) -> str | None:
    """Pop and check a recipe's `kind:` (None when it declares none)."""
    kind = data.pop("kind", None)
    if kind is not None and kind not in RECIPE_KINDS:
        raise CftError(f"{where}: kind must be one of {', '.join(RECIPE_KINDS)}, got {kind!r}")
    return kind


def load_config_data(
    source: str | Path | None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """The one way every config is read: `base` < the YAML file or packaged recipe `source` < `--set` overrides.
    A file that declares another `kind:` than the caller's is refused with the command that runs it. The typed
    checks are the caller's (`from_dict` into its dataclass)."""
    file_data: dict[str, Any] = {}
    if source is not None:
        path = resolve_config(source)
        file_data = read_yaml(path)
        declared = declared_kind(file_data, f"config file {path}")
        if kind is not None and declared is not None and declared != kind:
            raise CftError(
                f"config file {path} is a {declared} recipe, not a {kind} one; run it with `{RECIPE_KINDS[declared]}`"
            )
    deletions = [item for item in overrides if item.startswith("~")]
    values = [item for item in overrides if not item.startswith("~")]
    return merge(delete_keys(merge(base or {}, file_data), deletions), parse_overrides(values))


def delete_keys(data: dict[str, Any], deletions: Sequence[str]) -> dict[str, Any]:
    """`~key.sub` overrides (as Hydra writes them): delete key.sub from the config read so far, the file, before the
    `key=value` overrides apply; e.g. `~objective` then `objective.name=erm` replaces a whole section."""
    out = copy.deepcopy(data)
    for item in deletions:
        path = item[1:].strip()
        if "=" in path or not path:
            raise CftError(f"override {item!r}: a deletion is ~key.sub, without a value")
        *parents, leaf = path.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise CftError(f"override {item!r}: {path} is not in the config, so there is nothing to delete")
        del node[leaf]
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults of `cls` < `base` < the YAML file (or packaged recipe) < overrides, checked into `cls`."""
    data = load_config_data(path, overrides or (), base)
    return from_dict(cls, data, where=str(path) if path else "config")


def save_config(obj: Any, path: str | Path, kind: str | None = None) -> Path:
    """Write the resolved config as YAML, atomically; `kind` (a RECIPE_KINDS name) heads it, so the file can be
    given back to the command that runs it."""
    data = ({"kind": kind} if kind else {}) | to_dict(obj)
    return write_bytes_atomic(path, yaml.safe_dump(data, sort_keys=False).encode())
