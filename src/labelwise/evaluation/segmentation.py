"""Score a folder of predicted masks against a folder of reference masks (``labelwise evaluate segmentation``).

Each predicted mask (case id: the file name without its suffix) is paired with a reference mask by
:func:`labelwise.data.pairing.match_references`, the rule ``labelwise predict --reference`` uses too: the file of the
same name (``case01.nii.gz`` <-> ``case01.png``), else of that name plus ``_mask``, ``_seg``, ``_label``, ``_gt`` or
``_roi`` (``case01_mask.nii.gz``), else of the same key under the pairing rule of ``labelwise data manifest``
(``01_test.png`` <-> ``01_manual1.gif``); any of ``.nii.gz .nii .png .tif .tiff .jpg .jpeg .gif .bmp .npy`` is read
with :func:`labelwise.data.volumes.read_volume`. When ``pred`` holds a ``masks/`` folder (where ``labelwise predict``
writes its masks) that folder is read. Each case gets the scores of the one per-case scorer,
:func:`labelwise.metrics.surface.score_case`, of the whole foreground, ``label > 0``. With ``roi`` (a folder of
region-of-interest masks, matched the same way), both masks are background outside each case's region: scores
inside it.

Refused with a :class:`~labelwise.errors.DataError` naming the files: cases present on one side only (unless
``allow_missing``, which skips them with a note), two predicted files with the same case id, ambiguous references
(two files of one rank for a case), shapes that differ, and voxel spacings that differ by more than ``1e-3``
relative on any axis (:func:`labelwise.data.pairing.check_reference`). Spacing is only compared between files that
store one (NIfTI); ``.npy`` and pictures carry none and take the other file's. Distances are in the spacing's units:
mm for NIfTI, pixels otherwise (``spacing_unit``).

The summary is the mean and the sample standard deviation (``ddof=1``) over cases, each ignoring nan values (see
the empty-mask conventions in :mod:`labelwise.metrics.surface`); the std of a single value is nan. ``count`` says
how many cases entered each mean, and ``empty_prediction``, ``empty_reference`` and ``both_empty`` how many cases
have an empty mask, where HD95 and ASSD are undefined (nan) and left out of their means; a note says so, and the
table shows ``(n=k)`` beside every mean over fewer than all cases::

    result = evaluate_segmentation(Path("runs/pred"), Path("data/labels"))
    # {"cases": [{"id", "pred", "truth", "spacing", "dice", ...}], "mean": {...}, "std": {...}, "count": {...},
    #  "empty_prediction": k, "empty_reference": k, "both_empty": k,
    #  "n": N, "spacing_unit": "mm", "notes": [...], "skipped": {"pred_only": [...], "truth_only": [...]}}
    to_json(result, Path("scores.json"))  # written atomically

Several classes (label maps ``0..K``): when a mask of any case holds a label above 1, or ``class_names`` are given,
every case is also scored per class (label ``k`` against label ``k``; :func:`labelwise.metrics.surface.scored_classes`),
``K`` being the number of names, else the highest label found in any mask; classes are named ``class_names`` or
``"1", "2", ...``. The whole-foreground scores stay where they were; the result adds::

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.pairing import check_reference, mask_files, match_references
from labelwise.data.patches import SOFT_THRESHOLD, read_probability_volume, soft_label_mask
from labelwise.data.volumes import case_id, read_volume, stores_spacing
from labelwise.errors import DataError
from labelwise.io import atomic_write, json_ready
from labelwise.metrics.aggregate import empty_mask_note, mean_std
from labelwise.metrics.surface import SCORE_NAMES, highest_label, mark_ignored, score_case, scored_classes

__all__ = [
    "SCORE_LABELS",
    "SCORE_NAMES",
    "evaluate_raters",
    "evaluate_segmentation",
    "format_table",
    "raters_csv",
    "summarize_cases",
    "summarize_classes",
    "to_csv",
    "to_json",
]

_LIST_AT_MOST = 10

SCORE_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "precision",
    "sensitivity": "sensitivity",
    "volumetric_similarity": "VS",
    "hd95": "HD95",
    "assd": "ASSD",
    "cldice": "clDice",
}
_DISTANCES = ("hd95", "assd")


def _listing(ids: list[str]) -> str:
    shown = ", ".join(ids[:_LIST_AT_MOST])
    return shown + (f" and {len(ids) - _LIST_AT_MOST} more" if len(ids) > _LIST_AT_MOST else "")


def _cases(folder: Path, what: str) -> dict[str, Path]:
    """Case id -> file of the mask files directly in ``folder``; two files of one id refused."""
    found: dict[str, Path] = {}
    for path in mask_files(folder, what):
        cid = case_id(path)
        if cid in found:
            raise DataError(f"{what}: two files for case {cid!r}: {found[cid]} and {path}")
        found[cid] = path
    return found


def _references(pred_files: dict[str, Path], folder: Path, what: str) -> tuple[dict[str, Path], list[str]]:
    """The reference of each case id of ``pred_files`` that ``folder`` holds one for
    (:func:`labelwise.data.pairing.match_references`), and the case ids of the folder's files left unpaired."""
    files = mask_files(folder, what)
    matched = match_references(list(pred_files.values()), folder, what)
    used = set(matched.values())
    return (
        {case_id(p): r for p, r in matched.items()},
        sorted(
            {
                case_id(f)
                for f in files
                if f not in used and f.resolve() not in {p.resolve() for p in pred_files.values()}
            }
        ),
    )


