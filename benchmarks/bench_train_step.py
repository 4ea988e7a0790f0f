#!/usr/bin/env python
"""Throughput and peak memory of one CFT training step against plain fine-tuning and the reference recipe.

Step types, all on the same model, batch and optimiser (AdamW), in train mode:

  plain             cross-entropy forward + backward + step on the model as timm builds it (fused attention)
  cft               cft.relevance_with_logits(..., method="grad-rollout", create_graph=False) (ONE forward),
                    CFTLoss()(relevance, mask, logits)["loss"].backward(), step
  cft-create-graph  the same with create_graph=True
  reference         as the original research code: a hooked forward for the relevance map (cft.relevance, same
                    settings) PLUS a second ordinary forward for the logits, then the same loss, backward, step
  cft[METHOD]       (--methods) the CFT step with another relevance method at its default create_graph
  plain-rows        (only when asked for in --run) plain, with the last block's attention projection and MLP on the
                    tokens the head reads, as the cft step runs it: the like-for-like baseline

Each step type runs in its own fresh subprocess (this script re-invokes itself), one after another. Time: median
of --steps timed steps after --warmup steps. Peak memory on CPU: peak RSS (ru_maxrss) over warm-up and timed steps
minus the RSS right before the first step (after model, optimiser and data creation and a gc); on CUDA:
torch.cuda.max_memory_allocated minus the memory allocated before the first step.

    PYTHONPATH=src python benchmarks/bench_train_step.py                 # default configuration, table + targets
    PYTHONPATH=src python benchmarks/bench_train_step.py --methods all --json bench.json
    PYTHONPATH=src python benchmarks/bench_train_step.py --phases        # where the time of a cft step goes
    PYTHONPATH=src python benchmarks/bench_train_step.py --img-size 224 --patch 16 --depth 12 --batch 8 \
        --run plain,cft,reference --interleave 2 --steps 3          # the paper's resolution, one process

Targets (printed as PASS/FAIL): cft time <= 1.3x plain below 224 px (the default configuration) and <= 1.4x at
224 px and up; cft >= 1.4x faster than reference; cft peak memory <= 1.5x plain. Exit code 0 unless --strict and a
target FAILs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import cft
except ImportError:  # run from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import cft
from cft.losses import CFTLoss
from cft.relevance.timm_vit import last_block_on_rows

BASE_STEPS = ("plain", "cft", "cft-create-graph", "reference", "plain-rows")
DEFAULT_STEPS = BASE_STEPS[:4]
EXTRA_METHODS = ("rollout", "attn-lrp", "gradcam", "input-grad")
RESULT_MARK = "@@BENCH_RESULT@@ "
TARGET_CFT_VS_PLAIN_TIME = {"below 224 px": 1.3, "224 px and up": 1.4}
TARGET_CFT_SPEEDUP_OVER_REFERENCE = 1.4
TARGET_CFT_VS_PLAIN_MEMORY = 1.5
NOISE_SPREAD = 1.5


# --------------------------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name (default: %(default)s)")
    p.add_argument("--depth", type=int, default=6, help="number of blocks (default: %(default)s)")
    p.add_argument("--embed-dim", "--width", dest="embed_dim", type=int, default=192, help="default: %(default)s")
    p.add_argument("--heads", type=int, default=3, help="attention heads (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    p.add_argument("--patch", type=int, default=8, help="patch side in pixels (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=100, help="default: %(default)s")
    p.add_argument("--batch", type=int, default=32, help="images per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per step type (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: %(default)s)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: %(default)s")
    p.add_argument(
        "--run",
        default=",".join(DEFAULT_STEPS),
        help=f"comma-separated step types to run, of {', '.join(BASE_STEPS)} (default: all but plain-rows)",
    )
    p.add_argument(
        "--methods",
        default="",
        help=f"also run the CFT step with these relevance methods: comma-separated of {', '.join(EXTRA_METHODS)}, "
        "or 'all'",
    )
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--json", metavar="OUT", help="also write config, machine and results as JSON to OUT")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    p.add_argument(
        "--phases",
        action="store_true",
        help="instead: time the phases (forward, autograd.grad, rollout, loss, backward, step) of the plain, cft and "
        "reference steps in one process",
    )
    p.add_argument(
        "--interleave",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="instead of a subprocess per step type: one process, the step types interleaved for ROUNDS rounds "
        "of --steps steps each, the best round's median reported (robust to a noisy shared machine; no memory)",
    )
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("depth", "embed_dim", "heads", "img_size", "patch", "num_classes", "batch", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.embed_dim % args.heads:
        p.error("--embed-dim must be divisible by --heads")
    if args.img_size % args.patch:
        p.error("--img-size must be divisible by --patch")
    args.run_steps = [s for s in (x.strip() for x in args.run.split(",")) if s]
    unknown = [s for s in args.run_steps if s not in BASE_STEPS]
    if unknown:
        p.error(f"unknown step type(s) {unknown}; choose from {', '.join(BASE_STEPS)}")
    methods = EXTRA_METHODS if args.methods.strip() == "all" else [m.strip() for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in EXTRA_METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(EXTRA_METHODS)} or all")
    args.run_steps += [f"cft[{m}]" for m in methods]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("warning: --device cuda but CUDA is not available; running on cpu", file=sys.stderr)
        args.device = "cpu"
    return args


def worker_argv(args: argparse.Namespace, step: str) -> list[str]:
    """The command line that re-runs this script as the worker for one step type."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        *("--model", args.model, "--depth", str(args.depth), "--embed-dim", str(args.embed_dim)),
        *("--heads", str(args.heads), "--img-size", str(args.img_size), "--patch", str(args.patch)),
        *("--num-classes", str(args.num_classes), "--batch", str(args.batch), "--steps", str(args.steps)),
        *("--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device),
        *("--seed", str(args.seed), "--_worker", step),
    ]


