"""`cft demo`: the whole method on the embedded synthetic world (CPU, no downloads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cft.io import exclusive_folder


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft demo`."""
    from cft.demo import BASELINES

    demo = subcommands.add_parser(
        "demo",
        help="run the whole method on the embedded synthetic world (CPU, no downloads)",
        description=(
            "Make the synthetic world, take the original model (shipped, or pretrained with --from-scratch), choose "
            "each class's concepts, make their masks, fine-tune the variants original / cft / object-masks / "
            "no-guidance on the same few images, evaluate them on test-id, test-ood and test-flipped, and write "
            "OUT/results.json, OUT/report.md and OUT/figures/."
        ),
    )
    demo.add_argument(
        "--data",
        choices=("world", "decoy"),
        default="world",
        help="world: the synthetic world (default); decoy: real images, Decoy-FashionMNIST (cft.demo.decoy; "
        "its config is decoy/benchmark: --set decoy.root=DIR, --set phase=val, ...)",
    )
    demo.add_argument("--quick", action="store_true", help="one seed, fewer epochs and test images (for tests)")
    demo.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    demo.add_argument(
        "--from-scratch", action="store_true", help="pretrain the original model instead of the shipped one"
    )
    demo.add_argument(
        "--config",
        metavar="YAML",
        help="a demo config: a file or a packaged name (`cft recipes cp demo FILE` writes the defaults to edit)",
    )
    demo.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. seeds=[0,1] (~KEY deletes KEY from the config)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument(
        "--all-baselines",
        action="store_true",
        help=f"also fine-tune every baseline ({', '.join(BASELINES)}) and rank all variants",
    )
    demo.set_defaults(run=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the demo and print each variant's top-1 on the three test splits."""
    from cft.config import load_config_data, merge
    from cft.demo import BASELINES, demo_config, run_demo

    data = load_config_data(args.config, args.set, kind="decoy-demo" if args.data == "decoy" else "demo")
    if args.data == "decoy":
        return run_decoy_command(args, data)
    if args.all_baselines:
        data = merge(data, {"baselines": list(BASELINES)})
    cfg = demo_config(data, quick=args.quick)
    with exclusive_folder(args.out):
        results = run_demo(cfg, args.out, from_scratch=args.from_scratch, progress=not args.no_progress)
    print_summary(results)
    print(
        f"wrote {Path(args.out) / 'results.json'}, {Path(args.out) / 'report.md'} ({results['timings']['total']:.0f} s)"
    )
    return 0


def print_summary(results: dict) -> None:
    """Each variant's top-1 (percent, ± the 95 % t half-width over seeds) and cft's paired differences."""
    from cft.demo.report import format_interval as _ci

    splits = ("test-id", "test-ood", "test-flipped")
    print(f"{'variant':14s} " + " ".join(f"{s:>14s}" for s in splits))
    for variant, row in results["interval"].items():
        print(f"{variant:14s} " + " ".join(f"{_ci(row[s]):>14s}" for s in splits))
    for pair, d in results["paired"].items():
        if pair.startswith(("cft - ", "cft-parts - ")):
            print(f"{pair}: test-ood {_ci(d['test-ood'], True)} points, test-id {_ci(d['test-id'], True)}")


def run_decoy_command(args: argparse.Namespace, data: dict) -> int:
    """`cft demo --data decoy`: the decoy benchmark; prints each variant's top-1 on the id / ood / neutral splits."""
    from cft.config import merge
    from cft.demo.decoy import BASELINE_VARIANTS, decoy_bench_config, run_decoy_benchmark

    if args.from_scratch:
        from cft.errors import CftError

        raise CftError(
            "--from-scratch is for the world; make a decoy model with "
            "`cft finetune --config decoy/fashion-mnist-pretrain --out DIR` and --set checkpoint=DIR/last.safetensors"
        )
    if args.all_baselines:
        data = merge({"variants": BASELINE_VARIANTS}, data)
    cfg = decoy_bench_config(data, quick=args.quick)
    with exclusive_folder(args.out):
        results = run_decoy_benchmark(cfg, args.out, progress=not args.no_progress)
    splits = results["splits"]
    print(f"{'variant':22s} " + " ".join(f"{s:>13s}" for s in splits))
    for variant, m in results["metrics"].items():
        print(f"{variant:22s} " + " ".join(f"{m[s]['top1']:>13.4f}" for s in splits))
    print(f"wrote {Path(args.out) / 'results.json'}, {Path(args.out) / 'report.md'} ({results['seconds']:.0f} s)")
    return 0
