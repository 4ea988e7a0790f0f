"""`cft concepts propose | filter | validate | run`: the visual concepts of classes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cft.config import number_arg
from cft.errors import CftError
from cft.io import check_output_file

if TYPE_CHECKING:
    from cft.concepts.bank import ConceptBank
    from cft.concepts.filters import FilterConfig
    from cft.concepts.validate import ValidationConfig


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft concepts` and its verbs."""
    concepts = subcommands.add_parser("concepts", help="propose, filter and validate the visual concepts of classes")
    verbs = concepts.add_subparsers(dest="verb", metavar="VERB", required=True)

    propose = verbs.add_parser("propose", help="ask an LLM (or read a bank file) for each class's concepts")
    _llm_options(propose)
    propose.add_argument("--out", required=True, metavar="FILE", help="the concept bank JSON to write")
    propose.set_defaults(run=run_concepts_propose)

    filt = verbs.add_parser("filter", help="drop long, class-like and near-duplicate concepts (reasons kept)")
    filt.add_argument("bank", metavar="BANK")
    filt.add_argument("--classes", help="all class names to compare against (default: the bank's classes)")
    _filter_options(filt)
    filt.add_argument("--out", required=True, metavar="FILE")
    filt.set_defaults(run=run_concepts_filter)

    val = verbs.add_parser("validate", help="keep the concepts a segmenter finds (occurrence, coverage)")
    val.add_argument("bank", metavar="BANK")
    val.add_argument(
        "--segmenter",
        default="world",
        help="world (the synthetic world's images and segmenter; the default) or a real one on --images: "
        "grounded-sam | sam3 | owlv2-sam | clipseg",
    )
    val.add_argument("--images", metavar="DIR", help="real segmenters: the images, DIR/<class or wnid>/<images>")
    val.add_argument(
        "--opt", action="append", default=[], metavar="KEY=VALUE", help="a segmenter option (cft masks --opt)"
    )
    _validate_options(val)
    val.add_argument("--out", required=True, metavar="FILE")
    val.set_defaults(run=run_concepts_validate)

    every = verbs.add_parser("run", help="propose, filter and (for world classes) validate in one go")
    _llm_options(every)
    _filter_options(every)
    _validate_options(every)
    every.add_argument("--out", required=True, metavar="FILE")
    every.set_defaults(run=run_concepts_all)


def _llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--classes",
        required=True,
        help="comma list, a text file (one per line), a folder of class "
        "folders, 'imagenet' (timm's 1000 names) or 'world' (the synthetic world's classes)",
    )
    from cft.concepts.stage import LLM_BACKENDS

    p.add_argument(
        "--backend",
        choices=(*LLM_BACKENDS, "bank"),
        default="gguf",
        help="openai: any OpenAI-compatible server; gguf: a local model (default: the packaged "
        "Gemma 3 270M); bank: a hand-written concept bank file",
    )
    p.add_argument("--base-url", help="openai: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="openai: the model name; gguf: a .gguf file (default: the packaged Gemma)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: the variable holding the API key")
    p.add_argument("--bank", metavar="FILE", help="bank: the hand-written bank (JSON or YAML)")
    p.add_argument("--samples", type=int, default=2, help="answers per prompt (default 2)")
    p.add_argument("--temperature", type=number_arg(ge=0), default=0.7)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=number_arg(gt=0), default=60.0, help="openai: seconds per request")
    p.add_argument("--concurrency", type=int, default=4, help="prompts in flight at once")
    p.add_argument("--cache", metavar="DIR", help="response cache (default: OUT's folder/llm-cache)")


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-length", type=int, default=30)
    p.add_argument("--class-similarity", type=number_arg(ge=-1, le=1), default=0.85)
    p.add_argument("--duplicate-similarity", type=number_arg(ge=-1, le=1), default=0.9)
    p.add_argument("--text-model", default="all-MiniLM-L6-v2", help="sentence-transformers model or folder")


def _validate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images-per-class", type=int, default=30)
    p.add_argument("--min-occurrence", type=number_arg(ge=0, le=1), default=0.15)
    p.add_argument("--min-coverage", type=number_arg(ge=0, le=1), default=0.20)
    p.add_argument(
        "--max-object-iou",
        type=number_arg(gt=0, le=1),
        help="also drop a concept whose masks are the object's (mean IoU >= this): an object or kind name "
        "(default: keep them, as the paper does)",
    )


