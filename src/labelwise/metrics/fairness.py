"""Binary-outcome scores of a classifier and their spread over patient groups (numpy, vectorised).

For the semi-supervised classification capability (Luo et al., ICCV 2023, Harvard-GDP), which reports AUC overall
and per sex, race and ethnicity, and the equity-scaled AUC of the Harvard ophthalmology group::

    ES-AUC = AUC / (1 + sum over groups g of |AUC - AUC_g|)

``scores`` are the model's scores for the positive class (any monotone scale for AUC; probabilities for
calibration), ``labels`` 0/1. A group whose labels are all one class has no AUC: it is reported as ``None`` with
the reason, and left out of the ES-AUC sum (the result says which groups were used)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from labelwise.errors import DataError
from labelwise.io import json_ready
from labelwise.metrics import classification as cls
from labelwise.metrics.aggregate import bootstrap_interval
from labelwise.metrics.classification import f1_from_counts

__all__ = [
    "auc_confidence_interval",
    "calibration_counts",
    "ece_from_counts",
    "equity_scaled_auc",
    "expected_calibration_error",
    "group_auc",
    "binary_scores",
    "macro_auc_confidence_interval",
    "roc_auc",
    "sensitivity_at_specificity",
    "summarize",
    "summarize_binary",
]


_CHUNK = 256  # bootstrap resamples of the AUC at a time (each ranks a (256, N) array: bounded memory)


def binary_scores(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores float64 ``(N,)`` and 0/1 labels ``(N,)`` checked: same length, finite scores, labels 0 or 1."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise DataError(f"scores and labels differ in length: {scores.size} vs {labels.size}")
    if not np.all(np.isfinite(scores)):
        raise DataError("scores must be finite")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise DataError(f"labels must be 0 or 1, got values {np.unique(labels)[:5].tolist()}")
    return scores, labels.astype(bool)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve, the Mann-Whitney statistic with ties counted one half; nan when only one class
    is present."""
    scores, labels = binary_scores(scores, labels)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: ties count 1/2
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of every row of ``scores``/``labels`` ``(R, N)`` at once (nan for a row with one class)."""
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def auc_confidence_interval(
    scores: Any, labels: Any, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (:func:`labelwise.metrics.aggregate.bootstrap_interval`: cases
    resampled with replacement; resamples with one class are dropped); (nan, nan) when the AUC itself is undefined."""
    scores, labels = binary_scores(scores, labels)
    if not 0 < level < 1 or resamples < 1:
        raise DataError(f"level must lie in (0, 1) and resamples be >= 1, got {level}, {resamples}")
    if np.isnan(roc_auc(scores, labels)):
        return float("nan"), float("nan")
    return bootstrap_interval(
        lambda index: _auc_rows(scores[index], labels[index]), scores.size, resamples, level, seed, chunk=_CHUNK
    )


def sensitivity_at_specificity(scores: Any, labels: Any, specificity: float = 0.9) -> float:
    """The largest sensitivity among thresholds whose specificity is at least ``specificity`` (positive where
    score >= threshold; every distinct score and +inf are tried); nan with one class."""
    scores, labels = binary_scores(scores, labels)
    if labels.all() or not labels.any():
        return float("nan")
    negatives, positives = np.sort(scores[~labels]), np.sort(scores[labels])
    thresholds = np.append(np.unique(scores), np.inf)
    spec = np.searchsorted(negatives, thresholds, side="left") / negatives.size  # negatives below the threshold
    sens = 1 - np.searchsorted(positives, thresholds, side="left") / positives.size  # positives at or above it
    return float(sens[spec >= specificity - 1e-12].max())


def calibration_counts(probabilities: Any, labels: Any, bins: int = 15) -> np.ndarray:
    """Per equal-width bin of [0, 1] of the positive class's probability: ``(3, bins)`` float64, the sum of the
    probabilities, the number of positives and the number of cases in it. Counts of several sets add up: the
    reliability diagram and :func:`ece_from_counts` of their union."""
    probabilities, labels = binary_scores(probabilities, labels)
    if probabilities.size and (probabilities.min() < 0 or probabilities.max() > 1):
        raise DataError("probabilities must lie in [0, 1]")
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    return np.stack(
        [
            np.bincount(which, probabilities, minlength=bins),
            np.bincount(which, labels.astype(np.float64), minlength=bins),
            np.bincount(which, minlength=bins).astype(np.float64),
        ]
    )


