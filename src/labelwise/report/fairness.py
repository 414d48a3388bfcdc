"""ROC curves and AUC by patient group of a classifier's test predictions: the figure, the tables, the run report's
fairness section and the standalone page of ``labelwise evaluate classification --attributes``.

A classification run that evaluates fairness writes (see docs/run-directory.md):

- ``predictions/test.npz``: ``probability`` ``(N, K)``, ``target`` (``(N,)`` class indices, or ``(N, K)`` 0/1 for
  multi-label runs), and per attribute ``attribute_<name>`` ``(N,)`` strings;
- ``predictions/test_evaluation.json``: ``kind`` (binary / multiclass / multilabel), ``class_names``, and the keys of
  :func:`labelwise.metrics.fairness.summarize_binary` (for multiclass and multilabel runs their macro means over the
  labels, one-vs-rest for multiclass, plus ``per_label`` ``{label: summarize_binary of that label}``).

ES-AUC (Luo et al., ICCV 2023) = AUC / (1 + sum over groups of |AUC - AUC_group|)."""

from __future__ import annotations

import base64
import json
import math
import warnings
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

import labelwise
from labelwise.errors import DataError
from labelwise.io import atomic_write
from labelwise.metrics.fairness import binary_scores, roc_auc
from labelwise.report.common import environment, save_figure
from labelwise.report.figures import _number, _png

