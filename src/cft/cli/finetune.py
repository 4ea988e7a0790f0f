"""`cft finetune`: train or fine-tune a model as a YAML recipe says."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft finetune`."""
    from cft.train import OBJECTIVES

    finetune = subcommands.add_parser(
        "finetune",
        help=f"train or fine-tune a model as a YAML recipe says ({', '.join(OBJECTIVES)})",
        description=(
            "Build the model, data and objective of a recipe (a file, or a packaged one by name: world-pretrain, "
            "world-cft; `cft recipes ls`), write OUT/config.yaml (and OUT/split.json for few-shot data), then train, "
            "writing OUT/metrics.jsonl, OUT/last.safetensors and OUT/best.safetensors (chosen by train.select_by)."
        ),
    )
    finetune.add_argument("--config", required=True, metavar="YAML", help="the recipe: a file or a packaged name")
    finetune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, VALUE read as YAML (e.g. train.epochs=5, data.few_shot.per_class=10), or "
        "~KEY to delete KEY from the recipe first (e.g. ~objective with objective.name=erm); repeatable",
    )
    finetune.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    finetune.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    finetune.add_argument("--no-progress", action="store_true", help="no progress bars")
    finetune.set_defaults(run=run_finetune_command)


def run_finetune_command(args: argparse.Namespace) -> int:
    """Train as the recipe says and print where the checkpoints, metrics and config went."""
    from cft.train.recipe import load_recipe, run_finetune

    recipe = load_recipe(args.config, args.set)
    result = run_finetune(recipe, args.out, resume=args.resume, progress=not args.no_progress)
    out = Path(args.out)
    last = result.history[-1] if result.history else {}
    select = recipe.train.select_by
    how = f"{select} {result.best_value:.4f}" if select != "last" and select in last else "the last epoch"
    print(f"best:    {result.best_path}  (epoch {result.best_epoch}, by {how})")
    print(f"last:    {result.last_path}  (epoch {last.get('epoch', '?')})")
    print(f"metrics: {out / 'metrics.jsonl'}")
    extra = [out / name for name in ("config.yaml", "split.json") if (out / name).is_file()]
    print("config:  " + ", ".join(str(p) for p in extra))
    return 0
