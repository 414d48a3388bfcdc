"""The audit of a segmentation run's masks: suspect maps, case scores, a page, and corrected masks.

Written under ``out``::

    cases.csv                 one row per audited case, worst first: quality (soft Dice of the mask with the
                              model's probabilities inside the roi; 1 where they agree), missed / extra / swapped
                              suspect pixels, where its probabilities came from (the run, or fold k)
    suspects/<id>.<suffix>    the suspect map in the mask's format and geometry: 0 believed, 1 missed structure
                              (labelled background, likelier foreground), 2 extra (labelled foreground,
                              likelier background), 3 swapped between foreground classes (likelier under the
                              posterior of :func:`~labelwise.metrics.label_quality.mask_suspects`)
    figures/<id>.png          image | mask | suspects over the image, for the worst cases
    report.html               the worst cases, their scores and figures
    audit.json                the threshold each run (or fold run) decides its masks by, the probabilities'
                              recentring (:func:`~labelwise.metrics.label_quality.recentred`, before anything is
                              weighed); the confident-learning thresholds, the estimated noise (``noise[i][j]``:
                              the share of class j's pixels labelled i), the counts and where each case's
                              probabilities came from
    probabilities/<id>.npy    the out-of-sample class probabilities as the run gave them (float16; reused by a
                              resumed audit)
    folds/                    with --folds: the cross-fitted runs (see :mod:`labelwise.audit.folds`)

With ``fix``, ``fix/manifest.csv`` is the input manifest with every suspect flipped to its likeliest class in
``fix/labels/<id>.<suffix>`` (the originals are never written) and columns saying what changed per case."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelwise.audit.folds import fold_runs, run_data, source_name, split_seen, training_ids, write_manifest_rows
from labelwise.data.manifest import Case, read_manifest
from labelwise.data.volumes import Volume, from_grid, read_volume, suffix_of, write_volume
from labelwise.errors import DataError, LabelwiseError
from labelwise.inference.figures import mask_overlay_rgb, write_png
from labelwise.inference.run import RunModel, load_run
from labelwise.io import atomic_open, atomic_write
from labelwise.metrics.label_quality import (
    SWAPPED,
    MaskAudit,
    mask_noise,
    mask_suspects,
    mask_thresholds,
    recentred,
)
from labelwise.metrics.surface import split_ignored
from labelwise.report.audit import build_audit_page

__all__ = ["audit_masks", "case_probabilities", "decision_threshold", "run_cases", "save_probabilities"]


def run_cases(run_dir: Path) -> list[Case]:
    """The cases of the manifest ``run_dir`` trained on (:func:`~labelwise.audit.folds.run_data`)."""
    path = run_data(run_dir)
    try:
        return read_manifest(path)
    except DataError as err:
        raise LabelwiseError(
            f"{run_dir}: its training manifest cannot be read, so its training cases are unknown "
            f"({str(err).splitlines()[0]})"
        ) from None


def case_probabilities(run: RunModel, case: Case) -> tuple[np.ndarray, Volume]:
    """``(K, *spatial)`` class probabilities of ``case`` on its own grid, and the raw image."""
    raw = run.read_raw(case.image)
    image = run.preprocess(raw)
    logits = run.logits(torch.from_numpy(image.array)[None], spacing=image.spacing)
    if image.grid is not None and image.grid.changed:
        logits = torch.from_numpy(from_grid(logits.numpy(), image.grid))
    probs = run.probabilities(logits)[0].numpy()
    if probs.shape[0] == 1:  # one sigmoid channel: the foreground
        probs = np.concatenate([1 - probs, probs])
    return probs, raw


def save_probabilities(
    run: RunModel, cases: Sequence[Case], source: dict[str, Path], folder: Path, report: Callable[[str], None]
) -> None:
    """``folder/<id>.npy``: each case's out-of-sample class probabilities (:func:`case_probabilities`, float16) from
    the run directory ``source`` names for it (``run`` itself, or a fold run), computed where not saved yet (a
    resumed audit or calibration reuses them)."""
    models: dict[Path, RunModel] = {run.run_dir: run}
    for number, case in enumerate(cases, 1):
        saved = folder / f"{case.id}.npy"
        if saved.is_file():
            continue
        where = source[case.id]
        model = models.get(where) or models.setdefault(where, load_run(where))
        probs, _ = case_probabilities(model, case)
        with atomic_open(saved) as handle:
            np.save(handle, probs.astype(np.float16))
        report(
            f"[{number}/{len(cases)}] {case.id}: probabilities from "
            f"{'the run' if where == run.run_dir else where.parent.name}"
        )


def audit_masks(
    run: RunModel,
    out: Path,
    manifest: Path | None,
    folds: int | None,
    fix: Path | None,
    splits: Sequence[str] | None,
    worst: int,
    report: Callable[[str], None],
) -> dict[str, Any]:
    """Audit the masks of ``manifest`` (default: the run's own) with segmentation ``run``; see the module docstring
    and :func:`labelwise.audit.audit_run`."""
    run_dir = run.run_dir
    recorded = training_ids(run_dir)
    # the run's own manifest: the cases audited by default; with an input, only to know what trained the run (by
    # image file as well as id), which the ids cases.json recorded tell without it
    try:
        own = run_cases(run_dir)
    except LabelwiseError:
        if manifest is None or recorded is None:
            raise
        own = []
    cases = read_manifest(manifest) if manifest is not None else own
    labelled = [c for c in cases if c.label is not None and (not splits or c.split in splits)]
    if not labelled:
        raise DataError(
            f"{manifest or run_dir}: no labelled cases to audit{' in split ' + ', '.join(splits) if splits else ''}"
        )
    images = {str(Path(c.image).resolve()) for c in own if c.split == "train"}
    trained = (recorded if recorded is not None else {c.id for c in own if c.split == "train"}) | {
        c.id for c in labelled if str(Path(c.image).resolve()) in images
    }
    kept = split_seen([c.id for c in labelled], trained, folds, manifest, run_dir, report, "case")
    labelled = [c for c in labelled if c.id in kept]
    source: dict[str, Path] = {c.id: run_dir for c in labelled}
    if folds is not None:
        train_ids = [c.id for c in labelled if c.id in trained or c.split == "train"]
        source.update(
            fold_runs(
                run_dir,
                lambda home, held: write_manifest_rows(home / "manifest.csv", [c for c in cases if c.id not in held]),
                train_ids,
                folds,
                out,
                report,
            )
        )

    probabilities = out / "probabilities"
    started = time.perf_counter()
    save_probabilities(run, labelled, source, probabilities, report)
    decisions = {
        where: decision_threshold(run if where == run_dir else load_run(where)) for where in set(source.values())
    }

    def items():
        for case in labelled:
            label = read_volume(case.label, mask=True, ignore=run.ignore)
            probs = recentred(np.load(probabilities / f"{case.id}.npy").astype(np.float32), decisions[source[case.id]])
            if probs.shape[1:] != label.array.shape:
                raise DataError(
                    f"{case.label}: mask of shape {label.array.shape}, but its image {case.image} has {probs.shape[1:]}"
                )
            roi = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else None
            original = label.array
            array, unlabelled = split_ignored(original, run.ignore)  # data.ignore: audited nowhere, never changed
            if unlabelled is not None:
                roi = ~unlabelled if roi is None else roi & ~unlabelled
                label = Volume(array, label.spacing, label.affine)
            yield case, probs, label, roi, original

    thresholds = mask_thresholds((p, lab.array, roi) for _, p, lab, roi, _ in items())
    noise = mask_noise(((p, lab.array, roi) for _, p, lab, roi, _ in items()), thresholds)
    rows, audits = [], {}
    for case, probs, label, roi, original in items():
        result = mask_suspects(probs, label.array, thresholds, roi, noise)
        suffix = suffix_of(case.label)
        write_volume(out / "suspects" / f"{case.id}{suffix}", result.suspects, label.spacing, label.affine)
        suspicion = result.suspicion.astype(np.float32)
        write_volume(out / "suspicion" / f"{case.id}{suffix}", suspicion, label.spacing, label.affine)
        rows.append(
            {
                "id": case.id,
                "split": case.split,
                "quality": result.quality,
                "missed": result.missed,
                "extra": result.extra,
                "swapped": int((result.suspects == SWAPPED).sum()),
                "label_voxels": int((label.array > 0).sum()),
                "probabilities": source_name(source[case.id], run_dir),
            }
        )
        audits[case.id] = result
        if fix is not None:
            _write_fixed(Path(fix), case, label, result, original)
    rows.sort(key=lambda r: (np.nan_to_num(r["quality"], nan=2.0), r["id"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    _write_csv(out / "cases.csv", rows)
    shown = rows[:worst]
    for row in shown:
        case = next(c for c in labelled if c.id == row["id"])
        _figure(out / "figures" / f"{case.id}.png", case, audits[case.id], row)
    summary = {
        "run": str(run_dir),
        "input": str(manifest) if manifest is not None else None,
        "folds": folds,
        "decision_thresholds": {source_name(where, run_dir): t for where, t in sorted(decisions.items())},
        "thresholds": [float(t) for t in thresholds],
        "noise": [[float(v) for v in row] for row in noise],
        "cases": len(rows),
        "missed": sum(r["missed"] for r in rows),
        "extra": sum(r["extra"] for r in rows),
        "swapped": sum(r["swapped"] for r in rows),
        "seconds": round(time.perf_counter() - started, 2),
        "fix": str(fix) if fix is not None else None,
    }
    if fix is not None:
        _write_fixed_manifest(Path(fix), cases, audits)
    atomic_write(out / "audit.json", json.dumps(summary, indent=1) + "\n")
    build_audit_page(out / "report.html", summary, rows, {r["id"]: out / "figures" / f"{r['id']}.png" for r in shown})
    report(
        f"audited {len(rows)} case(s): {summary['missed']} missed and {summary['extra']} extra suspect "
        f"pixels; worst {rows[0]['id']} (quality {rows[0]['quality']:.3f}); {out / 'report.html'}"
    )
    return summary


def decision_threshold(model: RunModel) -> float | None:
    """The threshold on the foreground probability by which ``model`` decides its masks (its calibrated or configured
    one, two classes), None where it takes the argmax or decides per case (Otsu): the probabilities are recentred on
    it (:func:`~labelwise.metrics.label_quality.recentred`) before they are weighed against the labels."""
    used = model.method.segment_threshold(int(model.spec["network"]["out_channels"]))
    return float(used) if isinstance(used, int | float) else None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["rank", "id", "split", "quality", "missed", "extra", "swapped", "label_voxels", "probabilities"]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(f"{row[c]:.6f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    atomic_write(path, "\n".join(lines) + "\n")


def _figure(path: Path, case: Case, audit: MaskAudit, row: dict[str, Any]) -> None:
    """image | mask | suspects (missed, extra, swapped in the overlay's colours 1-3) | suspicion (0 to 1, a heat
    map); a 3D case shows the slice along the last axis with the most suspects."""
    assert case.label is not None  # only labelled cases are audited
    image = read_volume(case.image).array.mean(axis=0)
    label = read_volume(case.label, mask=True).array
    suspects, suspicion = audit.suspects, audit.suspicion
    if suspects.ndim == 3:
        z = int((suspects > 0).sum(axis=(0, 1)).argmax())
        image, label, suspects, suspicion = image[..., z], label[..., z], suspects[..., z], suspicion[..., z]
    panels = [
        mask_overlay_rgb(image, np.zeros_like(label)),
        mask_overlay_rgb(image, (label > 0).astype(np.int64)),
        mask_overlay_rgb(image, suspects.astype(np.int64)),
        _heat(mask_overlay_rgb(image, np.zeros_like(label)), suspicion),
    ]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    rgb = np.concatenate([part for panel in panels for part in (gap, panel)][1:], axis=1)
    write_png(
        path,
        rgb,
        f"{case.id}: quality {row['quality']:.3f}, {row['missed']} missed, {row['extra']} extra",
    )


def _heat(grey: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] over the uint8 RGB ``grey`` in matplotlib's plasma colours, each pixel as opaque as its
    value (a label nobody suspects leaves the image as it is)."""
    from matplotlib import colormaps

    values = np.clip(values, 0.0, 1.0)[..., None]
    heat = colormaps["plasma"](values[..., 0])[..., :3] * 255
    return np.round(grey * (1 - values) + heat * values).astype(np.uint8)


def _write_fixed(fix: Path, case: Case, label: Volume, audit: MaskAudit, original: np.ndarray) -> None:
    """The corrected mask, its voxels without a label (``data.ignore``, background in ``label``) as ``original``."""
    assert case.label is not None  # only labelled cases are audited
    if not (audit.suspects > 0).any():
        return
    corrected = np.where(label.array != original, original, audit.corrected)
    write_volume(fix / "labels" / f"{case.id}{suffix_of(case.label)}", corrected, label.spacing, label.affine)


def _write_fixed_manifest(fix: Path, cases: list[Case], audits: dict[str, MaskAudit]) -> None:
    labels, extra = {}, {}
    for case in cases:
        result = audits.get(case.id)
        if result is None:
            extra[case.id] = {"audit": "not audited"}
            continue
        assert case.label is not None  # only labelled cases are audited
        if (result.suspects > 0).any():
            labels[case.id] = fix / "labels" / f"{case.id}{suffix_of(case.label)}"
        extra[case.id] = {
            "audit": f"{result.missed} missed added, {result.extra} extra removed, "
            f"{int((result.suspects == SWAPPED).sum())} swapped",
            "audit_original_label": str(Path(case.label).resolve()) if case.label else "",
        }
    write_manifest_rows(fix / "manifest.csv", cases, extra, labels)
