"""`cft compare`: results files (cft evaluate, cft run), paired run by run, with the t interval of A - B for each
other file B."""

from __future__ import annotations

import argparse


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft compare`."""
    p = subcommands.add_parser(
        "compare",
        help="the paired difference of two (or more) results files (cft evaluate, cft run), with its t interval",
        description=(
            "Compare variant A with variant B (and with each further file, as its own table) on every evaluation "
            "set both scored: runs pair by seed (two cft run folders) or by position (cft evaluate's checkpoints, "
            "in the order given), each pair must have scored the same number of images, and A - B is reported as "
            "the mean over pairs with the half-width of its paired t interval. Prints markdown tables; --out also "
            "writes them as JSON with every per-run difference."
        ),
    )
    p.add_argument("a", metavar="A", help="results of variant A: a cft evaluate OUT file or a cft run folder")
    p.add_argument("b", metavar="B", nargs="+", help="results of variant B (more: A against each), the same kinds")
    p.add_argument("--metric", default="top1", help="the score compared (default top1; e.g. top5, worst_group)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--out", metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Read both files, compare them and print the table (and write --out)."""
    from cft.evaluate.compare import compare_results, comparison_table, read_results
    from cft.io import check_output_file, write_json_atomic

    if args.out:
        check_output_file(args.out)
    a = read_results(args.a)
    others = [read_results(path) for path in args.b]  # every file is read before anything is compared
    results = [compare_results(a, b, args.metric, args.level) for b in others]
    print("\n".join(comparison_table(result) for result in results), end="")
    if args.out:
        write_json_atomic(args.out, {"a": str(a.path), "comparisons": results})
        print(f"wrote {args.out}")
    return 0
