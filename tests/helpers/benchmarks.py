"""The scripts in benchmarks/ loaded as modules, for the tests that run them at toy sizes."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.helpers.paths import ROOT


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a fresh module (the benchmarks are scripts, not a package)."""
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
