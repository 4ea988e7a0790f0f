"""Every registry of cft, and a context that undoes what a test registered in them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cft import registry


def all_registries() -> list[registry.Registry]:
    from cft.concepts.stage import LLM_BACKENDS
    from cft.data.evalsets import EVAL_SETS
    from cft.grounding.registry import SEGMENTERS
    from cft.models import MODEL_FAMILIES
    from cft.relevance import BACKENDS, METHODS
    from cft.train import OBJECTIVES
    from cft.train.sources import DATA_SOURCES

    return [METHODS, BACKENDS, MODEL_FAMILIES, OBJECTIVES, SEGMENTERS, EVAL_SETS, DATA_SOURCES, LLM_BACKENDS]


@contextmanager
def registrations_undone() -> Iterator[None]:
    """Whatever is registered inside is removed on the way out (read without loading plug-ins)."""
    before = {id(r): set(dict.keys(r)) for r in all_registries()}
    try:
        yield
    finally:
        for r in all_registries():
            for name in set(dict.keys(r)) - before[id(r)]:
                dict.pop(r, name)
                r._descriptions.pop(name, None)
                getattr(r, "_settings", {}).pop(name, None)
