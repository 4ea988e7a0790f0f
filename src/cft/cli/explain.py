"""`cft explain`: relevance-map pictures (image | heat map | blend) for images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cft.config import parse_model_args
from cft.errors import CftError
from cft.io import check_writable, fitting_name
from cft.relevance import METHODS

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MODEL = "vit_tiny_patch16_224"
DEFAULT_OUT = "outputs"


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft explain`."""
    explain = subcommands.add_parser(
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


def _load_model(args: argparse.Namespace, kwargs: dict[str, object]) -> nn.Module:
    from cft.models import load_model

    model = load_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, **kwargs)
    return model.eval().requires_grad_(False)


def _check_outputs_finite(model: nn.Module, pixels: list, args: argparse.Namespace) -> None:
    """No map is drawn from a model whose logits are not finite (its prediction and relevance mean nothing)."""
    import torch

    with torch.no_grad():
        bad = sum(int(not torch.isfinite(model(p[None])).all()) for p in pixels)
    if bad:
        weights = args.checkpoint or ("the pretrained weights" if args.pretrained else "random weights")
        raise CftError(
            f"{args.model} ({weights}) gives non-finite logits for {bad} of {len(pixels)} image(s): "
            "nothing is explained (a diverged or overflowed checkpoint)"
        )


def run_explain(args: argparse.Namespace) -> int:
    """Explain each image and write its panel to OUT/<stem>_<method>.png."""
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
    out_dir = check_writable(args.out)
    _check_outputs_finite(model, [preprocess(image)[0] for image in images], args)
    for path, image in zip(paths, images, strict=True):
        result = explain(model, image, method=args.method, target=args.target, preprocess=preprocess)
        out = out_dir / fitting_name(f"{path.stem}_{args.method}", ".png")
        try:
            with atomic_path(out) as tmp:
                result.panel.save(tmp, format="PNG")
        except OSError as err:
            raise CftError(f"cannot write {out} ({type(err).__name__}: {err})") from None
        which = "predicted" if args.target is None else f"target; predicted {result.predicted}"
        print(f"{out}  class {result.class_index} ({which})")
    return 0
