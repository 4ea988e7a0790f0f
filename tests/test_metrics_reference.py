"""The evaluation metrics against scikit-learn's, on random inputs with several seeds.

cft's alignment metrics are per image, then averaged over images (the ImageNet-segmentation protocol), so the
references below loop over the images too rather than pooling every pixel into one sklearn call.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

sklearn_metrics = pytest.importorskip("sklearn.metrics")  # the dev extra installs it

from cft.evaluate import (  # noqa: E402 - after the skip
    average_precision,
    group_accuracies,
    relevance_alignment,
    relevance_rank_accuracy,
    topk_accuracy,
)

SEEDS = [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- top-k accuracy


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
