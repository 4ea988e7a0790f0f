"""The one registry type: a dict from name to builder, filled by `register` (decorator) or `add`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """Names to builders of one kind ("objective", "segmenter", ...); registering a name twice is a bug."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, value: T) -> T:
        """Register `value` under `name`."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda value: self.add(name, value)
