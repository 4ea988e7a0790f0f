#!/usr/bin/env python
"""The prepared GPU check: one script, one table, about 8 minutes on one GPU.

    python benchmarks/gpu_check.py                      # ViT-B/16 at 224 px on cuda
    python benchmarks/gpu_check.py --device cpu --tiny  # the same checks at toy sizes (what the test suite runs)

1. The step benchmark: plain, cft and reference steps (as benchmarks/bench_train_step.py defines them), batch 8 and
   64 (--tiny: 2 and 4), fp32 and bf16 autocast: ms per step, images/s, peak CUDA memory.
2. Relevance on the device against the CPU (fp32, max |difference|), and bf16 autocast against fp32 on the device.
3. 20 steps of `cft finetune` on a random-weight model over a synthetic image tree with masks from the store.
4. `cft evaluate` throughput on a synthetic JPEG tree (imagenet-val layout) with data-loader workers.

Nothing is downloaded: every model has random weights. Prints a markdown table; --json writes the rows too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:
    import cft
except ImportError:  # a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import cft
from cft.losses import CFTLoss

FULL = {"model": "vit_base_patch16_224", "kwargs": {}, "img": 224, "batches": (8, 64), "steps": 10, "warmup": 3}
TINY = {
    "model": "vit_tiny_patch16_224",
    "kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2},
    "img": 32,
    "batches": (2, 4),
    "steps": 2,
    "warmup": 1,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes: seconds on a CPU (the test suite runs this)")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here; use --device cpu (with --tiny for a quick check)")
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(size: dict, num_classes: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"img_size": size["img"], "num_classes": num_classes, **size["kwargs"]}
    return cft.load_model(size["model"], **kwargs).to(device)


def step_functions(model, optimizer, images, labels, mask) -> dict:
    loss_fn = CFTLoss()

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def cft_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        maps, logits = cft.relevance_with_logits(model, images)
        loss_fn(maps, mask, logits)["loss"].backward()
        optimizer.step()

    def reference() -> None:
        optimizer.zero_grad(set_to_none=True)
        maps = cft.relevance(model, images)
        loss_fn(maps, mask, model(images))["loss"].backward()
        optimizer.step()

    return {"plain": plain, "cft": cft_step, "reference": reference}


def step_rows(size: dict, device: torch.device) -> list[dict]:
    """ms/step, images/s and peak memory of each step type, batch size and precision."""
    rows = []
    for batch in size["batches"]:
        for precision in ("fp32", "bf16"):
            model = make_model(size, 1000, device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            images = torch.randn(batch, 3, size["img"], size["img"], device=device)
            labels = torch.randint(0, 1000, (batch,), device=device)
            grid = cft.vit_layout(model).grid(model, (size["img"], size["img"]))
            mask = (torch.rand(batch, *grid, device=device) > 0.5).float()
            for name, fn in step_functions(model, optimizer, images, labels, mask).items():
                amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                times = []
                for k in range(size["warmup"] + size["steps"]):
                    sync(device)
                    t0 = time.perf_counter()
                    with amp:
                        fn()
                    sync(device)
                    if k >= size["warmup"]:
                        times.append(time.perf_counter() - t0)
                ms = statistics.median(times) * 1e3
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
                rows.append(
                    {
                        "check": f"step {name}",
                        "setting": f"batch {batch}, {precision}",
                        "ms": ms,
                        "images_per_s": batch / ms * 1e3,
                        "peak_mib": peak,
                    }
                )
            del model, optimizer
    return rows


def relevance_rows(size: dict, device: torch.device) -> list[dict]:
    """Relevance on the device against the CPU (fp32), and bf16 autocast against fp32 on the device."""
    model = make_model(size, 1000, torch.device("cpu")).eval()
    images = torch.randn(size["batches"][0], 3, size["img"], size["img"])
    on_cpu = cft.relevance(model, images).detach()
    model = model.to(device)
    on_device = cft.relevance(model, images.to(device)).detach()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        in_bf16 = cft.relevance(model, images.to(device)).detach()
    return [
        {"check": "relevance", "setting": f"{device.type} vs cpu, fp32", "max_abs_diff": _diff(on_device, on_cpu)},
        {"check": "relevance", "setting": f"bf16 vs fp32 on {device.type}", "max_abs_diff": _diff(in_bf16, on_device)},
    ]


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


class ChannelSegmenter:
    """Synthetic masks: a phrase's pixels are where one colour channel (chosen by the phrase) is above 128."""

    name = "channel"

    def identity(self) -> dict:
        return {"name": self.name}

    def segment(self, images, phrases):
        out = []
        for image, names in zip(images, phrases, strict=True):
            arr = np.asarray(image)
            out.append({p: (arr[..., zlib.crc32(p.encode()) % 3] > 128, 1.0) for p in names})
        return out