def _labels_note(path: Path, array: np.ndarray, what: str) -> str:
    labels = [int(v) for v in np.unique(array) if v > 0]
    return f"{what} {path.name} holds labels {_listing([str(v) for v in labels])}"


_NAN_SCORES = dict.fromkeys(SCORE_NAMES, math.nan)  # a class absent from both masks (metrics.surface.class_scores)


def evaluate_segmentation(
    pred: Path,
    truth: Path,
    *,
    allow_missing: bool = False,
    roi: Path | None = None,
    class_names: list[str] | None = None,
    ignore: Sequence[int] = (),
    soft_truth: bool = False,
) -> dict[str, Any]:
    """Score every predicted mask in ``pred`` (or ``pred/masks``) against the same case in ``truth``; with ``roi``, a
    folder of region-of-interest masks matched by case id (every scored case needs one), inside them only. Per class
    too when a mask holds labels above 1 or ``class_names`` (one per label ``1..K``) are given. Truth voxels of a
    value in ``ignore`` (``data.ignore``) carry no label and are scored nowhere. ``soft_truth``: the truth files are
    probability masks (as ``data.soft_labels`` reads them: a foreground probability, or one map per class), scored
    as the mask where the probability exceeds 0.5 (the likeliest class); the result says so in ``soft_truth``.

    Returns ``{"cases", "mean", "std", "count", "n", "spacing_unit", "notes", "skipped", "classes", "per_class"}``
    as described in the module docstring; cases are in case-id order."""
    names = [str(n) for n in class_names] if class_names else None
    if soft_truth and ignore:
        raise DataError("soft truth masks have no ignore values: a probability cannot also be a value without a label")
    pred, truth = Path(pred), Path(truth)
    if (pred / "masks").is_dir():
        pred = pred / "masks"
    pred_files = _cases(pred, "prediction")
    truth_files, truth_only = _references(pred_files, truth, "truth")
    pred_only = sorted(set(pred_files) - set(truth_files))
    notes: list[str] = []
    if (pred_only or truth_only) and not allow_missing:
        parts = []
        if pred_only:
            parts.append(f"{len(pred_only)} predicted case(s) without truth in {truth}: {_listing(pred_only)}")
        if truth_only:
            parts.append(f"{len(truth_only)} truth case(s) without prediction in {pred}: {_listing(truth_only)}")
        raise DataError(
            "; ".join(parts) + " (a reference is the file of the prediction's name without suffix, "
            "else of that name plus _mask, _seg, _label, _gt or _roi, else of its key as labelwise data "
            "manifest pairs files; allow missing cases to skip them)"
        )
    if pred_only:
        notes.append(f"skipped {len(pred_only)} predicted case(s) without truth: {_listing(pred_only)}")
    if truth_only:
        notes.append(f"skipped {len(truth_only)} truth case(s) without prediction: {_listing(truth_only)}")
    common = sorted(set(pred_files) & set(truth_files))
    if not common:
        raise DataError(f"no case id is found in both {pred} and {truth}")
    roi_files = _references(pred_files, Path(roi), "region-of-interest")[0] if roi is not None else {}
    no_roi = [cid for cid in common if roi is not None and cid not in roi_files]
    if no_roi:
        raise DataError(f"{len(no_roi)} case(s) without a region-of-interest mask in {roi}: {_listing(no_roi)}")

    cases: list[dict[str, Any]] = []
    per_case: list[list[dict[str, float]]] = []  # each case's class scores, labels 1.. its highest (or len(names))
    multi: list[str] = []  # which masks hold labels above 1
    units: set[str] = set()
    tops: list[int] = []  # each case's highest label
    for cid in common:
        pp, tp = pred_files[cid], truth_files[cid]
        pv = read_volume(pp, mask=True)
        if soft_truth:  # a probability mask: the mask where it exceeds 0.5, or the likeliest of its classes
            tv = read_probability_volume(tp, None, pv.array.shape, pp)
            tv.array = soft_label_mask(tv.array, pv.array.ndim)
        else:
            tv = read_volume(tp, mask=True, ignore=ignore)
            tv.array = mark_ignored(tv.array, ignore)  # IGNORE: outside every score, and not a label
        spacing = check_reference(pp, pv, tp, tv, "truth", "prediction")
        for path, vol, what in ((pp, pv, "prediction"), (tp, tv, "truth")):
            if highest_label(vol.array) > 1:
                multi.append(_labels_note(path, vol.array, what))
        units.add("mm" if stores_spacing(pp) or stores_spacing(tp) else "pixels")
        region = None
        if roi is not None:
            rv = read_volume(roi_files[cid], mask=True)
            check_reference(pp, pv, roi_files[cid], rv, "region-of-interest", "prediction")
            region = rv.array > 0
        top = highest_label(pv.array, tv.array)
        try:
            scored = score_case(pv.array, tv.array, spacing, region, scored_classes(names=names, highest=top))
        except DataError as err:
            raise DataError(
                f"case {cid} ({pp} vs {tp}): {err}" + (f" ({len(names)} class names given)" if names else "")
            ) from None
        tops.append(top)
        # labels 1 .. the case's highest (or the names); a case of one foreground: label 1 is its foreground
        per_case.append(list(scored["per_class"].values()) or [scored["foreground"]])
        cases.append(
            {
                "id": cid,
                "pred": str(pp),
                "truth": str(tp),
                "spacing": [float(s) for s in spacing],
                **({"roi": str(roi_files[cid])} if roi is not None else {}),
                **scored["foreground"],
            }
        )

    classes = scored_classes(names=names, highest=max(tops))
    if classes:
        for case, scores in zip(cases, per_case):  # labels above a case's highest: absent from both masks, nan
            case["per_class"] = {
                name: scores[k] if k < len(scores) else dict(_NAN_SCORES) for k, name in enumerate(classes)
            }
        if multi:
            notes.append(
                f"{len(multi)} mask(s) hold labels above 1 (first: {multi[0]}): scored per class "
                f"({', '.join(classes)}) and as one foreground (label > 0)"
            )
    unit = units.pop() if len(units) == 1 else "mm (NIfTI cases), pixels (other cases)"
    summary = summarize_cases(cases)
    note = empty_mask_note(summary, len(cases))
    return {
        "cases": cases,
        **summary,
        "n": len(cases),
        "spacing_unit": unit,
        "roi": str(roi) if roi else None,
        "notes": notes + ([note] if note else []),
        "skipped": {"pred_only": pred_only, "truth_only": truth_only},
        "classes": classes,
        "per_class": summarize_classes(cases, classes),
        **({"soft_truth": SOFT_TRUTH} if soft_truth else {}),
    }


