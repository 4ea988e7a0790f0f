"""The one registry type: a dict from name to builder, filled by `register` (decorator) or `add`, each name with a
one-line description (`cft ls` prints them); and the plug-ins that fill registries from outside the package.

A plug-in is an entry point of the group `cft.plugins` in an installed distribution, naming a module (imported) or
a callable (called with no arguments) that registers its components with the public decorators
(`cft.relevance.register_method`, `cft.train.register_objective`, ...). Plug-ins are loaded once, before any
registry is first read (and by the CLI before it parses its arguments); CFT_DISABLE_PLUGINS=1 skips them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import os
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from cft.errors import CftError

T = TypeVar("T")
PLUGIN_GROUP = "cft.plugins"
DISABLE_PLUGINS = "CFT_DISABLE_PLUGINS"


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

    # every read loads the plug-ins first (once); registering does not, so modules register while they import
    def __contains__(self, name: object) -> bool:
        _plugins.ensure()
        return super().__contains__(name)

    def __getitem__(self, name: str) -> T:
        _plugins.ensure()
        return super().__getitem__(name)

    def __iter__(self) -> Iterator[str]:
        _plugins.ensure()
        return super().__iter__()

    def __len__(self) -> int:
        _plugins.ensure()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:
        _plugins.ensure()
        return super().get(name, default)

    def keys(self) -> Any:
        _plugins.ensure()
        return super().keys()

    def values(self) -> Any:
        _plugins.ensure()
        return super().values()

    def items(self) -> Any:
        _plugins.ensure()
        return super().items()

    def add(self, name: str, value: T, description: str | None = None) -> T:
        """Register `value` under `name`, described by `description` (None: read from the value)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if dict.__contains__(self, name):
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


class SettingsRegistry(Registry[T]):
    """A registry whose entries each read a settings dataclass of their own (an objective's `objective:` fields, a
    data source's `data:` fields, its "section"): a subclass of `base`, `default` for an entry registered without
    one."""

    def __init__(self, kind: str, base: type, default: type, what: str = "settings") -> None:
        super().__init__(kind)
        self.base, self.default, self.what = base, default, what
        self._settings: dict[str, type] = {}

    def add(self, name: str, value: T, description: str | None = None, settings: type | None = None) -> T:
        """Register `value` under `name`, reading the dataclass `settings` (None: `default`)."""
        if settings is not None and not (isinstance(settings, type) and issubclass(settings, self.base)):
            raise TypeError(f"{self.kind} {name!r}: {self.what} must be a dataclass subclassing {self.base.__name__}")
        super().add(name, value, description)
        self._settings[name] = settings or self.default
        return value

    def settings(self, name: str, field: str | None = None) -> type:
        """The settings dataclass of entry `name`; one not registered is an error naming `field` (e.g.
        `objective.name`) and the registered names."""
        if name not in self:
            raise CftError(f"{field or self.kind} must be one of {', '.join(self)}, got {name!r}")
        return self._settings.get(name, self.default)

    def owners(self, field_name: str) -> list[str]:
        """The entries whose settings have a field `field_name`, in registration order."""
        return [n for n in self if field_name in {f.name for f in dataclasses.fields(self.settings(n))}]

    def settings_of(self, data: Mapping[str, Any], where: str, key: str, default: str) -> type | None:
        """The settings dataclass of the entry that `data[key]` (or `default`) names, for reading `data`, a flat
        YAML mapping at `where`; a key of another entry's settings is an error naming the field and its owners.
        None when `data[key]` is not a string (the reader names the bad type)."""
        name = data.get(key, default)
        if not isinstance(name, str):
            return None
        chosen = self.settings(name, f"{where}.{key}")
        own = {f.name for f in dataclasses.fields(chosen)}
        for field_name in data:
            owners = [] if field_name in own else self.owners(field_name)
            if owners:
                those = f"that {self.kind}" if len(owners) == 1 else f"one of those {self.kind}s"
                raise CftError(
                    f"{where}.{field_name} is a setting of {where}.{key} {', '.join(owners)}, not of {name}: delete "
                    f"it, or choose {those}"
                )
        return chosen


def one_line(text: str) -> str:
    """The first paragraph of `text` on one line."""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def _docstring(value: Any) -> str | None:
    return value.__doc__ if inspect.isroutine(value) or inspect.isclass(value) else None


class _Plugins:
    """Whether the plug-ins were loaded (once per process), and the error of a broken one (raised at every read)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.state = "unloaded"  # unloaded | loading | loaded
        self.names: list[str] = []
        self.failure: CftError | None = None

    def ensure(self) -> None:
        if self.state == "loaded" and self.failure is None:
            return
        with self.lock:
            if self.state == "unloaded":
                self.state = "loading"
                try:
                    self.names = _load_entry_points()
                except CftError as err:
                    self.failure = err
                finally:
                    self.state = "loaded"
        if self.failure is not None and self.state == "loaded":
            raise CftError(str(self.failure))


_plugins = _Plugins()


def load_plugins() -> list[str]:
    """Load the installed plug-ins (once; later calls return at once) and return their entry-point names; a broken
    plug-in is a CftError naming it, raised again at every registry read."""
    _plugins.ensure()
    return list(_plugins.names)


def _load_entry_points() -> list[str]:
    if os.environ.get(DISABLE_PLUGINS, "").strip() not in ("", "0"):
        return []
    names = []
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        _load_plugin(entry)
        names.append(entry.name)
    return names


def _load_plugin(entry: importlib.metadata.EntryPoint) -> None:
    """Import the module the entry point names, or call the callable it names; any failure is a CftError."""
    dist = getattr(entry, "dist", None)
    where = f"cft plug-in {entry.name!r} ({entry.value}" + (f", from {dist.name}" if dist is not None else "") + ")"
    hint = f"fix or uninstall it, or set {DISABLE_PLUGINS}=1 to run without plug-ins"
    try:
        target = entry.load()
        if not isinstance(target, types.ModuleType):
            if not callable(target):
                raise TypeError(f"it names a {type(target).__name__}, not a module or a callable")
            target()
    except Exception as err:  # noqa: BLE001 - whatever a third party's code raises, named as its plug-in's fault
        raise CftError(f"{where} failed to load: {type(err).__name__}: {err}; {hint}") from None
