#!/usr/bin/env python
"""Evaluation throughput of `cft evaluate`'s inference loop against a plain timm loop on the same model and images.

    PYTHONPATH=src python benchmarks/bench_evaluate.py                       # vit_small_patch16_224, 192 JPEGs
    PYTHONPATH=src python benchmarks/bench_evaluate.py --model vit_base_patch16_224 --n 512 --device cuda

The plain loop: torchvision ImageFolder with timm's eval transform, a DataLoader with the same batch size and
workers, the model under torch.inference_mode, top-5. cft's loop additionally restricts logits, maps top-k back
and keeps per-sample results. Both are run twice, alternating, and the best of each is kept. Target: cft within
10 % of plain.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import cft
from cft.data.evalsets import load_benchmark
from cft.evaluate.scoring import EvalOptions, eval_transform, predict_topk


def make_tree(root: Path, n: int, classes: int = 8) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / str(i % classes)
        folder.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((47, 63, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).resize((500, 375), Image.BICUBIC).save(folder / f"{i:05d}.JPEG", quality=90)


def plain_loop(model, root: Path, transform, batch: int, workers: int, device: torch.device) -> float:
    from torchvision.datasets import ImageFolder

    loader = DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    n = 0
    with torch.inference_mode():
        for images, _ in loader:
            logits = model(images.to(device))
            logits.topk(5, dim=1).indices.cpu()
            n += len(images)
    return n / (time.perf_counter() - start)


def cft_loop(model, root: Path, transform, opts: EvalOptions) -> float:
    (bench,) = load_benchmark("imagenet-v2", root)
    start = time.perf_counter()
    top = predict_topk(model, bench, opts, transform)
    return len(top) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--n", type=int, default=192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = cft.load_model(args.model).eval().to(device)
    opts = EvalOptions(batch_size=args.batch, workers=args.workers, device=args.device, progress=False)
    transform = eval_transform(model, opts)
    with tempfile.TemporaryDirectory() as tmp:
        make_tree(Path(tmp), args.n)
        plain, ours = [], []
        for _ in range(2):
            plain.append(plain_loop(model, Path(tmp), transform, args.batch, args.workers, device))
            ours.append(cft_loop(model, Path(tmp), transform, opts))
    p, o = max(plain), max(ours)
    print(f"model {args.model} on {args.device}, {args.n} JPEGs 500x375, batch {args.batch}, {args.workers} workers")
    print(f"plain timm loop   {p:8.1f} images/s   (runs: {', '.join(f'{x:.1f}' for x in plain)})")
    print(f"cft evaluate      {o:8.1f} images/s   (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"cft / plain       {o / p:8.3f}")


if __name__ == "__main__":
    main()