# --------------------------------------------------------------------------------------------- the steps


def build(args: argparse.Namespace):
    """Model (train mode), AdamW, images, labels and a binary mask at the patch grid; seeded, so every worker
    gets the same model and batch."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = cft.load_model(
        args.model,
        pretrained=False,
        img_size=args.img_size,
        patch_size=args.patch,
        depth=args.depth,
        embed_dim=args.embed_dim,
        num_heads=args.heads,
        num_classes=args.num_classes,
    ).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    grid = cft.vit_layout(model).grid(model, (args.img_size, args.img_size))
    mask = (torch.rand(args.batch, *grid, device=device) > 0.5).float()
    return model, optimizer, images, labels, mask


def make_step(step: str, model, optimizer, images, labels, mask):
    """A closure that performs one full training step of the given type."""
    loss_fn = CFTLoss()

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def plain_rows() -> None:  # plain, with the last block on the rows the head reads (as the cft step runs it)
        with last_block_on_rows(model):
            plain()

    def cft_step(method: str, create_graph: bool | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        rel, logits = cft.relevance_with_logits(model, images, method=method, create_graph=create_graph)
        loss_fn(rel, mask, logits)["loss"].backward()
        optimizer.step()

    def reference() -> None:
        optimizer.zero_grad(set_to_none=True)
        rel = cft.relevance(model, images, method="grad-rollout", create_graph=False)  # hooked forward
        logits = model(images)  # second, ordinary forward
        loss_fn(rel, mask, logits)["loss"].backward()
        optimizer.step()

    if step == "plain":
        return plain
    if step == "cft":
        return lambda: cft_step("grad-rollout", False)
    if step == "cft-create-graph":
        return lambda: cft_step("grad-rollout", True)
    if step == "reference":
        return reference
    if step == "plain-rows":
        return plain_rows
    if step.startswith("cft[") and step.endswith("]"):
        method = step[4:-1]
        return lambda: cft_step(method, None)
    raise ValueError(f"unknown step {step!r}")


# --------------------------------------------------------------------------------------------- memory


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux clear_refs 5), so that ru_maxrss afterwards reflects
    only what follows, not transient peaks of import and model creation. Best effort."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- worker


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_worker(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model, optimizer, images, labels, mask = build(args)
    step_fn = make_step(args._worker, model, optimizer, images, labels, mask)
    device = images.device
    gc.collect()
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        peak_reset = True
    else:
        peak_reset = reset_peak_rss()
        before = current_rss_bytes()
        if before is None:  # no /proc: the best baseline left is the peak so far
            before = max_rss_bytes()
    for _ in range(args.warmup):
        step_fn()
    sync(device)
    times, cpu_times = [], []
    for _ in range(args.steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step_fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else max_rss_bytes()
    median = statistics.median(times)
    return {
        "step": args._worker,
        "ms_per_step": median * 1e3,
        "images_per_s": args.batch / median,
        "peak_mib": max(peak - before, 0) / 2**20,
        "cpu_ms_per_step": statistics.median(cpu_times) * 1e3,  # all threads; robust to contention at 1 thread
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "times_ms": [t * 1e3 for t in times],
        "baseline_mib": before / 2**20,
        "peak_total_mib": peak / 2**20,
        "memory_measure": "cuda max_memory_allocated" if device.type == "cuda" else "ru_maxrss - rss",
        "peak_reset": peak_reset,
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------- phases


def run_phases(args: argparse.Namespace) -> None:
    """Time the phases of the plain, cft and reference steps (grad-rollout, create_graph=False) in this process."""
    from cft.relevance import normalize, timm_vit
    from cft.relevance.methods import METHODS, Trace, _positive_gradients, grad_rollout_row

    torch.set_num_threads(args.threads)
    model, optimizer, images, labels, mask = build(args)
    device = images.device
    layout = cft.vit_layout(model)
    grid = layout.grid(model, (args.img_size, args.img_size))
    loss_fn = CFTLoss()
    p = layout.num_prefix_tokens
    backend, spec = timm_vit.backend(model), METHODS["grad-rollout"]
    if not layout.reads_class_token:
        raise SystemExit("--phases supports class-token models only")

    def clock(log: dict[str, list[float]], name: str, t0: float) -> float:
        sync(device)
        t = time.perf_counter()
        log.setdefault(name, []).append((t - t0) * 1e3)
        return t

    def plain(log: dict[str, list[float]]) -> None:
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        t = clock(log, "forward (fused)", t)
        loss = F.cross_entropy(logits, labels)
        t = clock(log, "loss", t)
        loss.backward()
        t = clock(log, "backward", t)
        optimizer.step()
        clock(log, "optimizer step", t)

    def relevance_phases(log: dict[str, list[float]], t: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        # the library's own pieces of relevance_with_logits(method="grad-rollout", create_graph=False)
        with torch.enable_grad(), backend.capture(spec, False) as captured:
            logits = model(images)
            t = clock(log, "forward (hooked, unfused)", t)
            score = logits.gather(1, logits.detach().argmax(1)[:, None]).sum()
            trace = Trace(images, score, captured, p, True, grid, False)
            positives = _positive_gradients(trace)
            t = clock(log, "autograd.grad d score / d attentions", t)
            maps = normalize(grad_rollout_row(trace, positives))
            t = clock(log, "rollout + normalise", t)
        return maps, logits, t

    def guided_step(log: dict[str, list[float]], second_forward: bool) -> None:
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        maps, logits, t = relevance_phases(log, t)
        if second_forward:  # the reference recipe: logits from a second, ordinary forward pass
            logits = model(images)
            t = clock(log, "second forward (fused)", t)
        loss = loss_fn(maps, mask, logits)["loss"]
        t = clock(log, "loss", t)
        loss.backward()
        t = clock(log, "backward", t)
        optimizer.step()
        clock(log, "optimizer step", t)

    def cft_step(log: dict[str, list[float]]) -> None:
        guided_step(log, second_forward=False)

    def reference(log: dict[str, list[float]]) -> None:
        guided_step(log, second_forward=True)

    print(
        f"phases, median ms over {args.steps} steps after {args.warmup} warm-up, batch {args.batch}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, fn in (("plain", plain), ("cft", cft_step), ("reference", reference)):
        for _ in range(args.warmup):
            fn({})
        log: dict[str, list[float]] = {}
        for _ in range(args.steps):
            fn(log)
        total = sum(statistics.median(v) for v in log.values())
        print(f"\n{name}: {total:.1f} ms (sum of phase medians)")
        for phase, values in log.items():
            med = statistics.median(values)
            print(f"  {phase:<40} {med:8.1f} ms  {100 * med / total:5.1f} %")


# --------------------------------------------------------------------------------------------- driver


def machine_info(args: argparse.Namespace) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "threads": args.threads,
    }
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_interleaved(args: argparse.Namespace) -> list[dict]:
    """Every step type on one model in one process, round after round; per type the best round's median."""
    torch.set_num_threads(args.threads)
    model, optimizer, images, labels, mask = build(args)
    device = images.device
    steps = {step: make_step(step, model, optimizer, images, labels, mask) for step in args.run_steps}
    for step_fn in steps.values():
        for _ in range(args.warmup):
            step_fn()
    rounds: dict[str, list[float]] = {step: [] for step in steps}
    for _ in range(args.interleave):
        for step, step_fn in steps.items():
            times = []
            for _ in range(args.steps):
                sync(device)
                t0 = time.perf_counter()
                step_fn()
                sync(device)
                times.append(time.perf_counter() - t0)
            rounds[step].append(statistics.median(times))
    results = []
    for step, medians in rounds.items():
        best = min(medians)
        results.append(
            {
                "step": step,
                "ms_per_step": best * 1e3,
                "images_per_s": args.batch / best,
                "peak_mib": None,
                "min_ms": best * 1e3,
                "max_ms": max(medians) * 1e3,
                "round_medians_ms": [m * 1e3 for m in medians],
            }
        )
    return results


