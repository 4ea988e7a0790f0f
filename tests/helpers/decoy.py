"""Decoy-(Fashion)MNIST test data: idx files written independently of the reader, a fake garment tree in either
layout, and a tiny `cft finetune` recipe on it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """LeCun's idx format, written independently of the reader: 0, 0, type 0x08, ndim, big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_garments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28 x 28 images: a bright block in the middle whose size depends on the class, black corners."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), np.uint8)
    for i, y in enumerate(labels):
        h = 6 + y
        images[i, 14 - h // 2 : 14 + (h + 1) // 2, 8:20] = rng.integers(60, 255)
    return images, labels.astype(np.uint8)


def make_tree(root: Path, n_train: int = 120, n_test: int = 40, layout: str = "torchvision") -> Path:
    folder = root / "FashionMNIST" / "raw" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    gz = layout != "torchvision"
    ext = ".gz" if gz else ""
    for part, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = fake_garments(n, seed)
        write_idx(folder / f"{part}-images-idx3-ubyte{ext}", images, gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", labels, gz)
    return root


def tiny_recipe(tree: Path, **objective) -> dict:
    return {
        "model": {"name": "world-vit", "depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 4},
        "data": {
            "source": "decoy",
            "decoy": {"root": str(tree), "n_val": 20},
            "n_train": 100,
            "val_split": "val-ood",
            "n_val": 20,
            "few_shot": {"per_class": 2, "class_fraction": 0.5, "seed": 1},
            "masks": "object",
        },
        "objective": {"name": "cft", **objective},
        "train": {"epochs": 1, "batch_size": 4, "select_by": "last", "progress": False, "optim": {"lr": 1e-3}},
    }
