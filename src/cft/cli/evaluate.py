"""`cft evaluate`: checkpoints x evaluation sets -> results.json, a markdown table and a per-class CSV."""

from __future__ import annotations

import argparse

from cft.config import Range, parse_model_args
from cft.errors import CftError


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft evaluate`."""
    from cft.data.evalsets import eval_set_names
    from cft.relevance import METHODS

    p = subcommands.add_parser(
        "evaluate",
        help="top-1 / top-5 of checkpoints on ImageNet val/V2/A/R/Sketch, ObjectNet, SI-Score, Waterbirds, ...",
        description=(
            "Evaluate a model (one or more checkpoints: seeds are aggregated as mean and std) on evaluation "
            "sets in their published layouts. Writes OUT (JSON: {'eval_sets': {NAME: {'top1', 'top5', 'n', ...}}}), "
            "OUT with .md (a table) and OUT_per_class.csv. imagenet-a and imagenet-r give the 200-class protocol "
            "under their name and the 1000-way one under NAME:1000."
        ),
    )
    p.add_argument("--model", required=True, help="timm model name (e.g. vit_base_patch16_224)")
    p.add_argument("--pretrained", action="store_true", help="start from the hub's pretrained weights")
    p.add_argument("--checkpoint", action="append", default=[], metavar="FILE", help="weights; repeat for seeds")
    p.add_argument(
        "--eval-set",
        "--bench",  # its name before 0.2
        dest="eval_set",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"repeatable; NAME: {', '.join(eval_set_names())}",
    )
    p.add_argument("--out", default="results.json", metavar="FILE", help="results JSON (default results.json)")
    p.add_argument("--split", metavar="FILE", help="a run's split.json: top-1 on seen vs unseen classes")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="timm.create_model argument")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="data-loading processes (default 4)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--mean", help="normalisation mean, e.g. 0.5,0.5,0.5 (default: the model's pretrained config)")
    p.add_argument("--std", help="normalisation std, e.g. 0.5,0.5,0.5")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on GPUs")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument(
        "--relevance-method",
        default="grad-rollout",
        choices=list(METHODS),
        help="for imagenet-seg (default grad-rollout)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_evaluate_command)


def _floats(value: str | None, flag: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise CftError(f"{flag} expects comma-separated numbers like 0.5,0.5,0.5, got {value!r}") from None
    if len(out) != 3:
        raise CftError(f"{flag} expects 3 numbers (R,G,B), got {len(out)}")
    Range(gt=0 if flag == "--std" else None).check(flag, out)
    return out


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Evaluate the checkpoints on the evaluation sets; rank 0 prints where the results went."""
    from cft.distributed import Distributed
    from cft.evaluate.checkpoints import EvalSpec, evaluate_checkpoints, parse_eval_set_args
    from cft.evaluate.scoring import EvalOptions

    if args.batch_size < 1 or args.workers < 0:
        raise CftError("--batch-size must be >= 1 and --workers >= 0")
    options = EvalOptions(
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        channels_last=False if args.no_channels_last else None,
        bf16=False if args.no_bf16 else None,
        mean=_floats(args.mean, "--mean"),
        std=_floats(args.std, "--std"),
        relevance_method=args.relevance_method,
        progress=not args.no_progress,
    )
    spec = EvalSpec(
        model=args.model,
        eval_sets=parse_eval_set_args(args.eval_set),
        checkpoints=list(args.checkpoint),
        pretrained=args.pretrained,
        model_kwargs=parse_model_args(args.model_arg),
        split=args.split,
        options=options,
    )
    evaluate_checkpoints(spec, args.out)
    if Distributed.current().rank == 0:
        print(f"results: {args.out}  (table: {args.out.rsplit('.', 1)[0]}.md)")
    return 0
