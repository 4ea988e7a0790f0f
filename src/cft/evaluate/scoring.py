"""Scoring one model on one evaluation set: batched top-k prediction (sharded under torchrun), top-1 and top-5, the
relevance scores of ImageNet-Segmentation, and the mean ± std tables over runs.

Per evaluation set (and protocol): batched inference under `torch.inference_mode`, channels-last and bf16 autocast on
GPUs that have them; logits restricted to `EvalSet.allowed` when the protocol says so (ImageNet-A/R 200-class,
ObjectNet); a prediction is correct when it is one of the sample's `targets` (ObjectNet classes map to several
ImageNet classes). Waterbirds adds group accuracies; ImageNet-Segmentation scores the relevance maps instead.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cft.data.evalsets.common import EvalSet
from cft.data.images import load_image
from cft.errors import CftError
from cft.evaluate.metrics import group_accuracies, mean_std, relevance_alignment
from cft.precision import autocast
from cft.progress import progress_bar

TOPK = 5


@dataclass
class EvalOptions:
    batch_size: int = 64
    workers: int = 4
    device: str = "auto"  # auto: cuda when available
    channels_last: bool | None = None  # None: on CUDA
    bf16: bool | None = None  # None: on CUDA devices that support bf16
    mean: tuple[float, ...] | None = None  # None: the model's pretrained config
    std: tuple[float, ...] | None = None
    relevance_method: str = "grad-rollout"  # for imagenet-seg
    progress: bool = True

    def resolved_device(self) -> torch.device:
        from cft.distributed import device_for

        return device_for(self.device, what="--device")


class _Images(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable, border: int = 0) -> None:
        self.paths, self.transform, self.border = list(paths), transform, border

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.paths[i], orient=False)  # raw, as the sets' published protocols read them
        if self.border:
            b = self.border
            image = image.crop((b, b, image.width - b, image.height - b))
        return self.transform(image), i


def eval_transform(model: nn.Module, opts: EvalOptions):
    """timm's eval transform for `model` (resize, centre crop, normalise), normalisation overridable."""
    from timm.data import create_transform

    from cft.data.images import preprocessor

    config = dict(preprocessor(model).config)
    if opts.mean is not None:
        config["mean"] = tuple(opts.mean)
    if opts.std is not None:
        config["std"] = tuple(opts.std)
    return create_transform(**config)


def _autocast(device: torch.device, opts: EvalOptions):
    return autocast(device, "auto" if opts.bf16 is None else "bf16" if opts.bf16 else "none")


def predict_topk(model: nn.Module, eval_set: EvalSet, opts: EvalOptions, transform=None, k: int = TOPK) -> np.ndarray:
    """(N, k) class indices of the k best logits per sample (within `eval_set.allowed` when set), in sample order.
    Under torchrun each rank predicts every WORLD_SIZE-th sample and every rank gets the whole array back."""
    from cft.distributed import Distributed

    dist = Distributed.current()
    mine = list(range(dist.rank, len(eval_set.samples), dist.world_size))
    local, nonfinite = _predict(model, eval_set, mine, opts, transform, k)
    out = np.zeros((len(eval_set.samples), k), dtype=np.int64)
    bad = 0
    for indices, rows, count in dist.gather((mine, local, nonfinite)):
        out[indices] = rows
        bad += count
    if bad:  # every rank raises alike: the counts were gathered
        raise NonFiniteOutput(bad, len(eval_set.samples), eval_set.name)
    return out


class NonFiniteOutput(CftError):
    """The model's logits held NaN or infinity for some images: their ranking means nothing, so nothing is
    scored (a diverged checkpoint, an overflow under bf16, a zero --std)."""

    def __init__(self, count: int, total: int, where: str) -> None:
        super().__init__(f"the model's outputs are not finite for {count} of {total} images of {where}")
        self.count, self.total, self.where = count, total, where


