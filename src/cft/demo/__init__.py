"""`cft demo`: the whole method on the synthetic world, on a laptop CPU, with no downloads.

make the world -> the original model (shipped, or pretrained with --from-scratch) -> concepts per class ->
masks from the world's segmenter -> fine-tune each variant on the same few images (`run_finetune`, as
`cft finetune` does) -> evaluate -> report. The pieces: config.py (DemoConfig), model.py (the original model, its
pretraining stages recipes for `run_finetune` too), run.py (run_demo), report.py (figures and report.md).
"""

from cft.demo.config import (
    BASELINES,
    FINETUNED,
    PREMISE,
    TEST_SPLITS,
    VARIANTS,
    DemoConfig,
    demo_config,
    make_world,
)
from cft.demo.model import model_key, original_model, pretrain, pretrain_recipe, shipped_models
from cft.demo.run import (
    concept_masks,
    diagnostics,
    evaluate_model,
    few_shot_selection,
    finetune_variant,
    load_tests,
    predict,
    run_demo,
    run_key,
    variant_recipe,
)

__all__ = [
    "BASELINES",
    "FINETUNED",
    "PREMISE",
    "TEST_SPLITS",
    "VARIANTS",
    "DemoConfig",
    "concept_masks",
    "demo_config",
    "diagnostics",
    "evaluate_model",
    "few_shot_selection",
    "finetune_variant",
    "load_tests",
    "make_world",
    "model_key",
    "original_model",
    "predict",
    "pretrain",
    "pretrain_recipe",
    "run_demo",
    "run_key",
    "shipped_models",
    "variant_recipe",
]