def run_one(args: argparse.Namespace, step: str) -> dict:
    proc = subprocess.run(worker_argv(args, step), stdout=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    return {"step": step, "error": f"worker exited with {proc.returncode}"}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def report(args: argparse.Namespace, results: list[dict]) -> list[dict]:
    by = {r["step"]: r for r in results if "error" not in r}
    plain, ref = by.get("plain"), by.get("reference")
    header = f"{'step':<20} {'ms/step':>9} {'images/s':>9} {'peak MiB':>9} {'time/plain':>10} {'mem/plain':>10}"
    header += f" {'ref/this':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['step']:<20} {r['error']}")
            continue
        t_ratio = ratio(r["ms_per_step"], plain and plain["ms_per_step"])
        m_ratio = ratio(r["peak_mib"], plain and plain["peak_mib"])
        speed = ratio(ref and ref["ms_per_step"], r["ms_per_step"])
        r.update(time_vs_plain=t_ratio, memory_vs_plain=m_ratio, speedup_over_reference=speed)
        print(
            f"{r['step']:<20} {r['ms_per_step']:9.1f} {r['images_per_s']:9.1f} {fmt(r['peak_mib'], '9.1f')} "
            f"{fmt(t_ratio, '10.2f', '')} {fmt(m_ratio, '10.2f', '')} {fmt(speed, '9.2f', '')}"
        )
    noisy = [r["step"] for r in by.values() if r["max_ms"] > NOISE_SPREAD * r["min_ms"] and not args.interleave]
    if noisy:
        print(
            f"\nwarning: timed steps of {', '.join(noisy)} vary by more than {NOISE_SPREAD}x (max/min); other "
            "processes may be competing for the CPU: rerun on an idle machine or with fewer --threads"
        )
    c = by.get("cft")
    speed = ratio(ref and ref["ms_per_step"], c and c["ms_per_step"])
    print(f"\ncft speed-up over reference: {fmt(speed, '.2f', 'x')}")
    rows = by.get("plain-rows")
    if rows and c:
        like_for_like = c["ms_per_step"] / rows["ms_per_step"]
        print(f"cft / plain-rows (both with the last block on the read rows): {like_for_like:.2f}x")
    time_bound = TARGET_CFT_VS_PLAIN_TIME["224 px and up" if args.img_size >= 224 else "below 224 px"]
    checks = [
        (
            f"cft time <= {time_bound}x plain",
            ratio(c and c["ms_per_step"], plain and plain["ms_per_step"]),
            "<=",
            time_bound,
        ),
        ("cft >= 1.4x faster than reference", speed, ">=", TARGET_CFT_SPEEDUP_OVER_REFERENCE),
        (
            "cft peak memory <= 1.5x plain",
            ratio(c and c["peak_mib"], plain and plain["peak_mib"]),
            "<=",
            TARGET_CFT_VS_PLAIN_MEMORY,
        ),
    ]
    targets = []
    print("\ntargets:")
    for name, value, op, bound in checks:
        if value is None:
            verdict = "SKIP"
        else:
            verdict = "PASS" if (value <= bound if op == "<=" else value >= bound) else "FAIL"
        targets.append({"target": name, "value": value, "bound": bound, "op": op, "result": verdict})
        print(f"  {verdict}  {name:<36} measured {fmt(value, '.2f', 'x')}")
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        print(RESULT_MARK + json.dumps(run_worker(args)), flush=True)
        return 0
    if args.phases:
        run_phases(args)
        return 0
    info = machine_info(args)
    print(
        f"model {args.model} img {args.img_size} patch {args.patch} depth {args.depth} dim {args.embed_dim} "
        f"heads {args.heads} classes {args.num_classes} | batch {args.batch}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, {args.threads} threads, {args.device}"
    )
    print(f"torch {info['torch']}, {info['cpu']} ({info['cpu_count']} cpus), python {info['python']}")
    memory = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS (ru_maxrss) - RSS before"
    if args.interleave:
        print(f"one process, step types interleaved, {args.interleave} rounds; ms/step = the best round's median\n")
        results = run_interleaved(args)
    else:
        print(f"each step type in its own subprocess; ms/step = median; peak MiB = {memory} the first step\n")
        results = [run_one(args, step) for step in args.run_steps]
    targets = report(args, results)
    if args.json:
        config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("json", "strict")}
        out = {"config": config, "machine": info, "results": results, "targets": targets}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    failed = any(t["result"] == "FAIL" for t in targets)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
