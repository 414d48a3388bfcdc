"""Multi-label-aware metrics against hand computations, a per-image loop, and scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from labelwise.data.labelsets import load_label_sets
from labelwise.metrics import multilabel as ml

NAN = float("nan")

# 4 images, 5 classes. Scores give the order of predictions per row.
SCORES = torch.tensor(
    [
        [0.9, 0.5, 0.1, 0.0, 0.2],  # order 0, 1, 4, 2, 3
        [0.1, 0.2, 0.8, 0.7, 0.0],  # order 2, 3, 1, 0, 4
        [0.3, 0.9, 0.2, 0.1, 0.8],  # order 1, 4, 0, 2, 3
        [0.5, 0.4, 0.3, 0.2, 0.1],  # order 0, 1, 2, 3, 4
    ]
)
SETS = [[0], [3, 2], [4, 0, 2], []]
SINGLE = torch.tensor([0, 3, 4, 1])


def test_hand_computed_example():
    matrix = ml.label_set_matrix(SETS, 5)
    top = ml.top_predictions(SCORES, 5)
    assert top[:, 0].tolist() == [0, 2, 1, 0]
    assert ml.topk_correct(top, SINGLE, 1).tolist() == [1, 0, 0, 0]
    assert ml.topk_correct(top, SINGLE, 2).tolist() == [1, 1, 1, 1]
    real1 = ml.real_correct(top, matrix, 1)
    assert real1[:3].tolist() == [1, 1, 0] and torch.isnan(real1[3])  # the empty set is left out
    subset = ml.variable_topk_correct(top, matrix, "subset")
    fraction = ml.variable_topk_correct(top, matrix, "fraction")
    # row 1: k=2, top2 = {2, 3} = set; row 2: k=3, top3 = {1, 4, 0}: 2 of {4, 0, 2}
    assert subset[:3].tolist() == [1, 1, 0] and torch.isnan(subset[3])
    assert fraction[:3].tolist() == pytest.approx([1, 1, 2 / 3]) and torch.isnan(fraction[3])
    counts = matrix.sum(1)
    assert ml.subgroup_accuracy(fraction, counts) == {1: (1, 1.0), 2: (1, 1.0), 3: (1, pytest.approx(2 / 3))}
    assert ml.asma(fraction, counts) == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert ml.asma(fraction, counts, aggregation=np.min) == pytest.approx(2 / 3)


def test_summarize_keys_and_values():
    r = ml.summarize(SCORES, ml.label_set_matrix(SETS, 5), SINGLE, topk=(1, 2))
    assert r["n_images"] == 4 and r["n_real_scored"] == 3 and r["n_empty_label_sets"] == 1
    assert r["top1"] == 0.25 and r["top2"] == 1.0
    assert r["real_top1"] == pytest.approx(2 / 3)
    assert r["variable_topk_subset"] == pytest.approx(2 / 3)
    assert r["variable_topk_fraction"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert r["multi_label_fraction"] == pytest.approx(2 / 3)  # of the images with a non-empty set
    assert r["subgroup_accuracy"]["3"] == {
        "n": 1,
        "top1": 0.0,
        "top2": 1.0,
        "real_top1": 0.0,
        "real_top2": 1.0,
        "variable_topk_subset": 0.0,
        "variable_topk_fraction": pytest.approx(2 / 3),
    }
    assert r["asma"] == pytest.approx(2 / 3) and "variable_topk_subset" in r["asma_definition"]
    assert r["unavailable"] == {}


def test_integer_predictions_give_the_top1_family_only():
    r = ml.summarize(torch.tensor([0, 2, 1, 0]), ml.label_set_matrix(SETS, 5), SINGLE, topk=(1, 5))
    assert r["top1"] == 0.25 and r["real_top1"] == pytest.approx(2 / 3)
    for key in ("top5", "real_top5", "variable_topk_subset", "variable_topk_fraction", "asma"):
        assert r[key] is None and key in r["unavailable"]
    with pytest.raises(ValueError, match="row 2 predicts class 7, outside"):
        ml.summarize(torch.tensor([0, 7, 1, 0]), ml.label_set_matrix(SETS, 5))


def test_label_set_matrix_refuses_out_of_range():
    with pytest.raises(ValueError, match="row 1 holds class 9"):
        ml.label_set_matrix([[0], [1, 9]], 5)


def _loop_oracle(scores: np.ndarray, sets: list[list[int]], k: int) -> tuple[float, float, float]:
    """ReaL top-k, variable top-k subset and fraction, one image at a time."""
    real, subset, fraction = [], [], []
    for row, labels in zip(scores, sets, strict=True):
        if not labels:
            continue
        order = list(np.argsort(-row, kind="stable"))
        real.append(any(c in labels for c in order[:k]))
        top = set(order[: len(labels)])
        subset.append(set(labels) <= top)
        fraction.append(len(top & set(labels)) / len(labels))
    return float(np.mean(real)), float(np.mean(subset)), float(np.mean(fraction))


def test_against_a_per_image_loop():
    rng = np.random.default_rng(1)
    n, c = 400, 30
    scores = rng.permutation(n * c).reshape(n, c).astype(np.float32)  # no ties: one order
    sets = [sorted(rng.choice(c, size=rng.integers(0, 6), replace=False).tolist()) for _ in range(n)]
    r = ml.summarize(scores, ml.label_set_matrix(sets, c), topk=(3,))
    assert (r["real_top3"], r["variable_topk_subset"], r["variable_topk_fraction"]) == pytest.approx(
        _loop_oracle(scores, sets, 3)
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 25), st.integers(2, 7), st.integers(0, 10_000), st.booleans())
def test_multilabel_model_metrics_equal_sklearn(n, c, seed, ties):
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, 4, (n, c)) / 3 if ties else rng.random((n, c))).astype(np.float32)
    y = (rng.random((n, c)) < 0.35).astype(int)
    predicted = (scores >= 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ml.mean_average_precision(scores, y, average=None).numpy() == pytest.approx(
            skm.average_precision_score(y, scores, average=None), abs=1e-6
        )
        assert float(ml.mean_average_precision(scores, y)) == pytest.approx(
            skm.average_precision_score(y, scores, average="macro"), abs=1e-6
        )
        for average in ("micro", "macro", "samples"):
            assert float(ml.f1_score(scores, y, average)) == pytest.approx(
                skm.f1_score(y, predicted, average=average, zero_division=0), abs=1e-6
            )
    assert float(ml.label_ranking_average_precision(scores, y)) == pytest.approx(
        skm.label_ranking_average_precision_score(y, scores), abs=1e-6
    )
    assert float(ml.subset_accuracy(scores, y)) == pytest.approx(skm.accuracy_score(y, predicted))
    assert float(ml.hamming_loss(scores, y)) == pytest.approx(skm.hamming_loss(y, predicted))


def test_float16_memmap_and_chunking(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((300, 40)).astype(np.float16)
    np.save(tmp_path / "s.npy", scores)
    mapped = np.load(tmp_path / "s.npy", mmap_mode="r")
    sets = [[int(i % 40)] for i in range(300)]
    whole = ml.summarize(mapped, ml.label_set_matrix(sets, 40), threshold=0.5)
    monkeypatch.setattr(ml, "_CHUNK_ELEMENTS", 97)  # many small chunks: the same numbers
    chunked = ml.summarize(mapped, ml.label_set_matrix(sets, 40), threshold=0.5)
    assert {k: v for k, v in whole.items() if k != "subgroup_accuracy"} == {
        k: v for k, v in chunked.items() if k != "subgroup_accuracy"
    }


def test_bootstrap_intervals_hold_the_estimate():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((500, 10)).astype(np.float32)
    sets = [sorted(rng.choice(10, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(500)]
    r = ml.summarize(scores, ml.label_set_matrix(sets, 10), bootstrap=300)
    for key in ("real_top1", "variable_topk_subset", "asma"):
        low, high = r["ci"][key]
        assert low < r[key] < high and high - low < 0.2


def test_builtin_label_sets_match_their_published_counts():
    real = load_label_sets("imagenet-real")
    assert len(real) == 50_000 and real.ids[0] == "ILSVRC2012_val_00000001.JPEG"
    counts = np.array([len(s) for s in real.sets])
    assert (counts == 0).sum() == 3163
    assert (counts >= 2).sum() / (counts > 0).sum() == pytest.approx(0.159, abs=5e-4)
    v2 = load_label_sets("imagenetv2-multilabel")
    counts = np.array([len(s) for s in v2.sets])
    assert len(v2) == 10_000 and (counts == 0).sum() == 129
    assert (counts >= 2).mean() == pytest.approx(0.479, abs=5e-4)  # the published 47.9% counts empty sets too
    assert v2.class_names[0] == "tench" and len(v2.class_names) == 1000


def test_asma_interval_is_the_percentile_of_asma_over_resamples():
    """Oracle: each bootstrap resample of the images (the generator ``bootstrap_interval`` draws from) scored with
    :func:`asma` itself, one resample at a time, and numpy's 2.5 and 97.5 percentiles."""
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((120, 8)).astype(np.float32)
    sets = [sorted(rng.choice(8, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(120)]
    label_sets = ml.label_set_matrix(sets, 8)
    r = ml.summarize(scores, label_sets, bootstrap=200, seed=9)
    count = label_sets.sum(dim=1)
    correct = ml.variable_topk_correct(ml.top_predictions(scores, 3), label_sets, "subset")
    keep = (count > 0).numpy()
    correct, count = correct[keep], count[keep]
    draw = np.random.default_rng(9)
    values = [ml.asma(correct[i], count[i]) for i in draw.integers(0, len(correct), size=(200, len(correct)))]
    assert r["ci"]["asma"] == pytest.approx(list(np.percentile(values, [2.5, 97.5])), abs=1e-12)
