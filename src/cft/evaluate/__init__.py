"""Evaluation: metrics (metrics.py), scoring one model on one set (scoring.py), checkpoints x sets (checkpoints.py)."""

from cft.evaluate.metrics import (
    average_precision,
    group_accuracies,
    relevance_alignment,
    relevance_rank_accuracy,
    relevance_share,
    topk_accuracy,
)

__all__ = [
    "average_precision",
    "group_accuracies",
    "relevance_alignment",
    "relevance_rank_accuracy",
    "relevance_share",
    "topk_accuracy",
]
