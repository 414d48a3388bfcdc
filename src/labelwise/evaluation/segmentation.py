"""Score a folder of predicted masks against a folder of reference masks (``labelwise evaluate segmentation``).

Files are matched by case id (the file name without its suffix: ``case01.nii.gz`` <-> ``case01.png``), and ids with
no file of their name by the pairing rule of ``labelwise data manifest`` (``01_test.png`` <-> ``01_manual1.gif``); any of
``.nii.gz .nii .png .tif .tiff .jpg .jpeg .npy`` is read with :func:`labelwise.data.volumes.read_volume`. When
``pred`` holds a ``masks/`` folder (where ``labelwise predict`` writes its masks) that folder is read. Each case
gets the scores of :func:`labelwise.metrics.surface.segmentation_scores` of the whole foreground, ``label > 0``.
With ``roi`` (a folder of region-of-interest masks, matched by
case id the same way), both masks are background outside each case's region: scores inside it.

Refused with a :class:`~labelwise.errors.DataError` naming the files: cases present on one side only (unless
``allow_missing``, which skips them with a note), two files with the same case id in one folder, shapes that
differ, and voxel spacings that differ by more than ``1e-3`` relative on any axis. Spacing is only compared
between files that store one (NIfTI); ``.npy`` and pictures carry none and take the other file's. Distances are in
the spacing's units: mm for NIfTI, pixels otherwise (``spacing_unit``).

The summary is the mean and the sample standard deviation (``ddof=1``) over cases, each ignoring nan values (see
the empty-mask conventions in :mod:`labelwise.metrics.surface`); the std of a single value is nan. ``count`` says
how many cases entered each mean, and ``empty_prediction``, ``empty_reference`` and ``both_empty`` how many cases
have an empty mask, where HD95 and ASSD are undefined (nan) and left out of their means; a note says so, and the
table shows ``(n=k)`` beside every mean over fewer than all cases::

    result = evaluate_segmentation(Path("runs/pred"), Path("data/labels"))
    # {"cases": [{"id", "pred", "truth", "spacing", "dice", ...}], "mean": {...}, "std": {...}, "count": {...},
    #  "empty_prediction": k, "empty_reference": k, "both_empty": k,
    #  "n": N, "spacing_unit": "mm", "notes": [...], "skipped": {"pred_only": [...], "truth_only": [...]}}
    Path("scores.json").write_text(to_json(result))

Several classes (label maps ``0..K``): when a mask of any case holds a label above 1, or ``class_names`` are given,
every case is also scored per class by :func:`labelwise.metrics.surface.class_scores` (label ``k`` against label
``k``), ``K`` being the number of names, else the highest label found in any mask; classes are named
``class_names`` or ``"1", "2", ...``. The whole-foreground scores stay where they were; the result adds::

    {"classes": ["liver", "tumour"],                       # [] when scored as one foreground only
     "cases": [{..., "per_class": {"liver": {"dice": ..., ...}, "tumour": {...}}}],
     "per_class": {"liver": {"mean", "std", "count", "empty_prediction", "empty_reference", "both_empty"}, ...}}

A class absent from both masks of a case scores nan there (counted in ``both_empty``, left out of the class's
``count`` and mean). :func:`to_csv` writes a ``class`` column and one block of rows per class after the whole-foreground
rows; :func:`format_table` adds one mean row per class below the foreground's.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.volumes import (
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    case_id,
    read_volume,
    suffix_of,
)
from labelwise.data.pairing import match_by_key
from labelwise.errors import DataError
from labelwise.io import json_ready
from labelwise.metrics.aggregate import empty_mask_note, mean_std
from labelwise.metrics.surface import SCORE_NAMES, class_scores

__all__ = ["SCORE_LABELS", "SCORE_NAMES", "evaluate_segmentation", "format_table",
           "summarize_cases", "summarize_classes", "to_csv", "to_json"]

SPACING_RTOL = 1e-3
_LIST_AT_MOST = 10

SCORE_LABELS = {
    "dice": "Dice", "iou": "IoU", "precision": "precision", "sensitivity": "sensitivity",
    "volumetric_similarity": "VS", "hd95": "HD95", "assd": "ASSD", "cldice": "clDice",
}
_DISTANCES = ("hd95", "assd")


def _listing(ids: list[str]) -> str:
    shown = ", ".join(ids[:_LIST_AT_MOST])
    return shown + (f" and {len(ids) - _LIST_AT_MOST} more" if len(ids) > _LIST_AT_MOST else "")


def _cases(folder: Path, what: str) -> dict[str, Path]:
    """Case id -> file of the mask files directly in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} not found" if not folder.exists()
                        else f"{what}: {folder} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or suffix_of(path) not in VOLUME_SUFFIXES:
            continue
        cid = case_id(path)
        if cid in found:
            raise DataError(f"{what}: two files for case {cid!r}: {found[cid]} and {path}")
        found[cid] = path
    if not found:
        raise DataError(f"{what} folder {folder} holds no mask files ({', '.join(VOLUME_SUFFIXES)})")
    return found


