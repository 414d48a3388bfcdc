"""``labelwise evaluate classification``: score saved model outputs against multi-label sets.

Reads each prediction file, matches its rows to the label sets (by ``--ids`` or by order), and runs
:func:`labelwise.metrics.multilabel.summarize`; writes the results as JSON, CSV and an HTML report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from labelwise.data.labelsets import align, load_label_sets, read_ids, read_labels, read_predictions
from labelwise.errors import DataError
from labelwise.io import atomic_write, json_ready
from labelwise.metrics.multilabel import label_set_matrix, summarize
from labelwise.report.evaluation import build_evaluation_report, table_columns

#: Columns of the model table (terminal, CSV, HTML), in order; absent ones are skipped.


def evaluate_classification(
    predictions: Sequence[str | Path],
    label_sets: str,
    ids: str | Path | None = None,
    single_labels: str | Path | None = None,
    topk: Sequence[int] = (1, 5),
    threshold: float | None = None,
    bootstrap: int = 0,
    asma_metric: str = "variable_topk_subset",
    label_columns: Sequence[str] = ("label",),
) -> dict:
    """Scores of every prediction file: ``{"label_set": ..., "models": [{"model": name, **scores}, ...]}``.
    ``single_labels``: the original label of each row, a CSV (``id`` + the one of ``label_columns``; rows matched by
    ``ids`` when given, else in file order) or a single-label file (see
    :func:`labelwise.data.labelsets.read_labels`)."""
    sets = load_label_sets(label_sets)
    row_ids = read_ids(ids) if ids is not None else None
    given_single = None
    if single_labels is not None:
        if len(label_columns) != 1:
            raise DataError(
                f"--labels {single_labels}: --label-sets scores take one original label per image; name "
                f"one --label-column, not {len(label_columns)} (the label sets hold the other classes)"
            )
        given_single, _ = read_labels(single_labels, list(label_columns), row_ids)
    cache: dict[int, tuple] = {}  # label matrix by row count (the same for every model of one evaluation)
    models = []
    for path in predictions:
        outputs = read_predictions(path)
        n = outputs.shape[0]
        if n not in cache:
            rows, folder_labels = align(sets, n, row_ids)
            num_classes = max(sets.num_classes, outputs.shape[1] if outputs.ndim == 2 else 0)
            matrix = label_set_matrix(rows, num_classes)
            cache[n] = (matrix, matrix.sum(dim=1, dtype=torch.int32), folder_labels)
        matrix, count, folder_labels = cache[n]
        single = given_single if given_single is not None else folder_labels
        if single is not None and len(single) != n:
            raise DataError(f"--labels has {len(single)} entries but {path} has {n} rows")
        if single is not None and (single.max(initial=-1) >= matrix.shape[1]):
            bad = int(np.flatnonzero(single >= matrix.shape[1])[0])
            raise DataError(f"single label of row {bad + 1} is {int(single[bad])}, outside [0, {matrix.shape[1]})")
        try:  # summarize checks the outputs' classes against the label sets; name the file in its message
            scores = summarize(
                outputs,
                matrix,
                single,
                topk=topk,
                label_count=count,
                threshold=threshold,
                bootstrap=bootstrap,
                asma_metric=asma_metric,
            )
        except ValueError as err:
            raise DataError(f"{path}: {err}") from None
        models.append({"model": _model_name(Path(path)), "file": str(path), **scores})
    return {"label_set": sets.name, "models": models}


def _model_name(path: Path) -> str:
    """The file's stem, or the run's name for a run's ``predictions/test.npz``."""
    if path.parent.name == "predictions" and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent.name
    return path.stem


def to_json(result: dict) -> str:
    """One model: its flat dict (plus ``label_set``); several: the whole result. nan becomes null."""
    body = {"label_set": result["label_set"], **result["models"][0]} if len(result["models"]) == 1 else result
    return json.dumps(json_ready(body), indent=2)


def to_csv(result: dict) -> str:
    """One row per model."""
    columns = ["model", *table_columns(result)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for model in result["models"]:
        writer.writerow({c: model.get(c) for c in columns})
    return buffer.getvalue()


def write_outputs(result: dict, json_out: Path | None, csv_out: Path | None, report_out: Path | None) -> list[Path]:
    """Write whichever of JSON, CSV and the HTML report were asked for; returns the paths."""
    written = []
    if json_out is not None:
        written.append(atomic_write(json_out, to_json(result)))
    if csv_out is not None:
        written.append(atomic_write(csv_out, to_csv(result)))
    if report_out is not None:
        written.append(build_evaluation_report(result, report_out))
    return written