def ece_from_counts(counts: np.ndarray) -> float:
    """ECE of :func:`calibration_counts`: sum over bins of (n_b / N) |mean p - positive rate| = sum over bins of
    |sum p - positives| / N (nan without cases)."""
    total = counts[2].sum()
    return float(np.abs(counts[0] - counts[1]).sum() / total) if total else float("nan")


def expected_calibration_error(probabilities: Any, labels: Any, bins: int = 15) -> float:
    """Binary ECE: the probabilities of the positive class in ``bins`` equal-width bins of [0, 1]; the mean over
    cases of |mean probability - positive rate| of each case's bin."""
    return ece_from_counts(calibration_counts(probabilities, labels, bins))


def group_auc(scores: Any, labels: Any, groups: Sequence[Any] | np.ndarray) -> dict[str, dict[str, Any]]:
    """Per group (values of ``groups``, one per case, as strings): ``{"auc", "n", "positives"}`` with ``auc`` None
    and a ``note`` when the group holds one class only."""
    scores, labels = binary_scores(scores, labels)
    groups = np.asarray([str(g) for g in groups])
    if groups.size != scores.size:
        raise DataError(f"groups has {groups.size} entries for {scores.size} cases")
    out = {}
    for group in sorted(set(groups.tolist())):
        member = groups == group
        positives = int(labels[member].sum())
        auc = roc_auc(scores[member], labels[member])
        entry: dict[str, Any] = {"auc": None if np.isnan(auc) else auc, "n": int(member.sum()), "positives": positives}
        if np.isnan(auc):
            entry["note"] = f"no AUC: all {entry['n']} cases are {'positive' if positives else 'negative'}"
        out[group] = entry
    return out


def equity_scaled_auc(auc: float, per_group: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"es_auc", "groups"}``: AUC / (1 + sum |AUC - AUC_g|) over the groups that have an AUC (listed)."""
    used = {g: e["auc"] for g, e in per_group.items() if e.get("auc") is not None}
    if np.isnan(auc) or not used:
        return {"es_auc": None, "groups": sorted(used)}
    return {"es_auc": float(auc / (1 + sum(abs(auc - a) for a in used.values()))), "groups": sorted(used)}


def summarize_binary(
    scores: Any,
    labels: Any,
    attributes: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    threshold: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The scores the semi-supervised capability reports for one binary outcome, as JSON-ready values:
    ``auc``, ``auc_ci`` (bootstrap 95%; None when ``resamples`` is 0), ``accuracy``, ``balanced_accuracy``,
    ``macro_f1`` (at ``threshold`` on the probability ``scores``), ``sensitivity_at_90_specificity``, ``ece``, and per
    attribute column ``group_auc`` ``{attribute: {group: auc or None}}``, ``group_n``
    ``{attribute: {group: [cases, positives]}}``, ``group_notes`` (why a group has none) and ``es_auc``
    ``{attribute: value}``. Undefined values are None."""
    scores, labels = binary_scores(scores, labels)
    predicted = scores >= threshold

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    tp, tn = float((predicted & labels).sum()), float((~predicted & ~labels).sum())
    fp, fn = float((predicted & ~labels).sum()), float((~predicted & labels).sum())
    counts = torch.tensor([[tp, tn], [tp + fp, tn + fn], [tp + fn, tn + fp]], dtype=torch.float64)
    f1 = f1_from_counts(*counts).numpy()  # of the positive class and of the negative class: true, predicted, actual
    auc = roc_auc(scores, labels)
    result: dict[str, Any] = {
        "n": int(labels.size),
        "positives": int(labels.sum()),
        "auc": auc,
        "auc_ci": list(auc_confidence_interval(scores, labels, resamples, seed=seed)) if resamples else None,
        "accuracy": ratio(tp + tn, labels.size),
        "balanced_accuracy": float(np.nanmean([ratio(tp, tp + fn), ratio(tn, tn + fp)])),
        "macro_f1": float(np.nanmean(f1)),
        "sensitivity_at_90_specificity": sensitivity_at_specificity(scores, labels, 0.9),
        "ece": expected_calibration_error(scores, labels) if scores.min() >= 0 and scores.max() <= 1 else None,
        "group_auc": {},
        "group_n": {},
        "group_notes": {},
        "es_auc": {},
    }
    for name, values in (attributes or {}).items():
        per_group = group_auc(scores, labels, values)
        result["group_auc"][name] = {g: e["auc"] for g, e in per_group.items()}
        result["group_n"][name] = {g: [e["n"], e["positives"]] for g, e in per_group.items()}
        result["group_notes"][name] = {g: e["note"] for g, e in per_group.items() if "note" in e}
        result["es_auc"][name] = equity_scaled_auc(auc, per_group)["es_auc"]
    return json_ready(result)