def _keyed(pred_files: dict[str, Path], others: dict[str, Path]) -> dict[str, Path]:
    """``others`` by case id, where the prediction ids with no file of their own name take the one file whose key
    is theirs under ``labelwise data manifest``'s pairing rule (``01_test.png`` with ``01_manual1.gif``)."""
    unmatched = [path for cid, path in pred_files.items() if cid not in others]
    spare = [path for cid, path in others.items() if cid not in pred_files]
    if not unmatched or not spare:
        return others
    paired = {case_id(p): o for p, o in match_by_key(unmatched, spare).items()}
    used = set(paired.values())
    return {**{cid: path for cid, path in others.items() if path not in used}, **paired}


def _has_spacing(path: Path) -> bool:
    return suffix_of(path) in NIFTI_SUFFIXES


def _check_pair(pred_path: Path, truth_path: Path, pred_vol, truth_vol) -> tuple[float, ...]:
    """Refuse differing shapes or spacings; the spacing to score with."""
    if pred_vol.array.shape != truth_vol.array.shape:
        raise DataError(f"shape mismatch: prediction {pred_path} has shape {tuple(pred_vol.array.shape)}, "
                        f"truth {truth_path} has shape {tuple(truth_vol.array.shape)}")
    if pred_vol.array.ndim not in (2, 3):
        raise DataError(f"{truth_path}: masks must be 2D or 3D, got shape {tuple(truth_vol.array.shape)}")
    ps, ts = pred_vol.spacing, truth_vol.spacing
    if _has_spacing(pred_path) and _has_spacing(truth_path):
        a, b = np.asarray(ps, dtype=np.float64), np.asarray(ts, dtype=np.float64)
        if a.shape != b.shape or np.any(np.abs(a - b) > SPACING_RTOL * np.maximum(np.abs(a), np.abs(b))):
            raise DataError(f"spacing mismatch: prediction {pred_path} has spacing {tuple(ps)}, "
                            f"truth {truth_path} has spacing {tuple(ts)} (tolerance {SPACING_RTOL:g} relative)")
        return tuple(ts)
    return tuple(ps) if _has_spacing(pred_path) else tuple(ts)


def _labels_note(path: Path, array: np.ndarray, what: str) -> str | None:
    top = int(array.max(initial=0))
    if top <= 1:
        return None
    labels = [int(v) for v in np.unique(array) if v > 0]
    return f"{what} {path.name} holds labels {_listing([str(v) for v in labels])}"


_NAN_SCORES = dict.fromkeys(SCORE_NAMES, math.nan)  # a class absent from both masks (metrics.surface.class_scores)


