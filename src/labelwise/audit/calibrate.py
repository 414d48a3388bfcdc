"""Cross-fitted calibration of a binary segmentation run's probabilities (``labelwise calibrate RUN --folds K``).

A map fitted on a run's few validation cases follows those cases (DRIVE keeps 2: an isotonic map fitted there raises
the test ECE). Cross-fitting gives out-of-sample probabilities for every training case: the training cases are
dealt into K folds and K runs of the run's config each train without one fold (:mod:`labelwise.audit.folds`, the
runs an audit with ``--folds`` trains; an audit's folder is reused), then predict the fold they did not see. The
isotonic map of the foreground probability (:func:`labelwise.metrics.segmentation.fit_isotonic`) is fitted on those
voxels and the run's own validation voxels, inside each roi, voxels without a label left out, and written into the
run: ``inference.json``'s ``isotonic`` (predict, the report and export apply or state it), the summary's
``calibration.crossfit``, and the run's test outputs written again through it (masks and Dice unchanged: the mask is
decided before the map). Written under ``out``::

    calibration.json          the map, what it was fitted on, and the ECE before and after (fitted voxels, test)
    probabilities/<id>.npy    the out-of-sample class probabilities (float16), as an audit writes them
    folds/                    the cross-fitted runs
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from labelwise.audit.folds import fold_runs, run_data, training_ids, write_manifest_rows
from labelwise.config import load_config
from labelwise.data.manifest import Case, read_manifest
from labelwise.data.patches import read_label, read_probability
from labelwise.data.volumes import read_volume
from labelwise.errors import DataError, LabelwiseError
from labelwise.inference.run import RunModel, load_run, reporter
from labelwise.io import atomic_write
from labelwise.metrics.fairness import calibration_counts, ece_from_counts
from labelwise.metrics.segmentation import TEMPERATURE_VOXELS, fit_isotonic
from labelwise.models.outputs import segment

__all__ = ["calibrate_run"]


def calibrate_run(
    run_dir: str | Path,
    folds: int,
    out: str | Path,
    manifest: str | Path | None = None,
    progress: bool | Callable[[str], None] = True,
) -> dict[str, Any]:
    """Fit ``run_dir``'s isotonic map on cross-fitted probabilities (``folds`` >= 2 runs in ``out/folds``, reused
    or resumed by a later call, or by an audit of the same ``out``) and write it into the run; ``manifest``: the
    run's training manifest where the run cannot find it (moved data). Returns what ``out/calibration.json``
    holds."""
    from labelwise.audit.segmentation import save_probabilities

    report = reporter(progress)
    run_dir, out = Path(run_dir), Path(out)
    if folds < 2:
        raise LabelwiseError(f"--folds {folds}: cross-fitting needs at least 2 folds")
    run = load_run(run_dir)
    if run.task != "segmentation" or len(run.class_names) != 2:
        raise LabelwiseError(
            f"{run_dir}: calibrate maps the foreground probability of a binary segmentation run; this run is "
            f"{run.task} with {len(run.class_names)} classes"
        )
    data_file = Path(manifest) if manifest is not None else run_data(run_dir)
    cases = read_manifest(data_file)
    trained = training_ids(run_dir) or {c.id for c in cases if c.split == "train"}
    train = [c for c in cases if c.id in trained and c.label is not None]
    fitted = train + [c for c in cases if c.split == "val" and c.id not in trained and c.label is not None]
    tested = [c for c in cases if c.split == "test" and c.id not in trained and c.label is not None]
    if not train:
        raise DataError(f"{run_dir}: none of its training cases is in the manifest; give --input MANIFEST")
    source: dict[str, Path] = {c.id: run_dir for c in fitted}
    source.update(
        fold_runs(
            run_dir,
            lambda home, held: write_manifest_rows(home / "manifest.csv", [c for c in cases if c.id not in held]),
            [c.id for c in train],
            folds,
            out,
            report,
        )
    )
    started = time.perf_counter()
    save_probabilities(run, fitted, source, out / "probabilities", report)
    per_case = max(TEMPERATURE_VOXELS // len(fitted), 10_000)  # the voxels kept per case: bounded memory
    generator = np.random.default_rng(0)
    probabilities, labels = [], []
    counts = np.zeros((3, 15))
    for case in fitted:
        saved = np.load(out / "probabilities" / f"{case.id}.npy").astype(np.float64)
        p, y = _labelled_voxels(run, case, 1 - saved[0])
        counts += calibration_counts(p, y)
        if len(p) > per_case:
            keep = generator.choice(len(p), per_case, replace=False)
            p, y = p[keep], y[keep]
        probabilities.append(p)
        labels.append(y)
    p_all, y_all = np.concatenate(probabilities), np.concatenate(labels)
    xs, ys = fit_isotonic(torch.from_numpy(p_all), torch.from_numpy(y_all))
    after = calibration_counts(np.interp(p_all, xs, ys), y_all)
    record: dict[str, Any] = {
        "run": str(run_dir),
        "folds": folds,
        "fitted_on": {"training cases (out of fold)": len(train), "validation cases": len(fitted) - len(train)},
        "knots": len(xs),
        "ece_before": ece_from_counts(counts),
        "ece_after_in_sample": ece_from_counts(after),
        "seconds": round(time.perf_counter() - started, 2),
    }
    _write_map(run_dir, xs, ys, record)
    record.update(_rescore_test(run_dir, data_file, tested, report))
    atomic_write(out / "calibration.json", json.dumps({**record, "isotonic": {"x": xs, "y": ys}}, indent=1) + "\n")
    test = (
        f"; test ECE {record['test_ece_before']:.4f} -> {record['test_ece_after']:.4f}"
        if "test_ece_after" in record
        else ""
    )
    report(
        f"calibrated {run_dir}: an isotonic map of {len(xs)} knots fitted on {len(fitted)} case(s) "
        f"(ECE there {record['ece_before']:.4f} before){test}; {out / 'calibration.json'}"
    )
    return record


def _labelled_voxels(run: RunModel, case: Case, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The foreground probability and label (bool) of ``case``'s labelled voxels inside its roi, on its own grid."""
    soft = bool(run.spec.get("preprocessing", {}).get("soft_labels", False))
    assert case.label is not None
    grid = (None, foreground.shape, case.image)
    probability = read_probability(case.label, *grid) if soft else None
    label = read_label(case, run.ignore, probability, grid)
    assert label is not None
    keep = label >= 0
    if case.roi is not None:
        keep &= read_volume(case.roi, mask=True).array > 0
    return foreground[keep], label[keep] > 0


