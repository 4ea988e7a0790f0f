"""The demo's concept bank under the two world segmenters: what survives validation per class, and how far each
class's concept masks are from its object masks (mean IoU of the guidance mask, the union of the class's concept
masks, with the object mask over the first N val images of the class).

    python scripts/world_segmenters.py [--n 30] [--json out.json]

`embedding` is the first world segmenter (a phrase gets its class's nearest part name at cosine >= 0.5), `vlm`
reads a phrase as an open-vocabulary detector would (cft.world.vocabulary); "object names dropped" adds the
validation rule max_object_iou 0.9 (a concept whose masks are the object's is dropped). Nothing here trains a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from cft.concepts.validate import iou, world_validation_inputs
from cft.concepts.world import validated_llm_bank
from cft.demo import demo_config, make_world
from cft.grounding.guidance import segment_guidance


def guidance_iou(world, concepts: dict[str, list[str]], segmenter, n: int) -> dict[str, float]:
    """Per class: mean IoU of the guidance mask (union of the class's concept masks) with the object mask."""
    images, objects = world_validation_inputs(world, "val", list(concepts), n)
    out = {}
    for cls, samples in images.items():
        shape = samples[0]["object_mask"].shape
        masks = segment_guidance(segmenter, samples, [concepts[cls]] * len(samples), shape)
        ious = [iou(np.asarray(mask) > 0, obj) for mask, obj in zip(masks, objects[cls], strict=True)]
        out[cls] = float(np.mean(ious))
    return out


def _concepts(world, concepts_cfg) -> dict[str, list[str]]:
    """The validated bank's names per class; a class left without concepts gets an empty list (world_concepts
    refuses such a bank, this report shows it)."""
    with tempfile.TemporaryDirectory() as scratch:
        bank, _ = validated_llm_bank(world, concepts_cfg, Path(scratch))
    return {cls: bank.names(cls) for cls in world.classes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help="val images per class for the IoU")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    cfg = demo_config()
    world = make_world(cfg)
    report = {}
    settings = {"embedding": ("embedding", None), "vlm": ("vlm", None), "vlm, object names dropped": ("vlm", 0.9)}
    for label, (mode, max_object_iou) in settings.items():
        validation = dataclasses.replace(cfg.concepts.validation, max_object_iou=max_object_iou)
        concepts_cfg = dataclasses.replace(cfg.concepts, segmenter=mode, validation=validation)
        concepts = _concepts(world, concepts_cfg)
        kept = {cls: names for cls, names in concepts.items() if names}
        iou = guidance_iou(world, kept, concepts_cfg.make_segmenter(), args.n)
        report[label] = {"concepts": concepts, "iou": iou}
    print(
        "| class | "
        + " | ".join(f"kept ({label})" for label in report)
        + " | IoU with the object: "
        + " / ".join(report)
        + " |"
    )
    print("|---|" + "---|" * (len(report) + 1))
    for cls in world.classes:
        kept = " | ".join(", ".join(r["concepts"].get(cls, [])) for r in report.values())
        ious = " / ".join(f"{r['iou'].get(cls, float('nan')):.2f}" for r in report.values())
        print(f"| {cls} | {kept} | {ious} |")
    for label, r in report.items():
        empty = [cls for cls, names in r["concepts"].items() if not names]
        print(f"mean IoU ({label}): {np.mean(list(r['iou'].values())):.3f}; classes left without concepts: {empty}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
