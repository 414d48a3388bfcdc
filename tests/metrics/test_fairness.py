"""AUC, its bootstrap interval, sensitivity at a specificity, ECE, per-group AUC and ES-AUC, against
scikit-learn and hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from labelwise.errors import DataError
from labelwise.metrics.fairness import (
    auc_confidence_interval,
    equity_scaled_auc,
    expected_calibration_error,
    group_auc,
    roc_auc,
    sensitivity_at_specificity,
    summarize_binary,
)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(labels * 0.5 + rng.normal(0, 1, 200), 1)  # rounded: many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_of_one_class_is_nan_and_bad_input_is_refused():
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))
    with pytest.raises(DataError, match="0 or 1"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(DataError, match="length"):
        roc_auc([0.1], [0, 1])


def test_bootstrap_interval_brackets_the_auc_and_narrows_with_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = labels + rng.normal(0, 1, 400)
    low, high = auc_confidence_interval(scores, labels, resamples=500, seed=1)
    assert low < roc_auc(scores, labels) < high
    small = auc_confidence_interval(scores[:50], labels[:50], resamples=500, seed=1)
    assert small[1] - small[0] > high - low
    assert auc_confidence_interval(scores, labels, resamples=500, seed=1) == (low, high)  # seeded
    assert np.isnan(auc_confidence_interval([0.2, 0.3], [0, 0])[0])


def test_auc_intervals_are_percentiles_of_scikit_learns_auc_over_resamples():
    """Oracle: the resamples ``bootstrap_interval`` draws (numpy's default_rng(seed), one (resamples, N) draw),
    each scored by scikit-learn (macro: the mean over the labels with both classes), and numpy's percentiles."""
    from labelwise.metrics.fairness import macro_auc_confidence_interval

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (40, 3))
    labels[:, 2] = rng.random(40) < 0.1  # a rare label: some resamples hold one class of it
    scores = labels + rng.normal(0, 1, (40, 3))
    index = np.random.default_rng(6).integers(0, 40, size=(300, 40))
    binary = [roc_auc_score(labels[i, 0], scores[i, 0]) for i in index]
    assert auc_confidence_interval(scores[:, 0], labels[:, 0], resamples=300, seed=6) == pytest.approx(
        tuple(np.percentile(binary, [2.5, 97.5])), abs=1e-12
    )
    macro = [
        np.mean([roc_auc_score(labels[i, k], scores[i, k]) for k in range(3) if 0 < labels[i, k].sum() < 40])
        for i in index
    ]
    assert macro_auc_confidence_interval(scores, labels, resamples=300, seed=6) == pytest.approx(
        tuple(np.percentile(macro, [2.5, 97.5])), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5))
def test_sensitivity_at_specificity_matches_the_roc_curve(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    scores = np.round(labels + rng.normal(0, 1, 150), 1)
    fpr, tpr, _ = roc_curve(labels, scores)
    expected = tpr[fpr <= 0.1 + 1e-12].max()
    assert sensitivity_at_specificity(scores, labels, 0.9) == pytest.approx(expected)


def test_ece_by_hand():
    # bin [0.2, 0.267): p 0.2, 0.25 -> mean 0.225, labels 0, 1 -> 0.5; bin of 0.9: p 0.9, label 1
    p = np.array([0.2, 0.25, 0.9])
    y = np.array([0, 1, 1])
    expected = (2 * abs(0.225 - 0.5) + abs(0.9 - 1.0)) / 3
    assert expected_calibration_error(p, y, bins=15) == pytest.approx(expected)
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0


def test_group_auc_and_es_auc_by_hand():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7])
    labels = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    groups = ["f", "f", "f", "f", "m", "m", "x", "x"]
    per_group = group_auc(scores, labels, groups)
    assert per_group["f"]["auc"] == 1.0 and per_group["m"]["auc"] == 0.0
    assert per_group["x"]["auc"] is None and "all 2 cases are positive" in per_group["x"]["note"]
    auc = roc_auc(scores, labels)
    result = equity_scaled_auc(auc, per_group)
    assert result["groups"] == ["f", "m"]
    assert result["es_auc"] == pytest.approx(auc / (1 + abs(auc - 1.0) + abs(auc - 0.0)))
    same = {"a": {"auc": auc}, "b": {"auc": auc}}
    assert equity_scaled_auc(auc, same)["es_auc"] == pytest.approx(auc)  # no gap between groups: ES-AUC = AUC


def test_summarize_binary_against_scikit_learn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = 1 / (1 + np.exp(-(2 * labels - 1 + rng.normal(0, 1.5, 300))))
    sex = rng.choice(["f", "m"], 300)
    race = np.where(rng.random(300) < 0.02, "rare", rng.choice(["a", "b"], 300))
    labels[race == "rare"] = 1  # a group with one class: no AUC
    result = summarize_binary(scores, labels, {"sex": sex, "race": race}, resamples=200)
    predicted = scores >= 0.5
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert result["auc_ci"][0] < result["auc"] < result["auc_ci"][1]
    assert result["group_auc"]["sex"]["f"] == pytest.approx(roc_auc_score(labels[sex == "f"], scores[sex == "f"]))
    assert result["group_auc"]["race"]["rare"] is None and "rare" in result["group_notes"]["race"]
    gap = sum(abs(result["auc"] - result["group_auc"]["race"][g]) for g in ("a", "b"))
    assert result["es_auc"]["race"] == pytest.approx(result["auc"] / (1 + gap))
    assert 0 <= result["ece"] <= 1
    json.dumps(result, allow_nan=False)  # JSON-ready: no nan anywhere
