"""Few-shot selection is seeded, sorted and honours its arguments."""

from __future__ import annotations

import numpy as np
import pytest

from cft.data.fewshot import select_few_shot
from cft.errors import CftError

LABELS = np.arange(200) % 10


def test_counts_and_classes():
    sel = select_few_shot(LABELS, per_class=3, class_fraction=0.5, seed=0)
    assert len(sel.seen_classes) == 5 and len(sel.unseen_classes) == 5
    assert set(sel.seen_classes) | set(sel.unseen_classes) == set(range(10))
    assert len(sel.indices) == 15 and len(set(sel.indices)) == 15
    for c in sel.seen_classes:
        assert sum(LABELS[i] == c for i in sel.indices) == 3


def test_deterministic_and_seed_dependent():
    a = select_few_shot(LABELS, seed=1)
    assert a == select_few_shot(LABELS, seed=1)
    assert a != select_few_shot(LABELS, seed=2)
    assert select_few_shot(LABELS[::-1].copy(), seed=1).seen_classes == a.seen_classes  # order of data irrelevant


def test_exclusions_and_errors():
    excluded = list(range(0, 200, 3))
    sel = select_few_shot(LABELS, seed=0, exclude=excluded)
    assert not set(sel.indices) & set(excluded)
    with pytest.raises(CftError, match="fewer than per_class"):
        select_few_shot(LABELS, per_class=30)
    with pytest.raises(CftError, match="class_fraction"):
        select_few_shot(LABELS, class_fraction=0)
    with pytest.raises(CftError, match="per_class"):
        select_few_shot(LABELS, per_class=0)