SOFT_TRUTH = {
    "threshold": SOFT_THRESHOLD,
    "reference": "truth probability > threshold; with one probability map per class, the likeliest class",
}


def evaluate_raters(pred: Path, truths: Sequence[Path], **options: Any) -> dict[str, Any]:
    """Score ``pred`` against several raters' folders of reference masks, and the raters against each other: the
    model's agreement beside the raters' own. ``options``: as :func:`evaluate_segmentation`, for every pair. The
    model is scored on the cases it predicted, the raters between themselves on every case both folders hold.

    Returns ``{"raters": [one evaluate_segmentation result per folder, with "truth": its folder], "model": [the mean
    Dice against each rater], "between_raters": {"pairs": [{"raters": [j, k], "n", "dice"}], "dice": the mean of the
    pairs' mean Dice}}``, raters numbered from 1 in the order given."""
    if len(truths) < 2:
        raise DataError(f"evaluate_raters: expected at least two raters' folders, got {len(truths)}")
    if options.get("soft_truth"):
        raise DataError(
            "several raters' folders with soft truth: give each rater's own mask (or one soft reference, their mean)"
        )
    results = [{**evaluate_segmentation(pred, truth, **options), "truth": str(truth)} for truth in truths]
    pairs = []
    for j in range(len(truths)):
        for k in range(j + 1, len(truths)):
            scored = evaluate_segmentation(Path(truths[j]), Path(truths[k]), **options)
            pairs.append({"raters": [j + 1, k + 1], "n": scored["n"], "dice": scored["mean"]["dice"]})
    return {
        "raters": results,
        "model": [r["mean"]["dice"] for r in results],
        "between_raters": {"pairs": pairs, "dice": float(np.nanmean([p["dice"] for p in pairs]))},
    }