def _predict(
    model: nn.Module, eval_set: EvalSet, mine: list[int], opts: EvalOptions, transform, k: int
) -> tuple[np.ndarray, int]:
    device = opts.resolved_device()
    channels_last = opts.channels_last if opts.channels_last is not None else device.type == "cuda"
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    allowed = None if eval_set.allowed is None else torch.tensor(eval_set.allowed, device=device)
    border = int(eval_set.info.get("crop_border", 0)) if isinstance(eval_set.info, Mapping) else 0
    data = _Images([eval_set.samples[i].path for i in mine], transform or eval_transform(model, opts), border)
    loader = DataLoader(data, batch_size=opts.batch_size, num_workers=opts.workers, pin_memory=device.type == "cuda")
    out = np.zeros((len(data), k), dtype=np.int64)
    nonfinite = 0
    bar = _bar(len(data), eval_set.name, opts.progress)
    with torch.inference_mode(), _autocast(device, opts):
        for images, index in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.to(memory_format=torch.channels_last)
            logits = model(images).float()
            nonfinite += int((~torch.isfinite(logits).all(dim=1)).sum())
            if allowed is not None:
                logits = logits[:, allowed]
            top = logits.topk(min(k, logits.shape[1]), dim=1).indices
            if allowed is not None:
                top = allowed[top]
            out[index.numpy(), : top.shape[1]] = top.cpu().numpy()
            if top.shape[1] < k:
                out[index.numpy(), top.shape[1] :] = -1
            if bar is not None:
                bar.update(len(index))
    if bar is not None:
        bar.close()
    return out, nonfinite


def _bar(total: int, desc: str, enabled: bool):
    return progress_bar(total, desc, unit="img", enabled=enabled)


