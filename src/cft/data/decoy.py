"""Decoy-MNIST and Decoy-FashionMNIST (Ross, Hughes, Doshi-Velez, IJCAI 2017): real images with a planted cue.

Each 28 x 28 image gets a `size` x `size` grey square (the decoy) in one of its four corners, the corner drawn at
random per image. Ross et al.: the square's shade is 255 - 25 y for class y in training, so the shade names the
class; out of distribution it names another class (uniform over the other nine). A *neutral* square has shade 0,
which on these black backgrounds is no square at all: the same image with the cue removed, for the oracle.

Splits (the training file's last `n_val` images are held out for validation; the test file makes the tests):

| split | images | decoy shade |
|---|---|---|
| train | training file[:-n_val] | the label's with probability `bias`, else another class's; mixture below |
| val, test-id | held-out / test file | the label's |
| val-ood, test-ood | held-out / test file | another class's |
| val-neutral, test-neutral | held-out / test file | neutral (the oracle) |

The train split can mix in, per image, `context_only` (the garment blanked: only the square tells the label) and
`neutral` (no square: only the garment does), which is how the benchmark's original model is made to know the
garments and still lean on the square. Guidance masks are the foreground (pixels above 0 before the decoy), so
the square always lies in the non-concept region. Files: torchvision's layout (ROOT/FashionMNIST/raw/...) or the
four idx files in ROOT itself, plain or gzipped (Debian's `dataset-fashion-mnist` installs them in
/usr/share/datasets/fashion-mnist); `download=True` lets torchvision fetch them where the network allows.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cft.errors import CftError

# dataset name -> (torchvision class / folder name, class names)
DECOY_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fashion-mnist": (
        "FashionMNIST",
        ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"),
    ),
    "mnist": ("MNIST", tuple(str(d) for d in range(10))),
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DECOY_SPLITS = ("train", "val", "val-ood", "val-neutral", "test-id", "test-ood", "test-neutral")
DEFAULT_ROOTS = ("data", "/usr/share/datasets/fashion-mnist")  # searched in order when root is null
NEUTRAL = -1  # the cue value of a neutral square
_IDX_TYPES = {0x08: np.uint8}


@dataclass
class DecoyConfig:
    """Which dataset, where its files are, and how the decoy is planted."""

    dataset: str = "fashion-mnist"  # fashion-mnist | mnist
    root: str | None = None  # null: the first of ./data and /usr/share/datasets/fashion-mnist that has the files
    download: bool = False  # let torchvision download the files into root (needs the network)
    size: int = 4  # the square's side in pixels (Ross et al.: 4)
    n_val: int = 10_000  # the training file's last n_val images are the val splits
    seed: int = 0  # corners, off-class shades and the train mixture
    bias: float = 1.0  # train: share of squares in the label's shade (Ross et al.: 1.0)
    context_only: float = 0.0  # train: share of images whose garment is blanked (the square alone)
    neutral: float = 0.0  # train: share of images without a square


def check_decoy_config(cfg: DecoyConfig, where: str = "data.decoy") -> None:
    """Ranges of the fields (types were checked when the config was read)."""
    if cfg.dataset not in DECOY_DATASETS:
        raise CftError(f"{where}.dataset must be one of {', '.join(DECOY_DATASETS)}, got {cfg.dataset!r}")
    if not 1 <= cfg.size <= 14:
        raise CftError(f"{where}.size must be in [1, 14] pixels, got {cfg.size}")
    if cfg.n_val < 1:
        raise CftError(f"{where}.n_val must be >= 1, got {cfg.n_val}")
    for name in ("bias", "context_only", "neutral"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise CftError(f"{where}.{name} must be in [0, 1], got {value}")
    if cfg.context_only + cfg.neutral > 1.0:
        raise CftError(f"{where}.context_only + neutral must be at most 1, got {cfg.context_only + cfg.neutral}")


def shade(cue: np.ndarray) -> np.ndarray:
    """The square's grey level for each cue class (Ross et al.: 255 - 25 y); a neutral cue is 0."""
    cue = np.asarray(cue)
    return np.where(cue == NEUTRAL, 0, 255 - 25 * cue).astype(np.uint8)