ES_AUC_DEFINITION = (
    "ES-AUC = AUC / (1 + Σ_groups |AUC − AUC_group|) (Luo et al., ICCV 2023): 1 when every group "
    "has the overall AUC, lower the further the groups' AUCs lie from it; a group whose cases are "
    "all of one class has no AUC and is left out of the sum."
)
HEADLINE = (
    ("auc", "AUC"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro-F1"),
    ("sensitivity_at_90_specificity", "sensitivity at 90% specificity"),
    ("ece", "ECE"),
)
KINDS = ("binary", "multiclass", "multilabel")
MAX_GROUP_CURVES = 10  # per attribute panel: the largest groups are drawn, the others counted in the legend
MAX_LABEL_CURVES = 12  # in the overall panel of a multi-label or multiclass run
ALL = "(all)"  # the group column of an attribute's summary row

__all__ = [
    "build_fairness_report",
    "fairness_rows",
    "fairness_section",
    "group_counts",
    "label_rows",
    "roc_curve_points",
    "roc_figure",
    "roc_png",
]


# ---------------------------------------------------------------------------------------------------------------
# ROC curves


def roc_curve_points(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of the ROC curve of ``scores`` against 0/1 ``labels``: one point per
    distinct score, from (0, 0) to (1, 1), as ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``
    (tied scores make one step, so the area under the polyline counts ties one half). A rate whose class is absent
    is nan throughout."""
    scores, labels = binary_scores(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    # the last case of every distinct score (decreasing): the curve's points after the first, (0, 0)
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else np.zeros(0, int)
    tps = np.r_[0, np.cumsum(labels)[last]]
    fps = np.r_[0, last + 1 - tps[1:]]
    fpr = fps / fps[-1] if fps[-1] else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] else np.full(tps.shape, np.nan)
    return fpr, tpr


def _auc_or_nan(scores: np.ndarray, labels: np.ndarray) -> float:
    return roc_auc(scores, labels) if scores.size else float("nan")


def _text(value: Any) -> str:
    """``value`` as plain text for matplotlib (a '$' would start mathtext)."""
    return str(value).replace("$", r"\$")


def _curve(ax, scores: np.ndarray, labels: np.ndarray, name: str, **style) -> float:
    """Draw one ROC curve labelled 'name: AUC (n)', or only the legend entry 'name: no AUC (one class)'."""
    auc = _auc_or_nan(scores, labels)
    name = _text(name)
    n = f"n={labels.size}"
    if math.isnan(auc):
        ax.plot([], [], " ", label=f"{name}: no AUC (one class), {n}")
    else:
        fpr, tpr = roc_curve_points(scores, labels)
        ax.plot(fpr, tpr, label=f"{name}: AUC {auc:.3f}, {n}", linewidth=1.6, **style)
    return auc


def _finish(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--", label="chance")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        aspect="equal",
        title=title,
        xlabel="false positive rate (1 − specificity)",
        ylabel="true positive rate (sensitivity)",
    )
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.85)


def _names(label_names: Any, count: int) -> list[str]:
    names = [str(n) for n in (label_names or [])]
    return [names[k] if k < len(names) else f"label {k}" for k in range(count)]


def _label_index(label: int | str | None, names: list[str]) -> int:
    """The column of ``label`` (an index or a name; None: the first)."""
    if label is None:
        return 0
    if isinstance(label, str) and label in names:
        return names.index(label)
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and -len(names) <= label < len(names):
        return int(label) % len(names)
    raise DataError(f"label {label!r} is not one of the {len(names)} labels {names[:10]}")


def roc_figure(
    scores: Any,
    labels: Any,
    attributes: Mapping[str, Any] | None = None,
    title: str = "",
    *,
    label_names: list[str] | None = None,
    label: int | str | None = None,
) -> Figure:
    """The ROC figure as a matplotlib Figure: an ``overall`` panel, then one panel per attribute with one curve per
    group (legend: group, AUC, n; a group of one class is listed without a curve). ``scores``/``labels`` ``(N,)``:
    one binary outcome. ``(N, K)`` (multi-label, or one-vs-rest for multiclass): the overall panel has one curve
    per label, the attribute panels show ``label`` (a name from ``label_names`` or an index; the first by default)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim not in (1, 2) or labels.shape != scores.shape:
        raise DataError(f"scores {scores.shape} and labels {labels.shape} must have the same shape, (N,) or (N, K)")
    groups_of = {str(name): np.asarray(values).astype(str).reshape(-1) for name, values in (attributes or {}).items()}
    for name, values in groups_of.items():
        if values.size != scores.shape[0]:
            raise DataError(f"attribute {name!r} has {values.size} entries for {scores.shape[0]} cases")
    panels = 1 + len(groups_of)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.6 * cols, 4.4 * rows + (0.4 if title else 0)), layout="constrained")
    ax = fig.add_subplot(rows, cols, 1)
    if scores.ndim == 2:
        names = _names(label_names, scores.shape[1])
        column = _label_index(label, names)
        aucs = [_auc_or_nan(scores[:, k], labels[:, k]) for k in range(scores.shape[1])]
        shown = list(range(min(len(names), MAX_LABEL_CURVES)))
        if column not in shown:
            shown[-1] = column
        for k in shown:
            _curve(ax, scores[:, k], labels[:, k], names[k])
        if len(names) > len(shown):
            ax.plot([], [], " ", label=f"+ {len(names) - len(shown)} more labels not drawn")
        defined = [a for a in aucs if not math.isnan(a)]
        macro = f"macro AUC {np.mean(defined):.3f}" if defined else "no AUC"
        _finish(ax, f"overall: one curve per label ({macro})")
        scores, labels, suffix = scores[:, column], labels[:, column], f" · {names[column]}"
    else:
        _curve(ax, scores, labels, "all", color="black")
        _finish(ax, "overall")
        suffix = ""
    for number, (name, values) in enumerate(groups_of.items(), start=2):
        ax = fig.add_subplot(rows, cols, number)
        groups, sizes = np.unique(values, return_counts=True)
        drawn = set(groups[np.argsort(-sizes, kind="stable")[:MAX_GROUP_CURVES]].tolist())
        for group in groups:  # sorted, as in the tables
            if group in drawn:
                member = values == group
                _curve(ax, scores[member], labels[member], str(group))
        if len(groups) > len(drawn):
            ax.plot([], [], " ", label=f"+ {len(groups) - len(drawn)} smaller groups not drawn")
        _finish(ax, _text(f"{name}{suffix}"))
    if title:
        fig.suptitle(_text(title), fontsize=12)
    return fig


