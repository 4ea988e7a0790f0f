"""Evaluation metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cft.errors import CftError
from cft.evaluate import average_precision, group_accuracies, relevance_alignment, relevance_share, topk_accuracy


def test_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 5) == 1.0


def test_group_accuracies_by_hand():
    # group 0: 3 of 4 right; group 1: 1 of 2; group 2: 0 of 1
    correct = np.array([1, 1, 1, 0, 1, 0, 0], bool)
    groups = np.array([0, 0, 0, 0, 1, 1, 2])
    out = group_accuracies(correct, groups, {0: 90, 1: 9, 2: 1})
    assert out["per_group"] == {0: 0.75, 1: 0.5, 2: 0.0}
    assert out["worst_group"] == 0.0
    assert out["average"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert out["weighted_average"] == pytest.approx((90 * 0.75 + 9 * 0.5 + 1 * 0.0) / 100)
    assert group_accuracies(correct, groups)["weighted_average"] == out["average"]


def test_average_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    positives = np.array([1, 0, 1, 0], bool)
    assert average_precision(scores, positives) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert np.isnan(average_precision(scores, np.zeros(4, bool)))


def test_relevance_alignment_by_hand():
    maps = np.array([[[0.9, 0.1], [0.8, 0.0]]])  # mean 0.45: predicted foreground = left column
    masks = np.array([[[1, 0], [0, 0]]], bool)
    out = relevance_alignment(maps, masks)
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)
    assert out["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["map"] == pytest.approx(1.0)
    assert relevance_share(maps, masks) == pytest.approx(0.9 / 1.8)


def test_bad_input():
    with pytest.raises(CftError):
        relevance_alignment(np.zeros((1, 2, 2)), np.zeros((1, 3, 3), bool))
    with pytest.raises(CftError):
        group_accuracies(np.array([], bool), np.array([]))
    with pytest.raises(CftError):
        topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_small_groups_left_out():
    correct = np.array([0, 1, 1, 1, 0], bool)
    groups = np.array([5, 6, 6, 6, 7])
    out = group_accuracies(correct, groups, min_size=2)
    assert out["per_group"] == {6: 1.0} and out["worst_group"] == 1.0
    with pytest.raises(CftError, match="min_size"):
        group_accuracies(correct, groups, min_size=4)


def test_relevance_rank_accuracy_by_hand_and_by_brute_force():
    from cft.evaluate import relevance_rank_accuracy

    maps = np.array([[[0.9, 0.1], [0.8, 0.2]], [[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.5], [0.5, 0.5]]])
    masks = np.array([[[1, 0], [0, 1]], [[0, 0], [0, 0]], [[0, 1], [1, 0]]], bool)
    # image 0: the 2 most relevant pixels are (0,0) and (1,0): one of them in the mask; image 1: empty mask,
    # skipped; image 2: a constant map, ties by pixel order: pixels 0 and 1, one in the mask
    assert relevance_rank_accuracy(maps, masks) == pytest.approx((0.5 + 0.5) / 2)
    rng = np.random.default_rng(0)
    maps, masks = rng.random((20, 6, 6)), rng.random((20, 6, 6)) < 0.3
    expected = []
    for m, s in zip(maps, masks):
        k = int(s.sum())
        if k:
            threshold = np.sort(m.ravel())[::-1][k - 1]  # continuous values: no ties
            expected.append(float(s[m >= threshold].mean()))
    assert relevance_rank_accuracy(maps, masks) == pytest.approx(np.mean(expected))
    assert np.isnan(relevance_rank_accuracy(maps[:1], np.zeros((1, 6, 6), bool)))
    with pytest.raises(CftError, match="differ in shape"):
        relevance_rank_accuracy(np.zeros((1, 2, 2)), np.zeros((1, 3, 3), bool))


def test_mean_std_of_nested_runs_against_statistics():
    """mean_std: per leaf, statistics.mean / pstdev of the finite values; equal int counts kept; NaN when none."""
    import statistics

    from cft.evaluate.metrics import mean_std

    runs = [
        {"a": {"top1": 0.5, "n": 10, "name": "x"}, "b": {"x": float("nan")}},
        {"a": {"top1": 0.7, "n": 10}, "b": {"x": float("nan")}},
        {"a": {"top1": 0.9, "n": 10, "only": 2}, "b": {"x": 3.0}},
    ]
    mean, std = mean_std(runs)
    assert mean["a"]["top1"] == pytest.approx(statistics.mean([0.5, 0.7, 0.9]))
    assert std["a"]["top1"] == pytest.approx(statistics.pstdev([0.5, 0.7, 0.9]))
    assert mean["a"]["n"] == 10 and isinstance(mean["a"]["n"], int) and std["a"]["n"] == 0
    assert "name" not in mean["a"] and mean["a"]["only"] == 2
    assert mean["b"]["x"] == 3.0 and std["b"]["x"] == 0.0  # the NaNs are left out
    nan_mean, nan_std = mean_std([{"x": float("nan")}, {"x": float("nan")}])
    assert np.isnan(nan_mean["x"]) and np.isnan(nan_std["x"])


def test_relevance_peak_inside_against_a_loop():
    """The share of maps whose first maximal pixel lies in the mask, against a plain per-image loop; images with an
    empty mask are skipped; ties go to the first pixel, as a token's upsampled block shares one value."""
    from cft.evaluate.metrics import relevance_peak_inside

    rng = np.random.default_rng(3)
    maps = rng.random((20, 6, 6))
    maps[0] = 0.0  # a flat map: its peak is pixel (0, 0)
    masks = rng.random((20, 6, 6)) > 0.6
    masks[1] = False  # skipped
    hits = []
    for m, s in zip(maps, masks, strict=True):
        if not s.any():
            continue
        best = max(range(36), key=lambda i: (m.flat[i], -i))  # the largest value, the first such pixel
        hits.append(bool(s.flat[best]))
    assert relevance_peak_inside(maps, masks) == pytest.approx(np.mean(hits))
    assert np.isnan(relevance_peak_inside(maps[:2], np.zeros((2, 6, 6), bool)))


