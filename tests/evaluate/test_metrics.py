"""Evaluation metrics against hand-computed cases, then against scikit-learn's on random inputs with several seeds.

cft's alignment metrics are per image, then averaged over images (the ImageNet-segmentation protocol), so the
scikit-learn references below loop over the images too rather than pooling every pixel into one sklearn call.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cft.errors import CftError
from cft.evaluate import (
    average_precision,
    group_accuracies,
    relevance_alignment,
    relevance_rank_accuracy,
    relevance_share,
    topk_accuracy,
)

try:
    from sklearn import metrics as sklearn_metrics
except ImportError:  # the dev extra installs it
    sklearn_metrics = None

needs_sklearn = pytest.mark.skipif(
    sklearn_metrics is None, reason="scikit-learn is not installed (the dev extra has it)"
)


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
    # None beside numbers (how results files write NaN) counts as NaN; a leaf that is None in every run is no number
    none_mean, none_std = mean_std([{"x": None, "y": None}, {"x": 0.5, "y": None}, {"x": 0.7, "y": None}])
    assert none_mean["x"] == pytest.approx(0.6) and none_std["x"] == pytest.approx(0.1) and "y" not in none_mean


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


# ============================================================================ against scikit-learn, several seeds

SEEDS = [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- top-k accuracy


@needs_sklearn
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_classes", [3, 10])
def test_topk_accuracy_matches_sklearn(seed, n_classes):
    rng = np.random.default_rng(seed)
    n = 200
    scores = rng.normal(size=(n, n_classes))  # continuous: no ties, so the tie-breaking rules cannot differ
    labels = rng.integers(0, n_classes, size=n)
    logits, targets = torch.from_numpy(scores), torch.from_numpy(labels)
    classes = np.arange(n_classes)
    tol = 1e-6  # topk_accuracy averages in float32 (0.115 comes back as 0.11500000208...): well within 1e-6
    for k in range(1, n_classes):
        expected = sklearn_metrics.top_k_accuracy_score(labels, scores, k=k, labels=classes)
        assert topk_accuracy(logits, targets, k) == pytest.approx(expected, abs=tol), k
    # top-1 is plain accuracy of the argmax
    expected = sklearn_metrics.accuracy_score(labels, scores.argmax(1))
    assert topk_accuracy(logits, targets, 1) == pytest.approx(expected, abs=tol)
    # k >= the number of classes: every row counts (cft clamps k; sklearn warns and says the same)
    for k in (n_classes, n_classes + 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = sklearn_metrics.top_k_accuracy_score(labels, scores, k=k, labels=classes)
        assert topk_accuracy(logits, targets, k) == pytest.approx(expected) == 1.0


# ---------------------------------------------------------------------------------------------- group accuracies


@needs_sklearn
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_size", [1, 15])
def test_group_accuracies_match_sklearn(seed, min_size):
    rng = np.random.default_rng(seed)
    n, n_groups = 300, 6
    groups = rng.choice(n_groups, size=n, p=[0.4, 0.3, 0.15, 0.1, 0.04, 0.01])  # some groups are small
    correct = rng.random(n) < rng.uniform(0.3, 0.95, size=n_groups)[groups]
    train_sizes = {g: int(rng.integers(0, 500)) for g in range(n_groups - 1)}  # the last group: weight 0
    out = group_accuracies(correct, groups, train_sizes, min_size=min_size)

    ids, counts = np.unique(groups, return_counts=True)
    kept = [int(g) for g, c in zip(ids, counts) if c >= min_size]
    per = {
        g: sklearn_metrics.accuracy_score(np.ones(int((groups == g).sum()), bool), correct[groups == g]) for g in kept
    }
    assert out["per_group"].keys() == per.keys()
    for g in kept:
        assert out["per_group"][g] == pytest.approx(per[g], abs=1e-12)
    assert out["worst_group"] == pytest.approx(min(per.values()), abs=1e-12)

    # the plain average over groups is balanced accuracy with the groups as the classes: a sample's "prediction"
    # is its own group when it is right, and a label no group has when it is wrong
    sel = np.isin(groups, kept)
    predicted = np.where(correct[sel], groups[sel], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that -1 is not among the true classes
        balanced = sklearn_metrics.balanced_accuracy_score(groups[sel], predicted)
    assert out["average"] == pytest.approx(balanced, abs=1e-12)

    # the weighted average is accuracy over the kept samples, each weighing its group's training size spread over
    # the group's evaluation samples (so every group weighs its training size in total)
    weight = np.array([train_sizes.get(int(g), 0) / (groups == g).sum() for g in groups[sel]])
    if weight.sum() > 0:
        expected = sklearn_metrics.accuracy_score(np.ones(int(sel.sum()), bool), correct[sel], sample_weight=weight)
        assert out["weighted_average"] == pytest.approx(expected, abs=1e-12)
    else:
        assert out["weighted_average"] == out["average"]


# ---------------------------------------------------------------------------------------------- average precision


@needs_sklearn
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("density", [0.02, 0.3, 0.9])
def test_average_precision_matches_sklearn(seed, density):
    # cft ranks pixels one by one (ties in pixel order); sklearn makes one threshold per distinct score. Without
    # ties, as here (continuous scores), the two definitions agree exactly.
    rng = np.random.default_rng(seed)
    scores = rng.random(500)
    positives = rng.random(500) < density
    positives[rng.integers(500)] = True  # at least one positive
    expected = sklearn_metrics.average_precision_score(positives, scores)
    assert average_precision(scores, positives) == pytest.approx(expected, abs=1e-12)
    # 2-D input (a map and its mask) is ranked over all its pixels
    assert average_precision(scores.reshape(20, 25), positives.reshape(20, 25)) == pytest.approx(expected, abs=1e-12)


@needs_sklearn
def test_average_precision_of_informative_scores_matches_sklearn():
    # scores that separate the classes partly (AP well above the base rate), where a wrong ranking would show
    rng = np.random.default_rng(7)
    positives = rng.random(400) < 0.2
    scores = rng.normal(size=400) + 1.5 * positives
    expected = sklearn_metrics.average_precision_score(positives, scores)
    assert expected > 0.4
    assert average_precision(scores, positives) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------- relevance alignment


def _masks(rng, n, h, w):
    """Masks of mixed kinds: random blobs (rectangles) of several sizes, sparse noise, and in some images empty
    or full masks (the edge cases of IoU and AP)."""
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        kind = rng.integers(4)
        if kind == 0:
            y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
            masks[i, y0 : rng.integers(y0 + 1, h + 1), x0 : rng.integers(x0 + 1, w + 1)] = True
        elif kind == 1:
            masks[i] = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        elif kind == 2:
            masks[i] = rng.random() < 0.5  # all background or all foreground
        else:
            masks[i] = rng.random((h, w)) < 0.02
    return masks


def _sklearn_alignment(maps, masks):
    """The reference, per image then averaged, as cft defines it: each map binarised at its own mean."""
    pa, miou, ap = [], [], []
    for m, s in zip(maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)):
        pred = m > m.mean()
        pa.append(sklearn_metrics.accuracy_score(s, pred))
        # mean IoU over the two classes (background, foreground); a class absent from both mask and prediction
        # counts as a perfect 1, as in cft
        miou.append(sklearn_metrics.jaccard_score(s, pred, labels=[False, True], average="macro", zero_division=1.0))
        if s.any():  # images with an empty mask are left out of mAP
            ap.append(sklearn_metrics.average_precision_score(s, m))
    return {
        "pixel_accuracy": float(np.mean(pa)),
        "miou": float(np.mean(miou)),
        "map": float(np.mean(ap)) if ap else float("nan"),
    }


@needs_sklearn
@pytest.mark.parametrize("seed", SEEDS)
def test_relevance_alignment_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 12, 9, 11
    masks = _masks(rng, n, h, w)
    # maps that follow the masks more or less, plus noise: continuous values, so no ties for AP
    maps = rng.uniform(0.0, 1.0, size=n)[:, None, None] * masks + rng.random((n, h, w))
    out = relevance_alignment(maps, masks)
    expected = _sklearn_alignment(maps, masks)
    for key in ("pixel_accuracy", "miou", "map"):
        assert out[key] == pytest.approx(expected[key], abs=1e-12), key


@needs_sklearn
def test_relevance_alignment_with_constant_maps_and_empty_masks_matches_sklearn():
    # a constant map predicts no foreground at all; with an empty mask, foreground IoU is 0/0 (counted as 1)
    rng = np.random.default_rng(11)
    maps = rng.random((4, 6, 6))
    masks = rng.random((4, 6, 6)) < 0.3
    maps[1], masks[1] = 0.25, False  # constant map, empty mask
    maps[2] = 0.0  # constant map over a non-empty mask
    masks[3] = False  # empty mask
    assert masks[0].any() and masks[2].any()
    out = relevance_alignment(maps, masks)
    expected = _sklearn_alignment(maps, masks)
    for key in ("pixel_accuracy", "miou"):
        assert out[key] == pytest.approx(expected[key], abs=1e-12), key
    # mAP: in image 2 every pixel ties, where cft (pixel order) and sklearn (one threshold for the tie) differ by
    # definition; without it, the empty masks are skipped and only image 0 counts
    no_ties = [0, 1, 3]
    assert relevance_alignment(maps[no_ties], masks[no_ties])["map"] == pytest.approx(
        sklearn_metrics.average_precision_score(masks[0].ravel(), maps[0].ravel()), abs=1e-12
    )
    assert np.isnan(relevance_alignment(maps[[1, 3]], masks[[1, 3]])["map"])


# ---------------------------------------------------------------------------------------------- rank accuracy


@needs_sklearn
@pytest.mark.parametrize("seed", SEEDS)
def test_relevance_rank_accuracy_matches_sklearn_precision(seed):
    # relevance rank accuracy is the precision of the |mask| most relevant pixels taken as the prediction; with
    # continuous maps (no ties) that prediction is the map thresholded at its |mask|-th largest value
    rng = np.random.default_rng(seed)
    masks = _masks(rng, 12, 8, 8)
    maps = rng.uniform(0.0, 1.0, size=12)[:, None, None] * masks + rng.random((12, 8, 8))
    expected = []
    for m, s in zip(maps.reshape(12, -1), masks.reshape(12, -1)):
        k = int(s.sum())
        if k:
            pred = m >= np.sort(m)[-k]
            assert pred.sum() == k
            expected.append(sklearn_metrics.precision_score(s, pred))
    assert relevance_rank_accuracy(maps, masks) == pytest.approx(np.mean(expected), abs=1e-12)