def correctness(eval_set: EvalSet, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: is the best prediction a target, is any of the top-5 a target."""
    targets = [set(s.targets) for s in eval_set.samples]
    top1 = np.array([int(t[0]) in ts for t, ts in zip(top, targets, strict=True)], bool)
    top5 = np.array([any(int(p) in ts for p in t) for t, ts in zip(top, targets, strict=True)], bool)
    return top1, top5


def score(
    eval_set: EvalSet,
    top: np.ndarray,
    seen: set[int] | None = None,
    train_group_sizes: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """top1, top5, n; seen / unseen top-1 when a class split is given; group accuracies when samples have groups."""
    if len(eval_set.samples) == 0:
        raise CftError(f"evaluation set {eval_set.name} has no images")
    c1, c5 = correctness(eval_set, top)
    result: dict[str, Any] = {"top1": float(c1.mean()), "top5": float(c5.mean()), "n": len(c1)}
    if seen is not None:
        is_seen = np.array([bool(set(s.targets) & seen) for s in eval_set.samples], bool)
        for name, sel in (("seen", is_seen), ("unseen", ~is_seen)):
            result[f"top1_{name}"] = float(c1[sel].mean()) if sel.any() else None
            result[f"n_{name}"] = int(sel.sum())
    groups = [s.group for s in eval_set.samples]
    if all(g is not None for g in groups):
        g = group_accuracies(c1, np.array(groups), train_group_sizes)
        result.update(
            worst_group=g["worst_group"],
            group_average=g["average"],
            group_weighted_average=g["weighted_average"],
            per_group={str(k): v for k, v in g["per_group"].items()},
        )
    return result


def per_class_rows(eval_set: EvalSet, top: np.ndarray, class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """One row per class (the sample's first target): n, top-1, top-5."""
    c1, c5 = correctness(eval_set, top)
    first = np.array([s.targets[0] if s.targets else -1 for s in eval_set.samples])
    rows = []
    for cls in sorted(set(first.tolist())):
        sel = first == cls
        name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else str(cls)
        rows.append(
            {
                "eval_set": eval_set.name,
                "class": cls,
                "name": name,
                "n": int(sel.sum()),
                "top1": float(c1[sel].mean()),
                "top5": float(c5[sel].mean()),
            }
        )
    return rows


def mask_transform(config: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The geometry of timm's eval transform (resize by 1 / crop_pct, centre crop) for a boolean (H, W) mask, as a
    torchvision.transforms.v2 pipeline on a tv_tensors.Mask: nearest neighbour at pixel centres (as PIL's)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    size = tuple(config["input_size"][1:])
    crop_pct = float(config.get("crop_pct") or 0.875)
    scale = tuple(math.floor(x / crop_pct) for x in size)
    resize = v2.Resize(scale[0] if scale[0] == scale[1] else scale, interpolation=v2.InterpolationMode.NEAREST_EXACT)
    pipeline = v2.Compose([resize, v2.CenterCrop(size)])

    def apply(mask: np.ndarray) -> np.ndarray:
        return pipeline(tv_tensors.Mask(torch.from_numpy(np.asarray(mask, bool))[None]))[0].numpy()

    return apply


def segmentation_scores(model: nn.Module, eval_set: EvalSet, opts: EvalOptions, read_item: Callable) -> dict[str, Any]:
    """Pixel accuracy, mIoU and mAP of the relevance maps (predicted class) against the ground-truth masks; the
    image and its mask get the same resize and centre crop. Relevance needs gradients: no inference mode here."""
    from cft.data.images import preprocessor
    from cft.relevance import relevance, upsample

    device = opts.resolved_device()
    model = model.to(device).eval()
    prep = preprocessor(model)
    geometry = mask_transform(prep.config)
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    images: list[torch.Tensor] = []

    def flush() -> None:
        r = relevance(model, torch.stack(images).to(device), method=opts.relevance_method)
        maps.extend(upsample(r, prep.input_size).detach().float().cpu().numpy())
        images.clear()

    for sample in eval_set.samples:
        image, gt = read_item(sample.path, sample.index)
        images.append(prep(Image.fromarray(image))[0])
        masks.append(geometry(gt))
        if len(images) == opts.batch_size:
            flush()
    if images:
        flush()
    return {**relevance_alignment(np.stack(maps), np.stack(masks)), "n": len(maps), "method": opts.relevance_method}


# The version of the results files (`cft evaluate`'s OUT, `cft run`'s results.json): 2 names the evaluation sets
# scores "eval_sets", their descriptions "eval_set_info" and the per-class CSV's first column "eval_set" (format 1,
# with no "format" key: "benchmarks", "benchmark_info" and "benchmark").
RESULTS_FORMAT = 2


def aggregate(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[dict, dict]:
    """Mean and standard deviation over runs (checkpoints or seeds) of every number, per evaluation set and metric."""
    return mean_std(list(runs.values()))


def markdown_table(mean: Mapping[str, Mapping[str, float]], std: Mapping[str, Mapping[str, float]], runs: int) -> str:
    """Evaluation sets as rows: top-1 and top-5 in percent (mean ± std over runs), n; other metrics after."""
    lines = [
        f"| evaluation set | top-1 (%) | top-5 (%) | n | other |  (mean ± std over {runs} run{'s' * (runs != 1)})",
        "|---|---|---|---|---|",
    ]
    for b, m in mean.items():
        top1, top5 = (_pct_cell(m, std[b], key) for key in ("top1", "top5"))
        numbers = {k: v for k, v in m.items() if isinstance(v, (int, float)) and k not in ("top1", "top5", "n")}
        other = ", ".join(f"{k} {100 * v:.2f}" for k, v in numbers.items() if not k.startswith("n_"))
        lines.append(f"| {b} | {top1} | {top5} | {m.get('n', '-')} | {other} |")
    return "\n".join(lines) + "\n"


def _pct_cell(mean: Mapping[str, float], std: Mapping[str, float], key: str) -> str:
    return f"{100 * mean[key]:.2f} ± {100 * std[key]:.2f}" if key in mean else "-"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