def evaluate_segmentation(pred: Path, truth: Path, *, allow_missing: bool = False,
                          roi: Path | None = None, class_names: list[str] | None = None) -> dict[str, Any]:
    """Score every predicted mask in ``pred`` (or ``pred/masks``) against the same case in ``truth``; with ``roi``, a
    folder of region-of-interest masks matched by case id (every scored case needs one), inside them only. Per class
    too when a mask holds labels above 1 or ``class_names`` (one per label ``1..K``) are given.

    Returns ``{"cases", "mean", "std", "count", "n", "spacing_unit", "notes", "skipped", "classes", "per_class"}``
    as described in the module docstring; cases are in case-id order."""
    names = [str(n) for n in class_names] if class_names else None
    pred, truth = Path(pred), Path(truth)
    if (pred / "masks").is_dir():
        pred = pred / "masks"
    pred_files = _cases(pred, "prediction")
    truth_files = _keyed(pred_files, _cases(truth, "truth"))
    pred_only = sorted(set(pred_files) - set(truth_files))
    truth_only = sorted(set(truth_files) - set(pred_files))
    notes: list[str] = []
    if (pred_only or truth_only) and not allow_missing:
        parts = []
        if pred_only:
            parts.append(f"{len(pred_only)} predicted case(s) without truth in {truth}: {_listing(pred_only)}")
        if truth_only:
            parts.append(f"{len(truth_only)} truth case(s) without prediction in {pred}: {_listing(truth_only)}")
        raise DataError("; ".join(parts) + " (cases are matched by file name without suffix; "
                        "allow missing cases to skip them)")
    if pred_only:
        notes.append(f"skipped {len(pred_only)} predicted case(s) without truth: {_listing(pred_only)}")
    if truth_only:
        notes.append(f"skipped {len(truth_only)} truth case(s) without prediction: {_listing(truth_only)}")
    common = sorted(set(pred_files) & set(truth_files))
    if not common:
        raise DataError(f"no case id is found in both {pred} and {truth}")
    roi_files = _keyed(pred_files, _cases(Path(roi), "region-of-interest")) if roi is not None else {}
    no_roi = [cid for cid in common if roi is not None and cid not in roi_files]
    if no_roi:
        raise DataError(f"{len(no_roi)} case(s) without a region-of-interest mask in {roi}: {_listing(no_roi)}")

    cases: list[dict[str, Any]] = []
    per_case: list[list[dict[str, float]]] = []  # each case's class scores, labels 1.. its highest (or len(names))
    multi: list[str] = []  # which masks hold labels above 1
    units: set[str] = set()
    for cid in common:
        pp, tp = pred_files[cid], truth_files[cid]
        pv, tv = read_volume(pp, mask=True), read_volume(tp, mask=True)
        spacing = _check_pair(pp, tp, pv, tv)
        for path, vol, what in ((pp, pv, "prediction"), (tp, tv, "truth")):
            note = _labels_note(path, vol.array, what)
            if note:
                multi.append(note)
        units.add("mm" if _has_spacing(pp) or _has_spacing(tp) else "pixels")
        region = None
        if roi is not None:
            rv = read_volume(roi_files[cid], mask=True)
            _check_pair(pp, roi_files[cid], pv, rv)
            region = rv.array > 0
        try:
            scored = class_scores(pv.array, tv.array, spacing, len(names) + 1 if names else None, region, names)
        except DataError as err:
            raise DataError(f"case {cid} ({pp} vs {tp}): {err}"
                            + (f" ({len(names)} class names given)" if names else "")) from None
        per_case.append(list(scored["per_class"].values()))
        cases.append({"id": cid, "pred": str(pp), "truth": str(tp), "spacing": [float(s) for s in spacing],
                      **({"roi": str(roi_files[cid])} if roi is not None else {}), **scored["foreground"]})

    classes: list[str] = []
    if names or multi:
        top = len(names) if names else max(len(scores) for scores in per_case)
        classes = names or [str(k) for k in range(1, top + 1)]
        for case, scores in zip(cases, per_case):  # labels above a case's highest: absent from both masks, nan
            case["per_class"] = {name: scores[k] if k < len(scores) else dict(_NAN_SCORES)
                                 for k, name in enumerate(classes)}
        if multi:
            notes.append(f"{len(multi)} mask(s) hold labels above 1 (first: {multi[0]}): scored per class "
                         f"({', '.join(classes)}) and as one foreground (label > 0)")
    unit = units.pop() if len(units) == 1 else "mm (NIfTI cases), pixels (other cases)"
    summary = summarize_cases(cases)
    note = empty_mask_note(summary, len(cases))
    return {"cases": cases, **summary, "n": len(cases), "spacing_unit": unit, "roi": str(roi) if roi else None,
            "notes": notes + ([note] if note else []), "skipped": {"pred_only": pred_only, "truth_only": truth_only},
            "classes": classes, "per_class": summarize_classes(cases, classes)}