def _proposed_bank(args: argparse.Namespace) -> tuple[ConceptBank, list[str]]:
    from cft.concepts.llm import ResponseCache, Sampling
    from cft.concepts.stage import proposed_bank
    from cft.data.classes import resolve_classes

    classes = resolve_classes(args.classes)
    if args.samples < 1 or args.max_tokens < 1:
        raise CftError("--samples and --max-tokens must be at least 1")
    sampling = Sampling(temperature=args.temperature, n=args.samples, max_tokens=args.max_tokens, seed=args.seed)
    cache = ResponseCache(args.cache or Path(args.out).parent / "llm-cache")
    bank = proposed_bank(
        args.backend, classes, sampling, cache, bank_file=args.bank, model=args.model, base_url=args.base_url,
        api_key_env=args.api_key_env, timeout=args.timeout, concurrency=args.concurrency, progress=True,
    )  # fmt: skip
    return bank, classes


def _filter_config(args: argparse.Namespace) -> FilterConfig:
    from cft.concepts.filters import FilterConfig

    return FilterConfig(args.max_length, args.class_similarity, args.duplicate_similarity, args.text_model)


def _validation_config(args: argparse.Namespace) -> ValidationConfig:
    from cft.concepts.validate import ValidationConfig

    return ValidationConfig(args.images_per_class, args.min_occurrence, args.min_coverage, args.max_object_iou)


def _save_bank(bank: ConceptBank, out: str, stats: dict[str, Any] | None = None) -> None:
    from cft.io import write_json_atomic

    bank.save(out)
    if stats is not None:
        write_json_atomic(Path(out).with_suffix(".stats.json"), stats)
    kept = sum(len(v) for v in bank.concepts.values())
    dropped = sum(len(v) for v in bank.dropped.values())
    print(f"{out}: {kept} concepts kept over {len(bank.concepts)} classes, {dropped} dropped")


def run_concepts_propose(args: argparse.Namespace) -> int:
    """`cft concepts propose`: each class's concepts from an LLM or a bank file."""
    check_output_file(args.out)
    bank, _ = _proposed_bank(args)
    _save_bank(bank, args.out)
    return 0


def run_concepts_filter(args: argparse.Namespace) -> int:
    """`cft concepts filter`: drop long, class-like and near-duplicate concepts."""
    check_output_file(args.out)
    from cft.concepts.bank import ConceptBank
    from cft.concepts.stage import filter_stage
    from cft.data.classes import resolve_classes

    bank = ConceptBank.load(args.bank)
    names = resolve_classes(args.classes) if args.classes else list(bank.concepts)
    _save_bank(filter_stage(bank, names, _filter_config(args)), args.out)
    return 0


def run_concepts_validate(args: argparse.Namespace) -> int:
    """`cft concepts validate`: keep the concepts the segmenter finds, in the world or on --images."""
    check_output_file(args.out)
    from cft.concepts.bank import ConceptBank
    from cft.concepts.stage import validate_in_world, validate_on_images

    bank = ConceptBank.load(args.bank)
    if args.segmenter == "world":
        if args.images or args.opt:
            raise CftError("--images and --opt are for real segmenters; the world segmenter uses the world's images")
        bank, stats = validate_in_world(bank, _validation_config(args))
    else:
        from cft.config import parse_overrides
        from cft.data.folders import list_images
        from cft.grounding.registry import build_segmenter

        if not args.images:
            raise CftError(f"--segmenter {args.segmenter} needs --images DIR (DIR/<class folder>/<images>)")
        segmenter = build_segmenter(args.segmenter, **parse_overrides(args.opt))
        by_class: dict[str, list] = {}
        for item in list_images(args.images, list(bank.concepts)):
            by_class.setdefault(item.label, []).append(item)
        bank, stats = validate_on_images(bank, by_class, segmenter, _validation_config(args))
    _save_bank(bank, args.out, stats)
    return 0


def run_concepts_all(args: argparse.Namespace) -> int:
    """`cft concepts run`: propose, filter and (for world classes) validate."""
    check_output_file(args.out)
    from cft.concepts.stage import filter_stage, validate_in_world
    from cft.data.classes import world_class_names

    bank, classes = _proposed_bank(args)
    bank = filter_stage(bank, classes, _filter_config(args))
    stats = None
    if set(bank.concepts) <= set(world_class_names()):
        bank, stats = validate_in_world(bank, _validation_config(args))
    else:
        print(
            "cft: note: validation needs a segmenter for these images; only world classes are validated here",
            file=sys.stderr,
        )
    _save_bank(bank, args.out, stats)
    return 0