def macro_auc_confidence_interval(
    scores: Any, labels: Any, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (:func:`labelwise.metrics.aggregate.bootstrap_interval`) of the macro AUC (the
    mean over columns of ``(N, K)`` scores against 0/1 labels, columns with one class left out of each resample's
    mean)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)

    def macro_auc(index: np.ndarray) -> np.ndarray:
        per_label = np.stack([_auc_rows(scores[index, k], labels[index, k]) for k in range(scores.shape[1])], axis=1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan rows: nan, left out by bootstrap_interval
            return np.nanmean(per_label, axis=1)

    return bootstrap_interval(macro_auc, scores.shape[0], resamples, level, seed, chunk=_CHUNK)


def summarize(
    probability: Any,
    target: Any,
    multilabel: bool = False,
    class_names: Sequence[str] = (),
    attributes: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The end-of-run evaluation of a classifier's probabilities ``(N, K)`` (softmax, or sigmoid per label when
    ``multilabel``) against targets ``(N,)`` class indices or ``(N, K)`` 0/1, with ``kind`` binary, multiclass
    or multilabel. Binary: :func:`summarize_binary` of p(class 1). Otherwise every label (one-vs-rest for
    multiclass) is summarised under ``per_label``, and the top-level keys are macro means over labels: ``auc``
    (with a macro bootstrap ``auc_ci``), ``sensitivity_at_90_specificity``, ``ece`` and, per attribute,
    ``group_auc`` (mean of the labels' group AUCs) and ``es_auc`` computed from those; ``accuracy``,
    ``balanced_accuracy`` and ``macro_f1`` are of the argmax (multiclass) or the mean of the labels' values at 0.5
    (multilabel)."""
    probability = np.asarray(probability, dtype=np.float64)
    target = np.asarray(target)
    k = probability.shape[1]
    names = list(class_names) if len(class_names) == k else [str(c) for c in range(k)]
    if not multilabel and k == 2:
        out = summarize_binary(probability[:, 1], target, attributes, resamples=resamples, seed=seed)
        return {"kind": "binary", "class_names": names, **out}
    labels = target.astype(bool) if multilabel else target[:, None] == np.arange(k)[None]
    per_label = {
        name: summarize_binary(probability[:, j], labels[:, j], attributes, resamples=resamples, seed=seed)
        for j, name in enumerate(names)
    }

    def mean(key: str) -> float:
        values = [v[key] for v in per_label.values() if v[key] is not None]
        return float(np.mean(values)) if values else float("nan")

    auc = mean("auc")
    result: dict[str, Any] = {
        "kind": "multilabel" if multilabel else "multiclass",
        "class_names": names,
        "n": int(target.shape[0]),
        "auc": auc,
        "auc_ci": list(macro_auc_confidence_interval(probability, labels, resamples, seed=seed)) if resamples else None,
        "sensitivity_at_90_specificity": mean("sensitivity_at_90_specificity"),
        "ece": mean("ece"),
        "group_auc": {},
        "group_notes": {},
        "es_auc": {},
        "per_label": per_label,
    }
    if multilabel:
        result.update(accuracy=mean("accuracy"), balanced_accuracy=mean("balanced_accuracy"), macro_f1=mean("macro_f1"))
    else:
        pred, true = torch.from_numpy(probability.argmax(axis=1)), torch.from_numpy(target.astype(np.int64))
        result.update(
            accuracy=float(cls.accuracy(pred, true)),
            balanced_accuracy=float(cls.balanced_accuracy(pred, true, k)),
            macro_f1=float(cls.macro_f1(pred, true, k)),
        )
    for name in attributes or {}:
        groups = sorted({g for v in per_label.values() for g in v["group_auc"].get(name, {})})
        per_group = {}
        for g in groups:
            values = [v["group_auc"][name][g] for v in per_label.values() if v["group_auc"][name].get(g) is not None]
            per_group[g] = {"auc": float(np.mean(values)) if values else None}
        result["group_auc"][name] = {g: e["auc"] for g, e in per_group.items()}
        result["group_notes"][name] = {
            g: "no AUC for any label (one class in every label)" for g, e in per_group.items() if e["auc"] is None
        }
        result["es_auc"][name] = equity_scaled_auc(auc, per_group)["es_auc"]
    return json_ready(result)