def roc_png(
    scores: Any,
    labels: Any,
    attributes: Mapping[str, Any] | None = None,
    title: str = "",
    *,
    label_names: list[str] | None = None,
    label: int | str | None = None,
) -> bytes:
    """:func:`roc_figure` as PNG bytes."""
    return _png(roc_figure(scores, labels, attributes, title, label_names=label_names, label=label))


# ---------------------------------------------------------------------------------------------------------------
# tables


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _count(value: Any) -> int | float | None:
    """A count from JSON: an int as is, a float (a mean over labels) as is, anything else None."""
    number = _number(value)
    if number is None:
        return None
    return int(value) if isinstance(value, int) else number


def _interval(value: Any) -> list[float | None] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    interval = [_number(v) for v in value]
    return None if interval == [None, None] else interval


def group_counts(labels: Any, attributes: Mapping[str, Any]) -> dict[str, dict[str, dict[str, int | None]]]:
    """``{attribute: {group: {"n", "positives"}}}`` of 0/1 ``labels`` ``(N,)`` (None: positives unknown) over the
    groups of each attribute (as strings, like :func:`labelwise.metrics.fairness.group_auc`)."""
    labels = None if labels is None else np.asarray(labels).reshape(-1).astype(bool)
    out: dict[str, dict[str, dict[str, int | None]]] = {}
    for name, values in attributes.items():
        values = np.asarray(values).astype(str).reshape(-1)
        groups, inverse, sizes = np.unique(values, return_inverse=True, return_counts=True)
        positives = (
            np.bincount(inverse.reshape(-1), weights=labels, minlength=groups.size)
            if labels is not None and labels.size == values.size
            else None
        )
        out[str(name)] = {
            str(g): {"n": int(sizes[i]), "positives": None if positives is None else int(positives[i])}
            for i, g in enumerate(groups)
        }
    return out


def _no_auc_note(n: Any, positives: Any) -> str:
    if isinstance(n, int) and isinstance(positives, int):
        return f"no AUC: all {n} cases are {'positive' if positives else 'negative'}"
    return "no AUC (one class)"


