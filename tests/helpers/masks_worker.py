"""Run `run_masks` with the fake segmenter: `python tests/helpers/masks_worker.py IMAGES BANK OUT LOG [DIE_AFTER]`
(under torchrun, or killed mid-way, by tests/grounding/test_store.py)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.helpers`

from cft.grounding.build import run_masks  # noqa: E402
from tests.helpers.masks import FakeSegmenter  # noqa: E402

images, bank, out, log = sys.argv[1:5]
die_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
rank = os.environ.get("RANK", "0")
segmenter = FakeSegmenter(log=Path(f"{log}.rank{rank}"), die_after=die_after)
run_masks(images, bank, segmenter, out, batch_size=2, progress=False)