def summarize_cases(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"mean", "std", "count", "empty_prediction", "empty_reference", "both_empty"}`` over ``cases`` (each a dict
    of :func:`~labelwise.metrics.surface.segmentation_scores`): mean and std (ddof=1) of every score, nan skipped;
    ``count`` the cases behind each mean; and how many cases have only the prediction, only the reference, or both
    masks empty (HD95 and ASSD are nan there). An empty mask shows in the scores: precision is nan exactly when the
    prediction is empty, sensitivity exactly when the reference is."""
    mean, std, count = {}, {}, {}
    for name in SCORE_NAMES:
        values = np.array([case[name] for case in cases], dtype=np.float64)
        mean[name], std[name] = mean_std(values, ddof=1)
        count[name] = int(np.count_nonzero(~np.isnan(values)))
    no_pred = np.isnan(np.array([case["precision"] for case in cases], dtype=np.float64))
    no_ref = np.isnan(np.array([case["sensitivity"] for case in cases], dtype=np.float64))
    return {"mean": mean, "std": std, "count": count,
            "empty_prediction": int(np.count_nonzero(no_pred & ~no_ref)),
            "empty_reference": int(np.count_nonzero(no_ref & ~no_pred)),
            "both_empty": int(np.count_nonzero(no_pred & no_ref))}


def summarize_classes(cases: list[dict[str, Any]], classes: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: summarize_cases(...)}`` of each class over the cases' ``per_class`` scores (a case lacking a class
    counts as absent from both masks: nan); ``{}`` without classes."""
    return {name: summarize_cases([case.get("per_class", {}).get(name, _NAN_SCORES) for case in cases])
            for name in classes}


def to_json(result: dict[str, Any], path: Path | None = None) -> str:
    """The result as JSON text, nan written as ``null`` (strict JSON); also written to ``path`` when given."""
    text = json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n"
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text


def _number(value: float) -> str:
    return "" if value is None or math.isnan(value) else format(value, ".8g")


def to_csv(result: dict[str, Any], path: Path | None = None) -> str:
    """CSV text: ``id, pred, truth, <scores>``, one row per case then rows ``mean`` and ``std``; nan is empty. With
    classes (``result["classes"]``) a last column ``class`` follows, empty on those whole-foreground rows, and then
    one block of the same rows per class (``class`` its name)."""
    classes = result.get("classes") or []
    extra = [""] if classes else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "pred", "truth", *SCORE_NAMES, *(["class"] if classes else [])])
    for case in result["cases"]:
        writer.writerow([case["id"], case["pred"], case["truth"], *(_number(case[n]) for n in SCORE_NAMES), *extra])
    for row in ("mean", "std"):
        writer.writerow([row, "", "", *(_number(result[row][n]) for n in SCORE_NAMES), *extra])
    for name in classes:
        for case in result["cases"]:
            scores = case.get("per_class", {}).get(name, _NAN_SCORES)
            writer.writerow([case["id"], case["pred"], case["truth"], *(_number(scores[n]) for n in SCORE_NAMES),
                             name])
        for row in ("mean", "std"):
            writer.writerow([row, "", "", *(_number(result["per_class"][name][row][n]) for n in SCORE_NAMES), name])
    text = out.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text


def _cell(name: str, value: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if name in _DISTANCES else f"{value:.3f}"


def format_table(result: dict[str, Any]) -> list[list[str]]:
    """Rows of strings for printing: a header (distances labelled with ``spacing_unit``), one row per case, and a
    last row ``mean ± std``, with ``(n=k)`` where a mean is over fewer than all cases (nan values left out). Overlap
    scores with 3 decimals, distances with 2, nan as ``-``. With classes, one more row per class below it,
    ``class <name>``: the class's mean ± std, ``(n=k)`` where fewer cases than all hold it or score it."""
    unit = result["spacing_unit"]
    unit = unit if unit in ("mm", "pixels") else "mm/px"
    header = ["case", *(f"{SCORE_LABELS[n]} ({unit})" if n in _DISTANCES else SCORE_LABELS[n] for n in SCORE_NAMES)]
    rows = [header]
    for case in result["cases"]:
        rows.append([case["id"], *(_cell(n, case[n]) for n in SCORE_NAMES)])
    rows.append(_mean_row(f"mean ± std (n={result['n']})", result, result["n"]))
    for cls in result.get("classes") or []:
        rows.append(_mean_row(f"class {cls}", result["per_class"][cls], result["n"]))
    return rows


def _mean_row(label: str, summary: dict[str, Any], n: int) -> list[str]:
    row = [label]
    for name in SCORE_NAMES:
        m, s = summary["mean"][name], summary["std"][name]
        cell = "-" if math.isnan(m) else _cell(name, m) + ("" if math.isnan(s) else f" ± {_cell(name, s)}")
        count = summary.get("count", {}).get(name, n)
        row.append(cell if count == n else f"{cell} (n={count})")
    return row