def fairness_rows(evaluation: Mapping[str, Any], counts: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The AUC-by-group table of one evaluation (``summarize_binary``'s keys): per attribute, a summary row (group
    ``(all)``: the evaluation's n, positives, AUC and the attribute's ES-AUC), then one row per group: ``n``,
    ``positives``, ``auc`` (None with the ``note`` why), and ``gap`` = |AUC - AUC_group|. Each row is a dict with
    keys ``attribute, group, summary, n, positives, auc, gap, es_auc, note``.

    The evaluation's ``group_auc`` holds ``{attribute: {group: auc or None}}``. A group's n and positives come from
    its entry if that is a dict ``{"auc", "n", "positives"}`` (the shape of
    :func:`labelwise.metrics.fairness.group_auc`), else from the evaluation's ``group_n``
    ``{attribute: {group: [n, positives]}}``, else from ``counts`` (:func:`group_counts` of the test predictions);
    None where none has them (the macro means of a multi-label evaluation have no positives)."""
    evaluation = _mapping(evaluation)
    per_attribute, notes = _mapping(evaluation.get("group_auc")), _mapping(evaluation.get("group_notes"))
    es_auc, counts = _mapping(evaluation.get("es_auc")), _mapping(counts)
    group_n = _mapping(evaluation.get("group_n"))
    overall = _number(evaluation.get("auc"))
    rows: list[dict[str, Any]] = []
    for attribute in [*per_attribute, *(a for a in es_auc if a not in per_attribute)]:
        rows.append(
            {
                "attribute": str(attribute),
                "group": ALL,
                "summary": True,
                "n": _count(evaluation.get("n")),
                "positives": _count(evaluation.get("positives")),
                "auc": overall,
                "gap": None,
                "es_auc": _number(es_auc.get(attribute)),
                "note": None if overall is not None else "no AUC",
            }
        )
        for group, value in _mapping(per_attribute.get(attribute)).items():
            entry = value if isinstance(value, Mapping) else {"auc": value}
            count = _mapping(_mapping(counts.get(attribute)).get(group))
            listed = _mapping(group_n.get(attribute)).get(group)
            if isinstance(listed, (list, tuple)) and len(listed) == 2:  # summarize_binary's [cases, positives]
                count = {"n": listed[0], "positives": listed[1]}
            n = _count(entry["n"] if "n" in entry else count.get("n"))
            positives = _count(entry["positives"] if "positives" in entry else count.get("positives"))
            auc = _number(entry.get("auc"))
            note = None
            if auc is None:
                note = str(entry.get("note") or _mapping(notes.get(attribute)).get(group) or _no_auc_note(n, positives))
            rows.append(
                {
                    "attribute": str(attribute),
                    "group": str(group),
                    "summary": False,
                    "n": n,
                    "positives": positives,
                    "auc": auc,
                    "gap": abs(overall - auc) if overall is not None and auc is not None else None,
                    "es_auc": None,
                    "note": note,
                }
            )
    return rows


def _label_order(evaluation: Mapping[str, Any]) -> list[str]:
    per_label = _mapping(evaluation.get("per_label"))
    names = [str(n) for n in evaluation.get("class_names") or [] if str(n) in per_label]
    return names + [str(n) for n in per_label if str(n) not in names]


def label_rows(evaluation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The AUC-by-label table of a multiclass or multi-label evaluation (empty without ``per_label``): one row per
    label (in ``class_names`` order), then the ``macro mean`` row of the top-level keys; each row a dict with keys
    ``label, macro, n, positives, auc, auc_ci`` ([lo, hi] or None) and ``es_auc`` ``{attribute: value}``."""
    evaluation = _mapping(evaluation)
    per_label = _mapping(evaluation.get("per_label"))

    def row(name: str, entry: Mapping, macro: bool) -> dict[str, Any]:
        return {
            "label": name,
            "macro": macro,
            "n": _count(entry.get("n")),
            "positives": _count(entry.get("positives")),
            "auc": _number(entry.get("auc")),
            "auc_ci": _interval(entry.get("auc_ci")),
            "es_auc": {str(a): _number(v) for a, v in _mapping(entry.get("es_auc")).items()},
        }

    rows = [row(name, _mapping(per_label.get(name)), False) for name in _label_order(evaluation)]
    return [*rows, row("macro mean", evaluation, True)] if rows else []


def _headline(evaluation: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {
            "name": name,
            "value": _number(evaluation.get(key)),
            "ci": _interval(evaluation.get("auc_ci")) if key == "auc" else None,
            "lower": key == "ece",
        }
        for key, name in HEADLINE
    ]
    rows += [
        {"name": f"ES-AUC · {attribute}", "value": _number(value), "ci": None, "lower": False}
        for attribute, value in _mapping(evaluation.get("es_auc")).items()
    ]
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the section and the pages


def _scores_and_labels(probability: Any, target: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 labels from the predictions: ``(N,)`` for a binary run (the positive class's probability),
    ``(N, K)`` otherwise (a multiclass target as one-hot)."""
    probability, target = np.asarray(probability, dtype=np.float64), np.asarray(target)
    if kind == "binary":
        if probability.ndim == 2 and probability.shape[1] in (1, 2):
            probability = probability[:, -1]
        if probability.ndim != 1 or target.reshape(-1).size != probability.size:
            raise DataError(
                f"a binary run needs probability (N, 2) and target (N,), got {probability.shape} and {target.shape}"
            )
        return probability, target.reshape(-1).astype(np.int64)
    if probability.ndim != 2:
        raise DataError(f"probability must be (N, K), got {probability.shape}")
    if target.ndim == 1 and target.size == probability.shape[0]:
        return probability, (target[:, None] == np.arange(probability.shape[1])).astype(np.int64)
    if target.shape != probability.shape:
        raise DataError(
            f"target {target.shape} must be (N,) class indices or (N, K) 0/1 like probability {probability.shape}"
        )
    return probability, target.astype(np.int64)


def _kind(evaluation: Mapping[str, Any]) -> str:
    kind = evaluation.get("kind")
    if kind in KINDS:
        return kind
    return "multilabel" if evaluation.get("per_label") else "binary"


def _embed(draw: Callable[[], bytes], run_dir: Path | None, notes: list[str]) -> dict[str, Any] | None:
    """The figure as a data URI; saved to ``run_dir/figures/fairness_roc.png`` too when given. A figure that fails
    is noted, not raised."""
    if run_dir is not None:
        return save_figure("fairness_roc", lambda _: draw(), None, run_dir, notes)
    try:
        png = draw()
    except Exception as exc:  # noqa: BLE001 - the tables are still worth writing
        warnings.warn(f"ROC figure failed: {exc!r}", stacklevel=2)
        notes.append(f"the ROC figure could not be drawn: {type(exc).__name__}: {exc}")
        return None
    return {"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"), "file": None}


def _section(
    evaluation: Mapping[str, Any],
    scores: np.ndarray | None,
    labels: np.ndarray | None,
    attributes: Mapping[str, Any],
    label: int | str | None,
    notes: list[str],
    run_dir: Path | None,
) -> dict[str, Any]:
    kind = _kind(evaluation)
    multi = kind != "binary"
    listed = [*_mapping(evaluation.get("group_auc")), *_mapping(evaluation.get("es_auc"))]
    attributes = {str(k): np.asarray(v).astype(str).reshape(-1) for k, v in attributes.items()}
    order = [a for a in dict.fromkeys(listed) if a in attributes] + [a for a in attributes if a not in listed]
    attributes = {a: attributes[a] for a in order}
    class_names = [str(n) for n in evaluation.get("class_names") or []]
    if multi and scores is not None and scores.ndim == 2:
        names = _names(class_names, scores.shape[1])
    else:
        names = _label_order(evaluation) or class_names

    selected = None
    if multi and names:
        try:
            selected = names[_label_index(label, names)]
        except DataError as exc:
            notes.append(f"{exc}: the figure shows the first label")
            selected = names[0]
    elif label is not None:
        notes.append(f"label {label!r} ignored: a binary evaluation has one outcome")

    figure = None
    if scores is not None and labels is not None:
        per = "one curve per class, one-vs-rest" if kind == "multiclass" else "one curve per label"
        caption = (
            f"ROC curves on the test split: {per}, and by group for {selected}"
            if multi
            else "ROC curves on the test split: overall and by group"
        )
        figure = _embed(
            lambda: roc_png(
                scores, labels, attributes, label_names=names if multi else None, label=selected if multi else None
            ),
            run_dir,
            notes,
        )
        if figure is not None:
            figure["caption"] = caption + (f" ({figure['file']})" if figure["file"] else "")
            figure["alt"] = caption

    if scores is None:
        counts = {}
    elif multi:
        counts = group_counts(None, attributes)
    else:
        counts = group_counts(labels, attributes)
    label_groups = []
    if multi:
        per_label = _mapping(evaluation.get("per_label"))
        for name in _label_order(evaluation):
            column = names.index(name) if name in names and labels is not None and labels.ndim == 2 else None
            # column is set only with labels
            label_counts = (
                group_counts(labels[:, column], attributes) if column is not None and labels is not None else counts
            )
            label_groups.append({"label": name, "rows": fairness_rows(_mapping(per_label.get(name)), label_counts)})
    rows = label_rows(evaluation) if multi else []
    label_attributes = list(dict.fromkeys(a for row in rows for a in row["es_auc"]))
    positive = class_names[-1] if kind == "binary" and len(class_names) == 2 else None
    return {
        "kind": kind,
        "multi": multi,
        "class_names": class_names,
        "positive_class": positive,
        "n": _count(evaluation.get("n")),
        "positives": _count(evaluation.get("positives")),
        "attributes": list(dict.fromkeys([*listed, *attributes])),
        "headline": _headline(evaluation),
        "figure": figure,
        "figure_label": selected,
        "predictions_missing": scores is None,
        "rows": fairness_rows(evaluation, counts),
        "label_rows": rows,
        "label_attributes": label_attributes,
        "label_groups": label_groups,
        "definition": ES_AUC_DEFINITION,
    }


def _read_predictions(path: Path, kind: str, notes: list[str]) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """(scores, labels, attributes) from ``predictions/test.npz``; (None, None, {}) with a note when unusable. An
    unreadable or mis-sized attribute is noted and left out."""
    attributes = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("probability", "target") if key not in data.files]
            if missing:
                notes.append(f"predictions/test.npz has no {' or '.join(missing)} array: no ROC curves")
                return None, None, {}
            scores, labels = _scores_and_labels(data["probability"], data["target"], kind)
            for key in data.files:
                if not key.startswith("attribute_"):
                    continue
                try:
                    values = data[key].reshape(-1)
                except ValueError as exc:  # e.g. an object array, which needs pickles
                    notes.append(f"predictions/test.npz: {key} could not be read: {exc}")
                    continue
                if values.size == scores.shape[0]:
                    attributes[key.removeprefix("attribute_")] = values
                else:
                    notes.append(f"predictions/test.npz: {key} has {values.size} entries for {scores.shape[0]} cases")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, DataError) as exc:
        notes.append(f"predictions/test.npz could not be used for the ROC curves: {exc}")
        return None, None, {}
    return scores, labels, attributes


def fairness_section(
    run_dir: str | Path, notes: list[str] | None = None, label: int | str | None = None
) -> dict[str, Any] | None:
    """The run report's fairness section, for the template: headline scores, the ROC figure (as a data URI; saved
    to ``figures/fairness_roc.png`` too), the AUC-by-group table (:func:`fairness_rows`) and, for multiclass and
    multi-label runs, the AUC-by-label table (:func:`label_rows`) and each label's AUC-by-group table; their ROC
    panels by group show ``label`` (a name or an index; the first by default). None when the run has no
    ``predictions/test_evaluation.json``. Problems with the files are appended to ``notes``."""
    run_dir = Path(run_dir)
    notes = notes if notes is not None else []
    path = run_dir / "predictions" / "test_evaluation.json"
    if not path.is_file():
        return None
    try:
        evaluation = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"predictions/test_evaluation.json could not be read: {exc}")
        return None
    if not isinstance(evaluation, dict):
        notes.append("predictions/test_evaluation.json could not be read: not a JSON object")
        return None
    npz = run_dir / "predictions" / "test.npz"
    if npz.is_file():
        scores, labels, attributes = _read_predictions(npz, _kind(evaluation), notes)
    else:
        scores, labels, attributes = None, None, {}
    return _section(evaluation, scores, labels, attributes, label, notes, run_dir)


def build_fairness_report(
    evaluation: Mapping[str, Any],
    scores: Any,
    labels: Any,
    attributes: Mapping[str, Any] | None,
    out: str | Path,
    title: str = "Classification and fairness",
    *,
    label: int | str | None = None,
) -> Path:
    """Write a self-contained HTML page of one evaluation (``test_evaluation.json``'s format) to ``out``: headline
    scores, the ROC figure of ``scores`` against ``labels`` by the groups of ``attributes`` (``{name: (N,)}``), and
    the AUC-by-group (and by-label) tables. ``scores``/``labels``: ``(N,)`` probabilities of the positive class and
    0/1 for a binary evaluation (``(N, 2)`` probabilities are accepted), ``(N, K)`` and ``(N,)`` class indices or
    ``(N, K)`` 0/1 otherwise; None for no figure."""
    notes: list[str] = []
    evaluation = _mapping(evaluation)
    if scores is not None and labels is not None:
        scores, labels = _scores_and_labels(scores, labels, _kind(evaluation))
    else:
        scores = labels = None
    section = _section(evaluation, scores, labels, attributes or {}, label, notes, None)
    html = (
        environment()
        .get_template("fairness.html.j2")
        .render(
            standalone=True,
            title=title,
            fairness=section,
            notes=notes,
            version=labelwise.__version__,
            generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    )
    return atomic_write(Path(out), html)