def raters_csv(result: dict[str, Any], path: Path | None = None) -> str:
    """:func:`evaluate_raters`'s result as CSV: :func:`to_csv`'s rows of each rater, after a first column ``rater``
    (its number)."""
    lines = []
    for k, rater in enumerate(result["raters"], start=1):
        rows = to_csv(rater).splitlines()
        lines += ([f"rater,{rows[0]}"] if k == 1 else []) + [f"{k},{row}" for row in rows[1:]]
    text = "\n".join(lines) + "\n"
    if path is not None:
        atomic_write(path, text)
    return text


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
    return {
        "mean": mean,
        "std": std,
        "count": count,
        "empty_prediction": int(np.count_nonzero(no_pred & ~no_ref)),
        "empty_reference": int(np.count_nonzero(no_ref & ~no_pred)),
        "both_empty": int(np.count_nonzero(no_pred & no_ref)),
    }


def summarize_classes(cases: list[dict[str, Any]], classes: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: summarize_cases(...)}`` of each class over the cases' ``per_class`` scores (a case lacking a class
    counts as absent from both masks: nan); ``{}`` without classes."""
    return {
        name: summarize_cases([case.get("per_class", {}).get(name, _NAN_SCORES) for case in cases]) for name in classes
    }


def to_json(result: dict[str, Any], path: Path | None = None) -> str:
    """The result as JSON text, nan written as ``null`` (strict JSON); also written to ``path`` when given
    (atomically: :func:`labelwise.io.atomic_write`)."""
    text = json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n"
    if path is not None:
        atomic_write(path, text)
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
            writer.writerow([case["id"], case["pred"], case["truth"], *(_number(scores[n]) for n in SCORE_NAMES), name])
        for row in ("mean", "std"):
            writer.writerow([row, "", "", *(_number(result["per_class"][name][row][n]) for n in SCORE_NAMES), name])
    text = out.getvalue()
    if path is not None:
        atomic_write(path, text)
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