def _write_map(run_dir: Path, xs: list[float], ys: list[float], record: dict[str, Any]) -> None:
    """The map into the run: ``inference.json``'s ``isotonic`` and the summary's ``calibration.crossfit``."""
    from labelwise.engine.rundir import RunDir

    run = RunDir(run_dir)
    spec = json.loads(run.inference.read_text(encoding="utf-8"))
    spec["inference"]["isotonic"] = {"x": xs, "y": ys}
    atomic_write(run.inference, json.dumps(spec, indent=2) + "\n")
    calibration = run.summary().get("calibration")
    calibration = calibration if isinstance(calibration, dict) else {}
    run.update_summary(calibration={**calibration, "crossfit": record})


def _rescore_test(run_dir: Path, data_file: Path, tested: list[Case], report: Callable[[str], None]) -> dict[str, Any]:
    """The run's test outputs written again with the map (its ``predictions/test``: probabilities, reliability; the
    masks are the same), and the test voxels' ECE before and after. Nothing when the run has no labelled test
    cases or its data cannot be read."""
    from labelwise.data.datasets import load_data
    from labelwise.data.patches import VolumeDataset
    from labelwise.inference.run_outputs import save_run_predictions

    if not tested:
        return {}
    config = load_config(run_dir / "config.yaml", [f"data.manifest={data_file}"])
    test = load_data(config.data, seed=config.seed).split("test")
    if not isinstance(test, VolumeDataset) or len(test) == 0:
        return {}
    run = load_run(run_dir)  # with the map
    before, after = np.zeros((3, 15)), np.zeros((3, 15))
    outputs: Any = [run.logits(test.image[i][None], spacing=test.spacings[i])[0] for i in range(len(test))]
    _, predictions = run.method.evaluate(outputs, cast(Any, test.target), test.rois)
    for i, logits in enumerate(outputs):
        target, region = test.target[i].numpy(), test.rois[i]
        keep = target >= 0 if region is None else (target >= 0) & region.numpy().astype(bool)
        probability = predictions["probability"][i].numpy()
        unmapped = segment(logits[None])[0][0].numpy()  # the foreground probability the map was given
        before += calibration_counts(unmapped[keep], target[keep] > 0)
        after += calibration_counts(probability[keep], target[keep] > 0)
    save_run_predictions(run_dir / "predictions" / "test", test, cast(Any, predictions))
    report(f"rewrote {run_dir / 'predictions' / 'test'} through the map ({len(test)} case(s), the same masks)")
    return {"test_ece_before": ece_from_counts(before), "test_ece_after": ece_from_counts(after)}