def write_tree(root: Path, classes: list[str], per_class: int, side: int, suffix: str) -> None:
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"img{k}{suffix}", quality=90)


def finetune_row(size: dict, device: torch.device, tmp: Path) -> dict:
    """20 steps of `cft finetune` over a synthetic tree with masks built into the store."""
    from cft.cli import main
    from cft.concepts.bank import Concept, ConceptBank
    from cft.grounding.build import run_masks

    classes = ["goldfish", "tabby cat"]
    batch = size["batches"][0]
    per_class = 10 * batch  # 20 steps of `batch` images in one epoch
    write_tree(tmp / "train", classes, per_class, size["img"] + 8, ".png")
    bank = ConceptBank(
        concepts={c: [Concept(name=f"{c} part")] for c in classes},
        dropped={c: [] for c in classes},
        provenance={"backend": "bank"},
    )
    bank.save(tmp / "bank.json")
    run_masks(tmp / "train", tmp / "bank.json", ChannelSegmenter(), tmp / "masks", progress=False)
    kwargs = {"img_size": size["img"], **size["kwargs"]}
    sets = [
        f"model.name={size['model']}",
        f"model.kwargs={json.dumps(kwargs)}",
        "data.source=folder",
        f"data.root={tmp / 'train'}",
        f"data.store={tmp / 'masks'}",
        f"data.image_size={size['img']}",
        f"data.resize={size['img'] + 8}",
        "objective.name=cft",
        "train.epochs=1",
        f"train.batch_size={batch}",
        f"train.device={device}",
        "train.select_by=last",
    ]
    (tmp / "recipe.yaml").write_text("{}\n")  # every field from --set
    t0 = time.perf_counter()
    argv = ["finetune", "--config", str(tmp / "recipe.yaml"), "--out", str(tmp / "run"), "--no-progress"]
    code = main([*argv, *(f"--set={s}" for s in sets)])
    seconds = time.perf_counter() - t0
    steps = len(classes) * per_class // batch
    records = (
        [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()] if not code else []
    )
    loss = records[-1]["train_loss"] if records else float("nan")
    return {"check": "cft finetune", "setting": f"{steps} steps, batch {batch}", "seconds": seconds, "exit": code,
            "train_loss": loss}  # fmt: skip


def evaluate_row(size: dict, device: torch.device, tmp: Path) -> dict:
    """`cft evaluate` images/s on a synthetic imagenet-val tree (wnid folders of JPEGs), with workers."""
    from cft.cli import main
    from cft.data.classes import imagenet_wnids

    per_class = 8 if size is TINY else 64
    wnids = list(imagenet_wnids()[:4])
    write_tree(tmp / "val", wnids, per_class, 256 if size is FULL else 48, ".JPEG")
    args = ["evaluate", "--model", size["model"], "--bench", f"imagenet-val={tmp / 'val'}", "--out",
            str(tmp / "eval.json"), "--workers", "2", "--batch-size", str(size["batches"][-1]), "--device",
            str(device), "--no-progress"]  # fmt: skip
    for key, value in {"img_size": size["img"], **size["kwargs"]}.items():
        args += ["--model-arg", f"{key}={value}"]
    t0 = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - t0
    n = per_class * len(wnids)
    return {"check": "cft evaluate", "setting": f"{n} JPEGs, 2 workers", "seconds": seconds, "exit": code,
            "images_per_s": n / seconds}  # fmt: skip


def table(rows: list[dict]) -> str:
    keys = ["ms", "images_per_s", "peak_mib", "max_abs_diff", "seconds", "train_loss", "exit", "error"]
    lines = ["| check | setting | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        cells = [_cell(r.get(k)) for k in keys]
        lines.append(f"| {r['check']} | {r['setting']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    size = TINY if args.tiny else FULL
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: {size['model']} at {size['img']} px on {name}, torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        checks = [
            ("step", lambda: step_rows(size, device)),
            ("relevance", lambda: relevance_rows(size, device)),
            ("cft finetune", lambda: [finetune_row(size, device, Path(tmp) / "finetune")]),
            ("cft evaluate", lambda: [evaluate_row(size, device, Path(tmp) / "evaluate")]),
        ]
        for check_name, check in checks:
            new_rows = guarded(check_name, check)
            print(table(new_rows), flush=True)  # as it comes: a later failure or time-out loses nothing
            rows += new_rows
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nall checks:\n{table(rows)}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0 if all(r.get("exit", 0) == 0 for r in rows) else 1


def guarded(name: str, check) -> list[dict]:
    """The check's rows, or one row naming its error: one failing check (a GPU-only bug) must not cost the others."""
    try:
        return check()
    except Exception as err:  # noqa: BLE001 - reported in the table, the exit code says it failed
        return [{"check": name, "setting": "failed", "error": f"{type(err).__name__}: {err}"[:300], "exit": 1}]


if __name__ == "__main__":
    sys.exit(main())
