"""`cft run`: the whole pipeline from a recipe (concepts, masks, fine-tuning, evaluation) for several seeds."""

from __future__ import annotations

import argparse


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft run`."""
    p = subcommands.add_parser(
        "run",
        help="the whole pipeline from a recipe: concepts, masks, fine-tuning, evaluation, for several seeds",
        description=(
            "Run a pipeline recipe (a file or a packaged name such as imagenet/vit-b16; `cft recipes ls`): "
            "concepts (proposed, filtered, validated on the "
            "training images), masks for each seed's few-shot images, fine-tuning, evaluation of the best "
            "checkpoint, and the mean and std over the class-subset seeds in OUT/results.json and results.md, "
            "with each seed's paired gain over the original model (evaluate.original). "
            "Every stage is cached: a rerun, or a run killed at any point, continues where it stopped."
        ),
    )
    p.add_argument("recipe", metavar="RECIPE", help="the pipeline recipe: a YAML file or a packaged name")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, or ~KEY to delete KEY from the recipe first (e.g. ~finetune.objective with "
        "finetune.objective.name=no-guidance: the baseline run)",
    )
    p.set_defaults(run=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    """Run (or continue) the pipeline and print where the results went."""
    from cft.pipeline import load_run_recipe, run_pipeline

    results = run_pipeline(load_run_recipe(args.recipe, args.set), args.out)
    print(f"results: {args.out}/results.json ({len(results['runs'])} seeds)")
    return 0
