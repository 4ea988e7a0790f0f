"""Where things are, whatever folder a test sits in: the repository root and the subprocess workers."""

from __future__ import annotations

from pathlib import Path

HELPERS = Path(__file__).resolve().parent
ROOT = HELPERS.parents[1]  # the repository: tests/helpers/ -> tests/ -> root


def worker(name: str) -> Path:
    """tests/helpers/<name>.py, a script the tests run as a subprocess (`python PATH ...`, or under torchrun)."""
    return HELPERS / f"{name}.py"
