"""`cft ls`: the names every extension point offers, read from its registry, each with its one-line description."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _methods() -> dict[str, str]:
    from cft.relevance import METHODS

    return METHODS.descriptions()


def _objectives() -> dict[str, str]:
    from cft.train import OBJECTIVES

    return OBJECTIVES.descriptions()


def _segmenters() -> dict[str, str]:
    from cft.grounding.registry import SEGMENTERS

    return SEGMENTERS.descriptions()


def _eval_sets() -> dict[str, str]:
    from cft.data.evalsets import EVAL_SETS

    return EVAL_SETS.descriptions()


def _data_sources() -> dict[str, str]:
    from cft.train.sources import DATA_SOURCES

    return DATA_SOURCES.descriptions()


def _llm_backends() -> dict[str, str]:
    from cft.concepts.stage import LLM_BACKENDS

    return LLM_BACKENDS.descriptions()


def _recipes() -> dict[str, str]:
    from cft.cli.recipes import recipe_summary
    from cft.config import packaged_recipes

    return {name: recipe_summary(path) for name, path in packaged_recipes().items()}


def _model_families() -> dict[str, str]:
    from cft.models import MODEL_FAMILIES

    return MODEL_FAMILIES.descriptions()


def _relevance_backends() -> dict[str, str]:
    from cft.relevance.methods import BACKENDS, backends_in_order

    return {name: BACKENDS.description(name) for name, _finder in backends_in_order()}


# kind -> its names with their descriptions, read when asked (so entries registered at run time are listed)
KINDS: dict[str, Callable[[], dict[str, str]]] = {
    "methods": _methods,
    "objectives": _objectives,
    "segmenters": _segmenters,
    "eval-sets": _eval_sets,
    "data-sources": _data_sources,
    "llm-backends": _llm_backends,
    "recipes": _recipes,
    "model-families": _model_families,
    "relevance-backends": _relevance_backends,
}


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft ls`."""
    p = subcommands.add_parser(
        "ls",
        help="list the names of relevance methods, objectives, segmenters, eval sets, data sources, ...",
        description=(
            "Without KIND: every kind with its names. With KIND: each name of that kind with its one-line "
            "description. The lists are read from the registries, plug-ins included."
        ),
    )
    p.add_argument("kind", nargs="?", choices=tuple(KINDS), metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.set_defaults(run=list_command)


def list_command(args: argparse.Namespace) -> int:
    """Print one kind's names with their descriptions, or every kind with its names."""
    if args.kind is None:
        for kind, read in KINDS.items():
            print(f"{kind}: {', '.join(read())}")
        return 0
    entries = KINDS[args.kind]()
    width = max((len(name) for name in entries), default=0)
    for name, description in entries.items():
        print(f"{name:{width}s}  {description}".rstrip())
    return 0
