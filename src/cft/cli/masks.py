"""`cft masks` (segment every image's concepts into the mask store) and `cft masks show` (`masks-show`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cft.errors import CftError


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft masks` and `cft masks-show` (which `cft masks show` is routed to)."""
    masks = subcommands.add_parser(
        "masks",
        help="segment each image's concepts into guidance masks, kept in a mask store (also: cft masks show)",
        description=(
            "Segment the concepts of each image's class (from a concept bank) with an open-vocabulary segmenter "
            "and write one entry per image to the mask store OUT: compressed concept masks, the guidance mask "
            "and metadata. Resumable (finished entries are skipped; those of classes whose concepts changed are "
            "redone; other segmenter settings need --redo) and sharded under torchrun: "
            "torchrun --nproc_per_node N -m cft.cli masks ... "
            "`cft masks show --store OUT --images DIR` draws a sheet of entries for a visual check."
        ),
    )
    masks.add_argument("--images", required=True, metavar="DIR", help="image root: DIR/<class or wnid>/<images>")
    masks.add_argument("--concepts", required=True, metavar="BANK", help="concept bank JSON (cft concepts ...)")
    masks.add_argument(
        "--segmenter", default="grounded-sam", help="grounded-sam | sam3 | owlv2-sam | clipseg (default grounded-sam)"
    )
    masks.add_argument("--out", required=True, metavar="DIR", help="the mask store folder")
    masks.add_argument("--list", metavar="FILE", help="only these images: paths relative to --images, one per line")
    masks.add_argument("--guidance", default="union", choices=["union", "weighted"], help="how concept masks combine")
    masks.add_argument(
        "--object-masks", action="store_true", help="prompt with the class name (object masks, RobustViT ablation)"
    )
    masks.add_argument(
        "--redo",
        action="store_true",
        help="remake every entry: needed to change the segmenter, its options, --guidance or --object-masks of an "
        "existing store (a store has one identity)",
    )
    masks.add_argument("--batch-size", type=int, default=8)
    masks.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a segmenter option, VALUE read as YAML (e.g. box_threshold=0.3, device=cuda, detector_model=DIR)",
    )
    masks.add_argument("--no-progress", action="store_true")
    masks.set_defaults(run=run_masks_command)

    show = subcommands.add_parser("masks-show", help="(also `cft masks show`) draw store entries for a visual check")
    show.add_argument("--store", required=True, metavar="DIR", help="the mask store folder")
    show.add_argument("--images", required=True, metavar="DIR", help="the image root the store was made from")
    show.add_argument("--image", action="append", default=[], metavar="ID", help="an image id (repeatable)")
    show.add_argument("-n", type=int, default=8, help="how many entries when no --image is given (default 8)")
    show.add_argument("--out", default="masks.png", metavar="PNG")
    show.set_defaults(run=run_masks_show)


def route_masks_show(argv: list[str]) -> list[str]:
    """`cft masks show ...` is the registered command `masks-show`."""
    return ["masks-show", *argv[2:]] if argv[:2] == ["masks", "show"] else argv


def _segmenter_options(items: list[str]) -> dict[str, object]:
    from cft.config import parse_overrides

    return parse_overrides(items)


def run_masks_command(args: argparse.Namespace) -> int:
    """`cft masks`: segment each image's concepts into the mask store."""
    from cft.grounding.build import run_masks
    from cft.grounding.registry import build_segmenter

    segmenter = build_segmenter(args.segmenter, **_segmenter_options(args.opt))
    run_masks(
        args.images,
        args.concepts,
        segmenter,
        args.out,
        image_list=args.list,
        mode=args.guidance,
        object_masks=args.object_masks,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        redo=args.redo,
    )
    return 0


def run_masks_show(args: argparse.Namespace) -> int:
    """`cft masks show`: draw a sheet of store entries."""
    from cft.grounding.show import masks_sheet
    from cft.grounding.store import MaskStore
    from cft.io import atomic_path, check_output_file

    check_output_file(args.out)
    store = MaskStore(args.store)
    store.description()
    ids = args.image or store.image_ids()[: max(args.n, 1)]
    if not ids:
        raise CftError(f"mask store {args.store} has no entries yet")
    store.check_identity(ids)
    sheet = masks_sheet(store, args.images, ids)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"{out}: {len(ids)} entries")
    return 0
