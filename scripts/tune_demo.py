"""Choose a demo fine-tuning setting on validation data: fine-tune one variant for each candidate value and seed,
then score it on the world's val split (biased like train), on the images whose cue is not their class's.

    python scripts/tune_demo.py --variant cft --field finetune.lr --values 3e-5 5e-5 1e-4 --seeds 0 1 2
    python scripts/tune_demo.py --variant rrr --field finetune.baseline_settings.rrr.input_grad_weight \\
        --values 10 100 1000

Prints one row per value: val top-1 (all images) and val top-1 off the class's cue, mean and std over seeds.
Nothing here reads a test split.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import yaml

from cft.config import merge, parse_overrides
from cft.demo import (
    demo_config,
    finetune_variant,
    make_world,
    original_model,
    predict,
)
from cft.world.training import split_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, help="cft, object-masks, no-guidance or a baseline")
    parser.add_argument("--field", required=True, help="the demo config field to vary, e.g. finetune.lr")
    parser.add_argument("--values", nargs="+", required=True, help="candidate values (read as YAML)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-val", type=int, default=4000, help="val images (about 5 %% are off their cue)")
    parser.add_argument("--set", action="append", default=[], help="other demo config overrides KEY=VALUE")
    args = parser.parse_args()

    base = parse_overrides(args.set)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cfg = demo_config(base)
        world = make_world(cfg)
        original, _, checkpoint = original_model(cfg, out, from_scratch=False, progress=False)
        val = world.split("val", args.n_val).materialize()
        images, (val_labels, val_cues) = split_images(val), val.labels_and_cues()
        off = val_cues != val_labels
        before = predict(original, images, 500).numpy() == val_labels
        print(
            f"original: val top-1 {100 * before.mean():.1f}, off the cue {100 * before[off].mean():.1f} "
            f"({int(off.sum())} images)"
        )
        print(f"| {args.field} | val top-1 | val top-1 off the cue |\n|---|---|---|")
        for value in args.values:
            cfg = demo_config(merge(base, parse_overrides([f"{args.field}={value}"])))  # its concepts too
            scores = []
            for seed in args.seeds:
                run = out / f"{value}-{seed}"
                model = finetune_variant(cfg, args.variant, seed, checkpoint, run, False)
                correct = predict(model, images, 500).numpy() == val_labels
                scores.append((correct.mean(), correct[off].mean()))
            mean, std = np.mean(scores, 0) * 100, np.std(scores, 0) * 100
            print(
                f"| {yaml.safe_load(value)} | {mean[0]:.1f} ± {std[0]:.1f} | {mean[1]:.1f} ± {std[1]:.1f} |", flush=True
            )


if __name__ == "__main__":
    main()
