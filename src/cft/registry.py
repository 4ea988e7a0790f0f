"""The one registry type: a dict from name to builder, filled by `register` (decorator) or `add`, each name with a
one-line description (`cft ls` prints them)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """Names to builders of one kind ("objective", "segmenter", ...); registering a name twice is a bug.

    describe: how to read an entry's description from its value when none was registered with it (default: the
    docstring of a function or class value).
    """

    def __init__(self, kind: str, describe: Callable[[T], str | None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._describe = describe or _docstring
        self._descriptions: dict[str, str] = {}

    def __setitem__(self, name: str, value: T) -> None:
        super().__setitem__(name, value)
        self._descriptions.pop(name, None)  # a plain assignment is described by its value

    def add(self, name: str, value: T, description: str | None = None) -> T:
        """Register `value` under `name`, described by `description` (None: read from the value)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = value
        if description:
            self._descriptions[name] = one_line(description)
        return value

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda value: self.add(name, value, description)

    def description(self, name: str) -> str:
        """The one-line description of entry `name` ("" when it has none)."""
        if name not in self:
            raise KeyError(name)
        return self._descriptions.get(name) or one_line(self._describe(self[name]) or "")

    def descriptions(self) -> dict[str, str]:
        """Every name with its description, in registration order."""
        return {name: self.description(name) for name in self}


def one_line(text: str) -> str:
    """The first paragraph of `text` on one line."""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def _docstring(value: Any) -> str | None:
    return value.__doc__ if inspect.isroutine(value) or inspect.isclass(value) else None
