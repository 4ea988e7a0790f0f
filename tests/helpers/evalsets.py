"""Evaluation-set files in their published formats, written independently of cft's readers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_mat(path: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> Path:
    """The gtsegs_ijcv.mat structure: value/img, value/gt as N x 1 references; arrays stored transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:  # MATLAB v7.3 files carry a 512-byte header block
        refs = f.create_group("#refs#")
        img_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(zip(images, masks)):
            img_refs[i, 0] = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            inner = refs.create_dataset(f"gt{i}_mask", data=mask.T.astype(np.uint8))
            holder = refs.create_dataset(f"gt{i}", shape=(1, 1), dtype=h5py.ref_dtype)
            holder[0, 0] = inner.ref
            gt_refs[i, 0] = holder.ref
        value = f.create_group("value")
        value.create_dataset("img", data=img_refs)
        value.create_dataset("gt", data=gt_refs)
    return path
