"""Typed configs: dataclasses filled from YAML files and `key.sub=value` overrides, checked field by field.

Unknown keys and wrong types are errors that name the field; the resolved config is saved beside every
output so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
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


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from a plain dict; reject unknown keys and values of the wrong type."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise CftError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CftError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
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
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):  # PyYAML reads 1e-4 as a string
            return float(value)
        raise CftError(f"{where} must be a number, got {value!r}")
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise CftError(f"{where} must be {hint.__name__}, got {value!r}")
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            raise CftError(f"{where} must be one of {list(typing.get_args(hint))}, got {value!r}")
    return value


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
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise CftError(f"override {item!r}: value is not valid YAML ({err})") from None
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
        try:
            kwargs[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise CftError(f"--model-arg {key}: cannot read {value!r} as a YAML value ({err})") from None
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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise CftError(f"config file {path} is not valid YAML: {err}") from None
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


def load_config_data(
    source: str | Path | None, overrides: Sequence[str] = (), base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one way every config is read: `base` < the YAML file or packaged recipe `source` < `--set` overrides.
    The typed checks are the caller's (`from_dict` into its dataclass)."""
    data = merge(base or {}, read_yaml(resolve_config(source)) if source is not None else {})
    return merge(data, parse_overrides(list(overrides)))


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults of `cls` < `base` < the YAML file (or packaged recipe) < overrides, checked into `cls`."""
    data = load_config_data(path, overrides or (), base)
    return from_dict(cls, data, where=str(path) if path else "config")


def save_config(obj: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_bytes_atomic(path, yaml.safe_dump(to_dict(obj), sort_keys=False).encode())
