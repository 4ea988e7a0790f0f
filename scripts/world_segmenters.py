"""The demo's concept bank under the two world segmenters: what survives validation per class, and how far each
class's concept masks are from its object masks (mean IoU of the guidance mask, the union of the class's concept
masks, with the object mask over the first N val images of the class).

    python scripts/world_segmenters.py [--n 30] [--json out.json]

`embedding` is the first world segmenter (a phrase gets its class's nearest part name at cosine >= 0.5), `vlm`
reads a phrase as an open-vocabulary detector would (cft.world.vocabulary). Nothing here trains a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from cft.concepts.validate import world_validation_inputs
from cft.concepts.world import world_concepts
from cft.demo import demo_config, make_world
from cft.grounding.guidance import segment_guidance


def guidance_iou(world, concepts: dict[str, list[str]], segmenter, n: int) -> dict[str, float]:
    """Per class: mean IoU of the guidance mask (union of the class's concept masks) with the object mask."""
    images, objects = world_validation_inputs(world, "val", list(concepts), n)
    out = {}
    for cls, samples in images.items():
        shape = samples[0]["object_mask"].shape
        masks = segment_guidance(segmenter, samples, [concepts[cls]] * len(samples), shape)
        ious = []
        for mask, obj in zip(masks, objects[cls], strict=True):
            g, o = np.asarray(mask) > 0, np.asarray(obj, bool)
            union = np.logical_or(g, o).sum()
            ious.append(np.logical_and(g, o).sum() / union if union else 1.0)
        out[cls] = float(np.mean(ious))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help="val images per class for the IoU")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    cfg = demo_config()
    world = make_world(cfg)
    report = {}
    for mode in ("embedding", "vlm"):
        concepts_cfg = dataclasses.replace(cfg.concepts, segmenter=mode)
        concepts = world_concepts(world, concepts_cfg)
        iou = guidance_iou(world, concepts, concepts_cfg.make_segmenter(), args.n)
        report[mode] = {"concepts": concepts, "iou": iou}
    print("| class | kept by embedding | kept by vlm | IoU with the object, embedding | vlm |")
    print("|---|---|---|---|---|")
    for cls in world.classes:
        e, v = report["embedding"], report["vlm"]
        print(
            f"| {cls} | {', '.join(e['concepts'].get(cls, []))} | {', '.join(v['concepts'].get(cls, []))} | "
            f"{e['iou'].get(cls, float('nan')):.2f} | {v['iou'].get(cls, float('nan')):.2f} |"
        )
    for mode in report:
        print(f"mean IoU ({mode}): {np.mean(list(report[mode]['iou'].values())):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
