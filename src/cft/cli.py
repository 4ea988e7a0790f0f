"""The `cft` command line: parsing and orchestration only; the work is done by the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cft import __version__
from cft.cli_evaluate import add_evaluate_command, add_run_command
from cft.cli_masks import add_masks_commands, route_masks_show
from cft.errors import CftError
from cft.relevance import METHODS

DEFAULT_MODEL = "vit_tiny_patch16_224"
DEFAULT_OUT = "outputs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cft",
        description="Concept-guided Fine-Tuning (CFT) for timm Vision Transformers.",
    )
    parser.add_argument("--version", action="version", version=f"cft {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    explain = commands.add_parser(
        "explain",
        help="write relevance-map pictures (image | heat map | blend) for images",
        description=(
            "For each image, write OUT/<image stem>_<method>.png: the crop the model sees, its relevance map "
            "for the predicted (or --target) class, and the two blended."
        ),
    )
    explain.add_argument("images", nargs="*", metavar="IMAGE", help="image files (any format Pillow reads)")
    explain.add_argument("--sample", action="store_true", help="also explain the bundled sample image")
    explain.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"timm ViT name (default {DEFAULT_MODEL}; random weights unless --pretrained or --checkpoint)",
    )
    explain.add_argument(
        "--pretrained", action="store_true", help="download the model's pretrained weights from the timm hub"
    )
    explain.add_argument("--checkpoint", metavar="FILE", help="load weights from a .safetensors or .pt file")
    explain.add_argument(
        "--method", default="grad-rollout", choices=list(METHODS), help="relevance method (default grad-rollout)"
    )
    explain.add_argument(
        "--target", type=int, metavar="K", help="class index to explain (default: each image's predicted class)"
    )
    explain.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    explain.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra timm.create_model argument, VALUE read as YAML (e.g. num_classes=10, img_size=64); repeatable",
    )
    explain.set_defaults(run=run_explain)

    demo = commands.add_parser(
        "demo",
        help="run the whole method on the embedded synthetic world (CPU, no downloads)",
        description=(
            "Make the synthetic world, take the original model (shipped, or pretrained with --from-scratch), choose "
            "each class's concepts, make their masks, fine-tune the variants original / cft / object-masks / "
            "no-guidance on the same few images, evaluate them on test-id, test-ood and test-flipped, and write "
            "OUT/results.json, OUT/report.md and OUT/figures/."
        ),
    )
    demo.add_argument("--quick", action="store_true", help="one seed, fewer epochs and test images (for tests)")
    demo.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    demo.add_argument(
        "--from-scratch", action="store_true", help="pretrain the original model instead of the shipped one"
    )
    demo.add_argument("--config", metavar="YAML", help="a demo config file (see recipes/demo.yaml)")
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. seeds=[0,1]"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument(
        "--all-baselines",
        action="store_true",
        help="also fine-tune every baseline (erm, robustvit, rrr, gradmask, rrda) and rank all variants",
    )
    demo.set_defaults(run=run_demo_command)
    _add_concepts(commands)
    add_masks_commands(commands)
    add_evaluate_command(commands)
    add_run_command(commands)

    finetune = commands.add_parser(
        "finetune",
        help="train or fine-tune a model as a YAML recipe says (erm, cft, no-guidance, robustvit, rrr, gradmask, rrda)",
        description=(
            "Build the model, data and objective of a recipe (see recipes/world-pretrain.yaml and "
            "recipes/world-cft.yaml), write OUT/config.yaml (and OUT/split.json for few-shot data), then train, "
            "writing OUT/metrics.jsonl, OUT/last.safetensors and OUT/best.safetensors (chosen by train.select_by)."
        ),
    )
    finetune.add_argument("--config", required=True, metavar="YAML", help="the recipe file")
    finetune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, VALUE read as YAML (e.g. train.epochs=5, data.few_shot.per_class=10); "
        "repeatable",
    )
    finetune.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    finetune.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    finetune.add_argument("--no-progress", action="store_true", help="no progress bars")
    finetune.set_defaults(run=run_finetune_command)
    return parser


def run_finetune_command(args: argparse.Namespace) -> int:
    from cft.train.recipe import load_recipe, run_finetune

    recipe = load_recipe(args.config, args.set)
    result = run_finetune(recipe, args.out, resume=args.resume, progress=not args.no_progress)
    out = Path(args.out)
    last = result.history[-1] if result.history else {}
    select = recipe.train.select_by
    how = f"{select} {result.best_value:.4f}" if select != "last" and select in last else "the last epoch"
    print(f"best:    {result.best_path}  (epoch {result.best_epoch}, by {how})")
    print(f"last:    {result.last_path}  (epoch {last.get('epoch', '?')})")
    print(f"metrics: {out / 'metrics.jsonl'}")
    extra = [out / name for name in ("config.yaml", "split.json") if (out / name).is_file()]
    print("config:  " + ", ".join(str(p) for p in extra))
    return 0


def _add_concepts(commands) -> None:
    concepts = commands.add_parser("concepts", help="propose, filter and validate the visual concepts of classes")
    verbs = concepts.add_subparsers(dest="verb", metavar="VERB", required=True)

    def llm_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--classes",
            required=True,
            help="comma list, a text file (one per line), a folder of class "
            "folders, 'imagenet' (timm's 1000 names) or 'world' (the synthetic world's classes)",
        )
        p.add_argument(
            "--backend",
            choices=("openai", "gguf", "bank"),
            default="gguf",
            help="openai: any OpenAI-compatible server; gguf: a local model (default: the packaged "
            "Gemma 3 270M); bank: a hand-written concept bank file",
        )
        p.add_argument("--base-url", help="openai: the server's base URL, e.g. http://127.0.0.1:8000/v1")
        p.add_argument("--model", help="openai: the model name; gguf: a .gguf file (default: the packaged Gemma)")
        p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: the variable holding the API key")
        p.add_argument("--bank", metavar="FILE", help="bank: the hand-written bank (JSON or YAML)")
        p.add_argument("--samples", type=int, default=2, help="answers per prompt (default 2)")
        p.add_argument("--temperature", type=float, default=0.7)
        p.add_argument("--max-tokens", type=int, default=256)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request")
        p.add_argument("--concurrency", type=int, default=4, help="prompts in flight at once")
        p.add_argument("--cache", metavar="DIR", help="response cache (default: OUT's folder/llm-cache)")

    def filter_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-length", type=int, default=30)
        p.add_argument("--class-similarity", type=float, default=0.85)
        p.add_argument("--duplicate-similarity", type=float, default=0.9)
        p.add_argument("--text-model", default="all-MiniLM-L6-v2", help="sentence-transformers model or folder")

    def validate_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--images-per-class", type=int, default=30)
        p.add_argument("--min-occurrence", type=float, default=0.15)
        p.add_argument("--min-coverage", type=float, default=0.20)

    propose = verbs.add_parser("propose", help="ask an LLM (or read a bank file) for each class's concepts")
    llm_options(propose)
    propose.add_argument("--out", required=True, metavar="FILE", help="the concept bank JSON to write")
    propose.set_defaults(run=run_concepts_propose)

    filt = verbs.add_parser("filter", help="drop long, class-like and near-duplicate concepts (reasons kept)")
    filt.add_argument("bank", metavar="BANK")
    filt.add_argument("--classes", help="all class names to compare against (default: the bank's classes)")
    filter_options(filt)
    filt.add_argument("--out", required=True, metavar="FILE")
    filt.set_defaults(run=run_concepts_filter)

    val = verbs.add_parser("validate", help="keep concepts a segmenter finds (occurrence, coverage); world only")
    val.add_argument("bank", metavar="BANK")
    val.add_argument(
        "--segmenter",
        choices=("world",),
        default="world",
        help="world: the synthetic world's images and segmenter (real segmenters: a later release)",
    )
    validate_options(val)
    val.add_argument("--out", required=True, metavar="FILE")
    val.set_defaults(run=run_concepts_validate)

    run = verbs.add_parser("run", help="propose, filter and (for world classes) validate in one go")
    llm_options(run)
    filter_options(run)
    validate_options(run)
    run.add_argument("--out", required=True, metavar="FILE")
    run.set_defaults(run=run_concepts_all)


def _llm(args: argparse.Namespace):
    from cft.concepts.stage import make_llm

    return make_llm(
        args.backend, args.model, args.base_url, args.api_key_env, args.timeout, args.concurrency,
        missing="--base-url URL and --model NAME",
    )  # fmt: skip


def _proposed_bank(args: argparse.Namespace):
    from cft.concepts.classes import resolve_classes
    from cft.concepts.llm import ResponseCache, Sampling
    from cft.concepts.stage import hand_bank, propose_bank

    classes = resolve_classes(args.classes)
    if args.backend == "bank":
        if not args.bank:
            raise CftError("--backend bank needs --bank FILE")
        return hand_bank(args.bank, classes), classes
    if args.samples < 1 or args.max_tokens < 1:
        raise CftError("--samples and --max-tokens must be at least 1")
    sampling = Sampling(temperature=args.temperature, n=args.samples, max_tokens=args.max_tokens, seed=args.seed)
    cache = ResponseCache(args.cache or Path(args.out).parent / "llm-cache")
    return propose_bank(_llm(args), classes, sampling, cache, args.concurrency, progress=sys.stderr.isatty()), classes


def _filter_config(args: argparse.Namespace):
    from cft.concepts.filters import FilterConfig

    return FilterConfig(args.max_length, args.class_similarity, args.duplicate_similarity, args.text_model)


def _validation_config(args: argparse.Namespace):
    from cft.concepts.validate import ValidationConfig

    return ValidationConfig(args.images_per_class, args.min_occurrence, args.min_coverage)


def _save_bank(bank, out: str, stats=None) -> None:
    from cft.io import write_json_atomic

    bank.save(out)
    if stats is not None:
        write_json_atomic(Path(out).with_suffix(".stats.json"), stats)
    kept = sum(len(v) for v in bank.concepts.values())
    dropped = sum(len(v) for v in bank.dropped.values())
    print(f"{out}: {kept} concepts kept over {len(bank.concepts)} classes, {dropped} dropped")


def run_concepts_propose(args: argparse.Namespace) -> int:
    bank, _ = _proposed_bank(args)
    _save_bank(bank, args.out)
    return 0


def run_concepts_filter(args: argparse.Namespace) -> int:
    from cft.concepts.bank import ConceptBank
    from cft.concepts.classes import resolve_classes
    from cft.concepts.stage import filter_stage

    bank = ConceptBank.load(args.bank)
    names = resolve_classes(args.classes) if args.classes else list(bank.concepts)
    _save_bank(filter_stage(bank, names, _filter_config(args)), args.out)
    return 0


def run_concepts_validate(args: argparse.Namespace) -> int:
    from cft.concepts.bank import ConceptBank
    from cft.concepts.stage import validate_in_world

    bank, stats = validate_in_world(ConceptBank.load(args.bank), _validation_config(args))
    _save_bank(bank, args.out, stats)
    return 0


def run_concepts_all(args: argparse.Namespace) -> int:
    from cft.concepts.stage import filter_stage, validate_in_world
    from cft.world import SyntheticWorld

    bank, classes = _proposed_bank(args)
    bank = filter_stage(bank, classes, _filter_config(args))
    stats = None
    if set(bank.concepts) <= set(SyntheticWorld().classes):
        bank, stats = validate_in_world(bank, _validation_config(args))
    else:
        print(
            "cft: note: validation needs a segmenter for these images; only world classes are validated here",
            file=sys.stderr,
        )
    _save_bank(bank, args.out, stats)
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    from cft.config import merge, parse_overrides, read_yaml
    from cft.demo import demo_config, run_demo

    data = merge(read_yaml(args.config) if args.config else {}, parse_overrides(args.set))
    if args.all_baselines:
        from cft.demo import BASELINES

        data = merge(data, {"baselines": list(BASELINES)})
    cfg = demo_config(data, quick=args.quick)
    results = run_demo(cfg, args.out, from_scratch=args.from_scratch, progress=not args.no_progress)
    m = results["metrics"]
    print(f"{'variant':14s} {'test-id':>8s} {'test-ood':>9s} {'test-flipped':>13s}")
    for variant, splits in m.items():
        print(
            f"{variant:14s} "
            + " ".join(
                f"{splits[s]['top1']:>{w}.3f}" for s, w in (("test-id", 8), ("test-ood", 9), ("test-flipped", 13))
            )
        )
    print(
        f"wrote {Path(args.out) / 'results.json'}, {Path(args.out) / 'report.md'} ({results['timings']['total']:.0f} s)"
    )
    return 0


def parse_model_args(items: Sequence[str]) -> dict[str, object]:
    """KEY=VALUE strings to keyword arguments, each VALUE parsed as a YAML scalar or list."""
    import yaml

    kwargs: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CftError(f"--model-arg expects KEY=VALUE with KEY a Python name, got {item!r}")
        try:
            kwargs[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise CftError(f"--model-arg {key}: cannot read {value!r} as a YAML value ({err})") from None
    return kwargs


def _image_paths(args: argparse.Namespace) -> list[Path]:
    from cft.data import sample_image_path

    paths = [Path(p) for p in args.images]
    if args.sample:
        paths.append(sample_image_path())
    if not paths:
        raise CftError("no image given: name image files, or pass --sample for the bundled sample image")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise CftError(f"{seen[path.stem]} and {path} would both be written as {path.stem}_{args.method}.png")
        seen[path.stem] = path
    return paths


def _load_model(args: argparse.Namespace, kwargs: dict[str, object]):
    from cft.models import load_model

    model = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, **kwargs)
    return model.eval().requires_grad_(False)


def run_explain(args: argparse.Namespace) -> int:
    from cft.data import load_image, preprocessor
    from cft.io import atomic_path
    from cft.visualize import explain

    kwargs = parse_model_args(args.model_arg)
    paths = _image_paths(args)
    images = [load_image(path) for path in paths]  # every file is checked before the model is built
    model = _load_model(args, kwargs)
    classes = getattr(model, "num_classes", 0)
    if args.target is not None and classes and not 0 <= args.target < classes:
        raise CftError(f"--target {args.target} is out of range: {args.model} has {classes} classes (0..{classes - 1})")
    if not args.pretrained and args.checkpoint is None:
        print(
            f"cft: note: {args.model} has random weights, so its maps are meaningless; "
            "--pretrained fetches the hub weights (online), --checkpoint FILE loads yours",
            file=sys.stderr,
        )
    preprocess = preprocessor(model)
    out_dir = Path(args.out)
    for path, image in zip(paths, images, strict=True):
        result = explain(model, image, method=args.method, target=args.target, preprocess=preprocess)
        out = out_dir / f"{path.stem}_{args.method}.png"
        try:
            with atomic_path(out) as tmp:
                result.panel.save(tmp, format="PNG")
        except OSError as err:
            raise CftError(f"cannot write {out} ({type(err).__name__}: {err})") from None
        which = "predicted" if args.target is None else f"target; predicted {result.predicted}"
        print(f"{out}  class {result.class_index} ({which})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 a usage or input error) instead of exiting."""
    parser = build_parser()
    argv = route_masks_show(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except SystemExit as stop:  # argparse: --help, --version and usage errors
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except CftError as err:
        print(f"cft: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
