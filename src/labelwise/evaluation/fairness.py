"""``labelwise evaluate classification --attributes CSV``: score saved probabilities of a binary, multi-class or
multi-label classifier overall and per patient group (AUC with bootstrap CI, calibration, per-group AUC, ES-AUC).

Predictions: a run's ``predictions/test.npz`` (``probability`` (N, K), ``target``; ids from ``test_ids.txt`` beside
it), a ``.npy`` of scores ``(N,)`` or ``(N, K)`` (ids with ``--ids``), or a CSV with an ``id`` column and one
probability column per class (one column: the positive class of a binary problem). Scores must lie in [0, 1];
logits are taken with ``logits=True`` (``--logits``): a sigmoid per column for one column (binary) or several labels
(multi-label), a softmax over the columns for exclusive classes. Labels come from the ``.npz`` or from ``--labels``:
a CSV (an ``id`` column and the label column(s)) or single labels in row order (``.npy``, ``.npz``, JSON, text);
groups from ``--attributes CSV`` (an ``id`` column and one column per attribute). Rows are matched by id; ids
missing on either side are refused."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.labelsets import read_ids, read_labels
from labelwise.data.table import read_id_table
from labelwise.errors import DataError
from labelwise.io import atomic_write
from labelwise.metrics.fairness import summarize

__all__ = ["evaluate_fairness"]


def _read_predictions(
    path: Path, ids: Path | None
) -> tuple[list[str] | None, np.ndarray, np.ndarray | None, list[str]]:
    """Row ids (None: unknown), probabilities (N, K), targets if the file has them, class names."""
    if not path.is_file():
        raise DataError(f"--predictions {path}: no such file")
    names: list[str] = []
    target = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "probability" not in data.files:
                raise DataError(f"--predictions {path}: no 'probability' array (keys: {', '.join(data.files)})")
            scores = np.asarray(data["probability"], dtype=np.float64)
            target = np.asarray(data["target"]) if "target" in data.files else None
        beside = path.with_name(f"{path.stem}_ids.txt")
        row_ids = read_ids(ids) if ids else read_ids(beside) if beside.is_file() else None
    elif path.suffix == ".npy":
        scores = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        row_ids = read_ids(ids) if ids else None
    elif path.suffix == ".csv":
        table = read_id_table(path, what="--predictions")
        names = [c for c in table if c != "id"]
        try:
            scores = np.stack([table[c].astype(np.float64) for c in names], axis=1)
        except ValueError:
            raise DataError(f"--predictions {path}: every column but id must hold numbers") from None
        row_ids = table["id"].tolist()
    else:
        raise DataError(f"--predictions {path}: use a .npz (a run's predictions), .npy or .csv file")
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2:
        raise DataError(f"--predictions {path}: scores must be (N,) or (N, K), got shape {scores.shape}")
    if row_ids is not None and len(row_ids) != len(scores):
        raise DataError(f"--predictions {path}: {len(scores)} rows but {len(row_ids)} ids")
    return row_ids, scores, target, names


def _probabilities(path: Path, scores: np.ndarray, multilabel: bool, logits: bool) -> np.ndarray:
    """``scores`` checked to lie in [0, 1], or, for ``logits``, mapped there: sigmoid per column (one column, or
    multi-label), softmax over the columns (exclusive classes)."""
    if np.isnan(scores).any():
        raise DataError(f"--predictions {path}: holds NaN scores")
    if logits:
        if multilabel or scores.shape[1] == 1:
            return 0.5 * (1.0 + np.tanh(0.5 * scores))  # the logistic sigmoid, without overflow
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    low, high = (float(scores.min()), float(scores.max())) if scores.size else (0.0, 1.0)
    if low < 0 or high > 1:
        raise DataError(
            f"--predictions {path}: scores range from {low:.4g} to {high:.4g}, outside [0, 1]; if they "
            "are logits, add --logits"
        )
    return scores


def _match(row_ids: list[str], table: dict[str, np.ndarray], what: str) -> np.ndarray:
    position = {i: k for k, i in enumerate(table["id"].tolist())}
    missing = [i for i in row_ids if i not in position]
    if missing:
        raise DataError(f"{what}: {len(missing)} prediction id(s) not found, e.g. {', '.join(missing[:5])}")
    return np.array([position[i] for i in row_ids], dtype=np.int64)


def evaluate_fairness(
    predictions: str | Path,
    attributes: str | Path | None = None,
    labels: str | Path | None = None,
    label_columns: Sequence[str] = ("label",),
    attribute_columns: Sequence[str] | None = None,
    ids: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    logits: bool = False,
) -> dict[str, Any]:
    """``{"summary": <labelwise.metrics.fairness.summarize>, "scores", "target", "groups", "multilabel"}``.
    ``resamples`` 0: no bootstrap interval (``auc_ci`` None). ``logits``: see the module docstring."""
    row_ids, scores, target, names = _read_predictions(Path(predictions), Path(ids) if ids else None)
    if labels is not None:
        target, row_ids = read_labels(labels, list(label_columns), row_ids, len(scores))
        names = list(label_columns) if target.ndim == 2 else names
    if target is None:
        raise DataError("no labels: the predictions file has no 'target'; give --labels (a CSV, or single labels)")
    multilabel = target.ndim == 2
    if multilabel and target.shape[1] != scores.shape[1]:
        raise DataError(f"--predictions {predictions}: {scores.shape[1]} score columns for {target.shape[1]} labels")
    if not multilabel and target.size and (target.min() < 0 or target.max() >= max(scores.shape[1], 2)):
        raise DataError(
            f"labels range from {target.min()} to {target.max()}, but --predictions {predictions} has "
            f"{scores.shape[1]} score column(s) (classes 0 to {max(scores.shape[1], 2) - 1})"
        )
    scores = _probabilities(Path(predictions), scores, multilabel, logits)
    if scores.shape[1] == 1 and not multilabel:  # one column: p(positive) of a binary problem
        scores = np.concatenate([1 - scores, scores], axis=1)
    groups: dict[str, np.ndarray] = {}
    if attributes is not None:
        if row_ids is None:
            raise DataError("--attributes needs ids for the prediction rows: give --ids (or a run's test.npz)")
        table = read_id_table(attributes, attribute_columns, what="--attributes")
        rows = _match(row_ids, table, "--attributes")
        groups = {c: table[c][rows] for c in table if c != "id"}
    summary = summarize(scores, target, multilabel, names, groups, resamples=resamples, seed=seed)
    return {"summary": summary, "scores": scores, "target": target, "groups": groups, "multilabel": multilabel}


def write_fairness_json(result: dict[str, Any], path: str | Path) -> Path:
    return atomic_write(Path(path), json.dumps(result["summary"], indent=2))