# ---- the idx files ---------------------------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, plain or gzipped) as an array; a broken file is a CftError naming it."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CftError(f"cannot read the idx file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 3:
        raise CftError(f"{path} is not an idx file of unsigned bytes (its header is {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise CftError(f"{path} is truncated: its header is incomplete")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    count = int(np.prod(shape))
    body = raw[4 + 4 * ndim :]
    if len(body) != count:
        raise CftError(f"{path} holds {len(body)} bytes of data where its header {shape} says {count} (truncated?)")
    return np.frombuffer(body, dtype=_IDX_TYPES[raw[2]]).reshape(shape)


def _candidates(root: Path, folder: str, name: str) -> list[Path]:
    return [d / f for d in (root, root / folder / "raw", root / folder) for f in (name, name + ".gz")]


def find_idx(root: str | Path, dataset: str, part: str) -> tuple[Path, Path]:
    """The images and labels idx files of `part` (train | test) under `root`."""
    folder = DECOY_DATASETS[dataset][0]
    found = []
    for name in IDX_FILES[part]:
        hits = [p for p in _candidates(Path(root), folder, name) if p.is_file()]
        if not hits:
            raise CftError(
                f"no {name}[.gz] under {root} (looked in it, {folder}/raw and {folder}); "
                f"set data.decoy.root to the folder holding the {dataset} idx files, or data.decoy.download=true"
            )
        found.append(hits[0])
    return found[0], found[1]


def resolve_root(cfg: DecoyConfig) -> Path:
    """The folder with the dataset's files: cfg.root (downloaded there first with download=true) or a default."""
    if cfg.root is not None:
        if cfg.download:
            _download(cfg.dataset, cfg.root)
        if not Path(cfg.root).is_dir():
            raise CftError(f"data.decoy.root {cfg.root} is not a folder")
        return Path(cfg.root)
    for root in DEFAULT_ROOTS:
        try:
            find_idx(root, cfg.dataset, "train")
            return Path(root)
        except CftError:
            continue
    raise CftError(
        f"data.decoy.root is not set and no {cfg.dataset} idx files are in {' or '.join(DEFAULT_ROOTS)}; set it to "
        "the folder holding them (Debian: apt-get install dataset-fashion-mnist), or data.decoy.download=true"
    )


def _download(dataset: str, root: str) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, DECOY_DATASETS[dataset][0])(root, train=True, download=True)
        getattr(torchvision.datasets, DECOY_DATASETS[dataset][0])(root, train=False, download=True)
    except (OSError, RuntimeError) as err:
        raise CftError(f"downloading {dataset} into {root} failed: {err}") from None


def load_part(root: str | Path, dataset: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of `part`, checked against each other. Read once per process
    and file state: every variant of a benchmark run reads the same files (read-only arrays; planting copies)."""
    images_path, labels_path = find_idx(root, dataset, part)
    stats = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (images_path, labels_path))
    return _load_checked(stats, dataset)


@functools.lru_cache(maxsize=4)
def _load_checked(stats: tuple[tuple[str, int, int], ...], dataset: str) -> tuple[np.ndarray, np.ndarray]:
    (images_path, _, _), (labels_path, _, _) = stats
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CftError(f"{images_path} {images.shape} and {labels_path} {labels.shape} are not N images with N labels")
    classes = len(DECOY_DATASETS[dataset][1])
    if labels.size and labels.max() >= classes:
        raise CftError(f"{labels_path} has label {int(labels.max())}; {dataset} has {classes} classes")
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


# ---- planting the decoy ----------------------------------------------------------------------------------
@dataclass
class DecoyImages:
    """A materialised decoy split: grey images (N, H, W) uint8, labels, cue classes (NEUTRAL: none), corners
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) and which images had their object blanked."""

    images: np.ndarray
    labels: np.ndarray
    cues: np.ndarray
    corners: np.ndarray
    blanked: np.ndarray
    foreground: np.ndarray  # (N, H, W) bool: the object's pixels (not the square, none where blanked)
    size: int

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> DecoyImages:
        """The first n images (each keeps the decoy it had in the whole split)."""
        return self.take(slice(0, n))

    def take(self, index) -> DecoyImages:
        """The images at `index` (a slice or an index array), each with its decoy."""
        return DecoyImages(
            self.images[index],
            self.labels[index],
            self.cues[index],
            self.corners[index],
            self.blanked[index],
            self.foreground[index],
            self.size,
        )

    def rgb(self) -> np.ndarray:
        """(N, 3, H, W) uint8: the grey images on three channels, as the models take them."""
        return np.repeat(self.images[:, None], 3, axis=1)

    def cue_masks(self) -> np.ndarray:
        """(N, H, W) bool: the square's pixels, wherever it is (even where neutral)."""
        return corner_masks(self.corners, self.images.shape[1:], self.size)


