#!/usr/bin/env python
"""Throughput of the synthetic world: generating samples, and caching / loading a split as a compressed .npz.

    PYTHONPATH=src python benchmarks/bench_world.py               # 2,000 train samples at 64 px, one process
    PYTHONPATH=src python benchmarks/bench_world.py --n 500 --image-size 224

Prints images/s for: generation (`split.sample(i)`, numpy, everything: background, object, masks), the torch
item (`split[i]`), saving the split, loading it (`WorldSplit.load`) and reading samples from the loaded cache.
Target: thousands of images per second for generation at 64 px.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cft.world import SyntheticWorld, WorldConfig, WorldSplit


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10,.0f} images/s  ({seconds:6.3f} s for {n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t = time.perf_counter()
    world = SyntheticWorld(WorldConfig(image_size=args.image_size, seed=args.seed))
    split = world.split(args.split, args.n)
    print(f"world + background bank        {time.perf_counter() - t:6.3f} s")

    t = time.perf_counter()
    for i in range(args.n):
        split.sample(i)
    print(f"generate  sample(i)  numpy     {rate(args.n, time.perf_counter() - t)}")

    t = time.perf_counter()
    for i in range(args.n):
        split[i]
    print(f"generate  split[i]   torch     {rate(args.n, time.perf_counter() - t)}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.npz"
        split.materialize()
        t = time.perf_counter()
        split.save(path)
        size_mb = path.stat().st_size / 1e6
        print(f"save      .npz ({size_mb:5.1f} MB)    {rate(args.n, time.perf_counter() - t)}")
        t = time.perf_counter()
        cached = WorldSplit.load(path)
        print(f"load      WorldSplit.load      {rate(args.n, time.perf_counter() - t)}")
    t = time.perf_counter()
    for i in range(args.n):
        cached[i]
    print(f"cached    split[i]   torch     {rate(args.n, time.perf_counter() - t)}")


if __name__ == "__main__":
    main()
