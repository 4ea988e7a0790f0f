"""Save a contact sheet of a world split: python -m cft.world [--split train] [-n 20] [--out world_sheet.png]."""

from __future__ import annotations

import argparse

from cft.world._sheet import contact_sheet
from cft.world.world import SPLITS, SyntheticWorld


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, draw the samples, write the PNG."""
    parser = argparse.ArgumentParser(prog="python -m cft.world", description=__doc__)
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("-n", type=int, default=20, help="samples to show")
    parser.add_argument("--start", type=int, default=0, help="first sample index")
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default="world_sheet.png")
    args = parser.parse_args(argv)
    world = SyntheticWorld(seed=args.seed, image_size=args.image_size)
    split = world.split(args.split, args.start + args.n)
    contact_sheet(split, args.n, cols=args.cols, start=args.start).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