def corner_masks(corners: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    """(N, H, W) bool: a size x size square in each image's corner."""
    h, w = shape
    out = np.zeros((len(corners), h, w), bool)
    for k, (rows, cols) in enumerate(_corner_slices(h, w, size)):
        out[corners == k, rows, cols] = True
    return out


def _corner_slices(h: int, w: int, size: int) -> list[tuple[slice, slice]]:
    top, bottom, left, right = slice(0, size), slice(h - size, h), slice(0, size), slice(w - size, w)
    return [(top, left), (top, right), (bottom, left), (bottom, right)]


def _stream_id(split: str) -> int:
    return DECOY_SPLITS.index(split)


def plant(
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    cfg: DecoyConfig,
    num_classes: int,
    epoch: int = 0,
) -> DecoyImages:
    """The decoy version of `images` for `split` (a name of DECOY_SPLITS), deterministic in (cfg.seed, split,
    epoch): the train mixture is drawn anew each epoch, the evaluation splits always read epoch 0."""
    labels = np.array(labels)  # its own writable copy (the loaded labels are shared and read-only)
    n = len(labels)
    rng = np.random.default_rng([cfg.seed, _stream_id(split), epoch])
    corners = rng.integers(0, 4, n)
    other = (labels + rng.integers(1, num_classes, n)) % num_classes
    blanked = np.zeros(n, bool)
    if split == "train":
        cues = np.where(rng.random(n) < cfg.bias, labels, other)
        role = rng.random(n)
        blanked = role < cfg.context_only
        cues = np.where((role >= cfg.context_only) & (role < cfg.context_only + cfg.neutral), NEUTRAL, cues)
    elif split.endswith("-ood"):
        cues = other
    elif split.endswith("-neutral"):
        cues = np.full(n, NEUTRAL)
    else:
        cues = labels.copy()
    out = images.copy()
    out[blanked] = 0
    foreground = out > 0
    shades = shade(cues)
    for k, (rows, cols) in enumerate(_corner_slices(*images.shape[1:], cfg.size)):
        sel = corners == k
        out[sel, rows, cols] = shades[sel, None, None]
        foreground[sel, rows, cols] = False
    return DecoyImages(out, labels, cues, corners, blanked, foreground, cfg.size)


class DecoySource:
    """A decoy dataset's files, read once: `split(name)` plants the decoy in the right images."""

    def __init__(self, cfg: DecoyConfig) -> None:
        check_decoy_config(cfg)
        self.cfg = cfg
        self.classes = DECOY_DATASETS[cfg.dataset][1]
        root = resolve_root(cfg)
        train_images, train_labels = load_part(root, cfg.dataset, "train")
        if cfg.n_val >= len(train_labels):
            raise CftError(
                f"data.decoy.n_val={cfg.n_val} leaves no training images of the {len(train_labels)} in {root}"
            )
        cut = len(train_labels) - cfg.n_val
        self._parts = {
            "train": (train_images[:cut], train_labels[:cut]),
            "val": (train_images[cut:], train_labels[cut:]),
        }
        self._root = root

    def _raw(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in DECOY_SPLITS:
            raise CftError(f"decoy split must be one of {', '.join(DECOY_SPLITS)}, got {split!r}")
        part = split.split("-")[0]
        if part == "test" and "test" not in self._parts:
            self._parts["test"] = load_part(self._root, self.cfg.dataset, "test")
        return self._parts[part]

    def split(self, name: str, n: int | None = None, epoch: int = 0) -> DecoyImages:
        """The first `n` images (all: None) of split `name` with their decoys."""
        images, labels = self._raw(name)
        planted = plant(images, labels, name, self.cfg, len(self.classes), epoch)
        return planted if n is None else planted.head(n)

    def size_of(self, name: str) -> int:
        return len(self._raw(name)[1])


class DecoyStream:
    """The train split as a dataset whose decoys (corners, shades, the mixture) are drawn anew each epoch: the
    trainer calls `set_epoch` before each epoch, and a resumed run sees the same draws."""

    def __init__(self, source: DecoySource, n: int | None = None) -> None:
        self.source, self.n = source, n
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        import torch

        planted = self.source.split("train", self.n, epoch)
        self.images = torch.from_numpy(planted.rgb())
        self.labels = torch.from_numpy(planted.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i]}
