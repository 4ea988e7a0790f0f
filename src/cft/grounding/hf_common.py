"""Plumbing shared by the Hugging Face segmenters: input checks, model loading, batching and mask helpers."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cft.errors import CftError
from cft.segmenter import PhraseMasks

ModelPair = tuple[Any, Any]  # (model, processor), already built by the caller
CUSTOM = "custom"  # what identity() reports for a model given as objects instead of an id


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- inputs -------------------------------------------------------------------------------------------------------


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {x.shape}"
    return f"a {type(x).__name__}"


def as_rgb(image: Any, index: int) -> np.ndarray:
    """A PIL image or a uint8 (H, W, 3) array as a uint8 (H, W, 3) array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    ok = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if ok and image.shape[0] > 0 and image.shape[1] > 0:
        return image
    expected = "a PIL image or a uint8 numpy array of shape (H, W, 3)"
    raise CftError(f"images[{index}]: expected {expected}, got {_describe(image)}")


def check_phrases(phrases: Any, index: int) -> list[str]:
    """One image's phrases, duplicates dropped (first kept); each must be a non-empty string."""
    if isinstance(phrases, str) or not isinstance(phrases, Sequence):
        raise CftError(f"phrases[{index}]: expected a list of phrase strings, got {phrases!r}")
    out: list[str] = []
    for j, p in enumerate(phrases):
        if not isinstance(p, str) or not p.strip():
            raise CftError(f"phrases[{index}][{j}]: expected a non-empty phrase string, got {p!r}")
        if p not in out:
            out.append(p)
    return out


def check_inputs(images: Sequence[Any], phrases: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], list[list[str]]]:
    if len(images) != len(phrases):
        raise CftError(f"{len(images)} images but {len(phrases)} phrase lists: give one list of phrases per image")
    arrays = [as_rgb(im, i) for i, im in enumerate(images)]
    return arrays, [check_phrases(p, i) for i, p in enumerate(phrases)]


def check_number(name: str, value: Any, low: float | None = None) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise CftError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CftError(f"batch_size must be a positive integer, got {value!r}")
    return value


def check_device(value: str | None) -> torch.device:
    try:
        return torch.device(value or default_device())
    except (RuntimeError, TypeError) as e:
        raise CftError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from e


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


# ---- loading ------------------------------------------------------------------------------------------------------


def _looks_like_path(model_id: str) -> bool:
    """Hub ids are "name" or "owner/name"; anything else is meant as a folder."""
    return os.path.isabs(model_id) or model_id.startswith((".", "~")) or model_id.count("/") > 1 or "\\" in model_id


def load_pretrained(loader: Any, model_id: Any, option: str, local_files_only: bool) -> Any:
    """`loader.from_pretrained(model_id)`, with a CftError that says how to get the model when that fails."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise CftError(f"{option} must be a Hugging Face model id or a local folder, got {model_id!r}")
    if _looks_like_path(model_id) and not os.path.isdir(os.path.expanduser(model_id)):
        raise CftError(f"{option}: no folder {model_id!r}; give a folder written by save_pretrained or a model id")
    folder = os.path.expanduser(model_id)
    if os.path.isdir(folder):
        check_weight_files(folder, option)
    try:
        return loader.from_pretrained(folder, local_files_only=local_files_only)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, a pickle refused, a truncated file: all one answer
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CftError(
            f"{option}: cannot load {model_id!r} ({first}). Run once online (the Hugging Face hub reachable, "
            f"HF_HUB_OFFLINE unset, local_files_only=False) to cache it, or fetch it elsewhere with "
            f"`hf download {model_id} --local-dir DIR` and pass {option}=DIR"
        ) from e


def check_weight_files(folder: str, option: str) -> None:
    """A local model folder's weights must be whole safetensors files: a truncated download or a pickled
    (.bin/.pt) weight file is refused with the folder named, before transformers reads anything."""
    from safetensors import safe_open

    names = sorted(os.listdir(folder))
    pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) and "training_args" not in n]
    if pickled and not any(n.endswith(".safetensors") for n in names):  # transformers prefers safetensors when both
        raise CftError(
            f"{option}: {folder} holds pickled weights ({', '.join(pickled[:3])}); cft reads only .safetensors "
            "(a pickle can run code): convert it with save_pretrained(..., safe_serialization=True)"
        )
    for name in (n for n in names if n.endswith(".safetensors")):
        path = os.path.join(folder, name)
        try:  # safetensors checks the header and that the data covers the file exactly (a cut download fails)
            with safe_open(path, framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - a bad header in any form
            raise CftError(f"{option}: weight file {path} cannot be read ({e}); is the download complete?") from None


def check_text_processor(processor: Any, folder: str, option: str) -> None:
    """A processor must give different phrases different token ids: without its vocabulary files transformers
    may build a tokenizer that maps every phrase to the same few tokens, and every concept gets the same mask."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return
    probes = ["a wheel", "the head of a bird", "striped fur"]
    try:
        ids = [tuple(tokenizer(p)["input_ids"]) for p in probes]
    except Exception as e:  # noqa: BLE001
        raise CftError(f"{option}: the tokenizer of {folder} cannot encode a phrase ({e})") from None
    if len(set(ids)) < len(probes):
        raise CftError(
            f"{option}: the tokenizer of {folder} maps different phrases to the same tokens (its vocabulary files "
            "are missing or broken), so every concept would get the same mask; download the whole model folder"
        )


