"""ImageNet-Segmentation (Guillaumin et al.; gtsegs_ijcv.mat as used by Chefer et al.) for relevance alignment.

The file is a MATLAB v7.3 .mat, i.e. HDF5. `value/img` and `value/gt` are N x 1 arrays of object references
(`value/target` / `value/id` also exist in the release; not needed here). Item i:

- image: `f[value/img[i]]`, stored transposed as MATLAB does, shape (3, W, H) uint8 -> returned (H, W, 3);
- mask: `f[value/gt[i]]` is itself a small array of references whose first element points at the (W, H) mask
  -> returned (H, W) bool (non-zero = object). A mask stored directly (not behind a reference) is read too.

Samples carry no label (targets = ()): the protocol scores the relevance of the model's predicted class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cft.data.evalsets.common import EvalSet, Sample
from cft.errors import CftError

MAT_NAME = "gtsegs_ijcv.mat"
LAYOUT = f"ROOT/{MAT_NAME}, or ROOT being the .mat file (MATLAB v7.3 / HDF5 with datasets value/img, value/gt)"


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise CftError(f"imagenet-seg: cannot read {path} as a MATLAB v7.3 (HDF5) file ({err})") from None


def _references(handle, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The flat arrays of image and mask references; a CftError naming the file if they are not there."""
    import h5py

    found = []
    for key in ("value/img", "value/gt"):
        item = handle.get(key)
        if not isinstance(item, h5py.Dataset) or h5py.check_ref_dtype(item.dtype) is None:
            raise CftError(f"imagenet-seg: {path} has no dataset {key!r} of object references; expected {LAYOUT}")
        found.append(item[()].ravel())
    if len(found[0]) != len(found[1]):
        raise CftError(f"imagenet-seg: {path}: value/img has {len(found[0])} items but value/gt has {len(found[1])}")
    return found[0], found[1]


def mat_path(root: Path) -> Path:
    """The .mat file for ROOT (the file itself, or ROOT/gtsegs_ijcv.mat)."""
    path = root if root.is_file() else root / MAT_NAME
    if not path.is_file():
        raise CftError(f"imagenet-seg: {path} does not exist; expected {LAYOUT}")
    return path


def load_imagenet_seg(root: Path) -> list[EvalSet]:
    """One sample per item of the .mat (path = the .mat, index = the item); read items with read_seg_item."""
    path = mat_path(root)
    with _open(path) as handle:
        images, _ = _references(handle, path)
    samples = [Sample(path=path, targets=(), index=i) for i in range(len(images))]
    info = {
        "root": str(path),
        "protocol": "relevance of the predicted class, binarised at its mean: pixel accuracy, mIoU (2 classes), mAP",
        "num_samples": len(samples),
    }
    return [EvalSet("imagenet-seg", samples, None, 1000, info)]


def _image(array: np.ndarray, path: Path, index: int) -> np.ndarray:
    if array.dtype != np.uint8:
        raise CftError(f"imagenet-seg: {path} item {index}: image dtype {array.dtype}, expected uint8")
    if array.ndim == 2:  # a grey image: (W, H)
        return np.repeat(array.T[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[0] != 3:
        raise CftError(f"imagenet-seg: {path} item {index}: image shape {array.shape}, expected (3, W, H)")
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def read_seg_item(path: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Item `index` of the .mat: (image uint8 H x W x 3, ground-truth mask bool H x W)."""
    import h5py

    path = Path(path)
    with _open(path) as handle:
        images, masks = _references(handle, path)
        if not 0 <= index < len(images):
            raise CftError(f"imagenet-seg: index {index} out of range: {path} has {len(images)} items")
        image = _image(handle[images[index]][()], path, index)
        gt = handle[masks[index]]
        if h5py.check_ref_dtype(gt.dtype) is not None:
            gt = handle[gt[()].ravel()[0]]
        mask = np.asarray(gt[()])
    if mask.ndim != 2 or mask.T.shape != image.shape[:2]:
        raise CftError(f"imagenet-seg: {path} item {index}: mask shape {mask.shape} does not match the image")
    return image, np.ascontiguousarray(mask.T != 0)