def test_t_interval_against_the_formula():
    """Mean and half-width t(0.975, n-1) * s / sqrt(n), with t's quantiles from a table (n = 3 and 8)."""
    from cft.evaluate.metrics import t_interval

    for values, t975 in (([0.1, 0.3, 0.2], 4.302653), ([0.05, -0.02, 0.11, 0.0, 0.07, 0.03, 0.09, 0.01], 2.364624)):
        n = len(values)
        mean = sum(values) / n
        s = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        got = t_interval(values)
        assert got["mean"] == pytest.approx(mean) and got["n"] == n
        assert got["half_width"] == pytest.approx(t975 * s / n**0.5, rel=1e-5)
    assert t_interval([0.4])["half_width"] != t_interval([0.4])["half_width"]  # NaN: one seed has no interval


def test_paired_differences_against_a_loop():
    from cft.evaluate.metrics import paired_differences, t_interval

    rng = np.random.default_rng(0)
    runs = [{v: {s: {"top1": float(rng.random())} for s in ("id", "ood")} for v in ("a", "b", "c")} for _ in range(5)]
    got = paired_differences(runs, [("a", "b"), ("c", "a")], ["ood", "id"])
    assert list(got) == ["a - b", "c - a"]
    for (x, y), key in ((("a", "b"), "a - b"), (("c", "a"), "c - a")):
        for split in ("id", "ood"):
            diffs = [r[x][split]["top1"] - r[y][split]["top1"] for r in runs]
            assert got[key][split]["per_seed"] == pytest.approx(diffs)
            assert got[key][split]["mean"] == pytest.approx(np.mean(diffs))
            assert got[key][split]["half_width"] == pytest.approx(t_interval(diffs)["half_width"])
    # paired, not two independent means: a shift shared by both variants in every seed cancels out
    shared = [{"a": {"ood": {"top1": 0.5 + k}}, "b": {"ood": {"top1": 0.4 + k}}} for k in (0.0, 0.3, -0.2)]
    d = paired_differences(shared, [("a", "b")], ["ood"])["a - b"]["ood"]
    assert d["mean"] == pytest.approx(0.1) and d["half_width"] == pytest.approx(0.0, abs=1e-9)