def load_pair(model_cls: Any, processor_cls: Any, model_id: str, option: str, local_files_only: bool) -> ModelPair:
    from cft.models import check_finite

    model = load_pretrained(model_cls, model_id, option, local_files_only)
    check_finite(model.state_dict(), f"{option}: the weights of {model_id}")
    processor = load_pretrained(processor_cls, model_id, option, local_files_only)
    check_text_processor(processor, model_id, option)
    return model, processor


def check_pair(pair: Any, option: str) -> ModelPair:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], torch.nn.Module):
        raise CftError(f"{option} must be a (model, processor) pair of built transformers objects, got {pair!r:.80}")
    return pair[0], pair[1]


def resolve(pair: Any, model_id: str, option: str, loaders: tuple[Any, Any], local_files_only: bool) -> ModelPair:
    """Injected objects win over the id; the id is loaded otherwise."""
    if pair is not None:
        return check_pair(pair, option.removesuffix("_model"))
    return load_pair(*loaders, model_id, option, local_files_only)


# ---- masks --------------------------------------------------------------------------------------------------------


def found(mask: np.ndarray, score: float) -> tuple[np.ndarray, float]:
    """An empty mask means "not found": its score is 0.0 whatever the model said."""
    mask = np.asarray(mask, dtype=bool)
    return mask, float(score) if mask.any() else 0.0


def union(masks: Any, shape: tuple[int, int]) -> np.ndarray:
    """(n, H, W) masks (any dtype, nonzero = in) to one (H, W) bool mask; n = 0 gives an empty mask."""
    if masks.shape[0] == 0:
        return np.zeros(shape, dtype=bool)
    if isinstance(masks, torch.Tensor):
        return (masks != 0).any(dim=0).cpu().numpy()
    return (np.asarray(masks) != 0).any(axis=0)


def clip_boxes(boxes: np.ndarray, scores: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """xyxy pixel boxes clipped to an (H, W) image; boxes left with no area are dropped with their scores."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, shape[0])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], np.asarray(scores, dtype=np.float32).reshape(-1)[keep]


def heatmap_mask(logits: torch.Tensor, shape: tuple[int, int], threshold: float) -> tuple[np.ndarray, float]:
    """(h, w) logits -> bilinear resize to (H, W) -> sigmoid -> mask of p > threshold; score = max p in the image."""
    resized = F.interpolate(logits.float()[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    prob = resized.sigmoid().cpu().numpy()
    return found(prob > threshold, prob.max())


def empty_results(n: int) -> list[PhraseMasks]:
    return [{} for _ in range(n)]


# ---- the common front end -----------------------------------------------------------------------------------------


class HFSegmenter:
    """Checks inputs, skips images without phrases and runs the backend under inference mode."""

    name = ""

    def __init__(self, batch_size: int, device: str | None) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.device = check_device(device)

    def segment(self, images: Sequence[Any], phrases: Sequence[Sequence[str]]) -> list[PhraseMasks]:
        """Per image {phrase: (bool mask at the image's size, score)}; an empty mask (not found) has score 0.0."""
        arrays, lists = check_inputs(images, phrases)
        out = empty_results(len(arrays))
        todo = [i for i, p in enumerate(lists) if p]
        with torch.inference_mode():
            results = self._segment([arrays[i] for i in todo], [lists[i] for i in todo])
        for i, result in zip(todo, results, strict=True):
            out[i] = {p: result[p] for p in lists[i]}
        return out

    def identity(self) -> dict[str, Any]:
        """Everything that changes the masks (JSON-serialisable); stored masks are keyed by it."""
        return {"name": self.name, **self._settings()}

    def _segment(self, images: list[np.ndarray], phrases: list[list[str]]) -> list[PhraseMasks]:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError


def ready(pair: ModelPair, device: torch.device) -> ModelPair:
    """The model in eval mode on the device."""
    model, processor = pair
    return model.to(device).eval(), processor
