"""What a training run writes at its end for its test split, beside the metrics (the engine's one output hook,
:func:`write_run_outputs`, wired by ``labelwise.training``): per-case masks, probabilities, figures and
``segmentation.json`` for runs on image files (a manifest), the prediction arrays (``<split>.npz``, ids, samples for
the report) and the classification summary (``<split>_evaluation.json``) for runs on arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelwise.data.datasets import DataBundle
from labelwise.data.npz import save_npz
from labelwise.data.patches import SOFT_THRESHOLD, VolumeDataset, read_label, read_probability
from labelwise.data.volumes import from_grid, read_volume, stores_spacing
from labelwise.errors import DataError
from labelwise.evaluation.segmentation import SCORE_NAMES, summarize_cases, summarize_classes, to_json
from labelwise.inference.segmentation import write_case
from labelwise.io import atomic_write
from labelwise.metrics.fairness import calibration_counts, ece_from_counts
from labelwise.metrics.surface import highest_label, mark_ignored, score_case, scored_classes

__all__ = ["N_SAMPLES", "save_run_predictions", "save_split_arrays", "write_run_outputs"]

N_SAMPLES = 8  # samples kept for the report


def write_run_outputs(
    folder: Path, split: str, data: DataBundle, predictions: dict[str, Any], seed: int = 0
) -> dict[str, float]:
    """The engine's output hook, for both tasks: what a run writes for ``split`` under its predictions ``folder``
    from :meth:`Method.evaluate`'s ``predictions``. Cases of their own sizes (a manifest of image files,
    :class:`~labelwise.data.patches.VolumeDataset`): :func:`save_run_predictions` into ``folder/split``; arrays
    (classification, or segmentation of an array dataset): :func:`save_split_arrays`. Returns metrics to log
    beside the Method's (the classification summary's headline numbers; ``seed`` seeds its bootstrap)."""
    dataset = data.split(split)
    if isinstance(dataset, VolumeDataset):
        save_run_predictions(Path(folder) / split, dataset, predictions)
        return {}
    return save_split_arrays(Path(folder), split, data, predictions, seed)


def save_split_arrays(
    folder: Path, split: str, data: DataBundle, predictions: dict[str, Any], seed: int = 0
) -> dict[str, float]:
    """``<split>.npz`` (the prediction arrays, the dataset rows as ``index`` and each group attribute as
    ``attribute_<name>``), ``<split>_ids.txt`` (when the data has ids), ``samples.npz`` (the first
    :data:`N_SAMPLES` images with their targets and predictions, for the report) and, for classification,
    ``<split>_evaluation.json`` (AUC with bootstrap CI, calibration, per-group AUC and ES-AUC for every attribute;
    :func:`labelwise.metrics.fairness.summarize`), whose headline numbers are returned as flat metrics."""
    dataset = data.split(split)
    arrays = {k: v.cpu().numpy() for k, v in predictions.items()}
    rows = dataset.indices.numpy()
    groups = {name: values[rows] for name, values in data.attributes.items()}
    metrics: dict[str, float] = {}
    if data.task == "classification" and "probability" in arrays:
        from labelwise.metrics.fairness import summarize

        summary = summarize(
            arrays["probability"],
            arrays["target"],
            data.multilabel,
            data.class_names,
            groups,
            resamples=1000,
            seed=seed,
        )
        atomic_write(folder / f"{split}_evaluation.json", json.dumps(summary, indent=2))
        metrics = _summary_metrics(summary)
    attributes = {f"attribute_{name}": values.astype(str) for name, values in groups.items()}
    save_npz(folder / f"{split}.npz", {**arrays, "index": rows, **attributes}, compress=True)
    if data.ids is not None:
        atomic_write(folder / f"{split}_ids.txt", "".join(f"{i}\n" for i in data.ids[rows]))
    samples = {
        "image": dataset.image[:N_SAMPLES].numpy(),
        "target": arrays["target"][:N_SAMPLES],
        "prediction": arrays["prediction"][:N_SAMPLES],
        "task": np.array(data.task),
        "class_names": np.array(data.class_names, dtype=str),
    }
    save_npz(folder / "samples.npz", samples, compress=True)
    return metrics


def _summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of an evaluation summary as flat metrics (``es_auc/<attribute>``)."""
    metrics = {k: summary[k] for k in ("auc", "sensitivity_at_90_specificity", "ece") if summary.get(k) is not None}
    metrics.update({f"es_auc/{name}": value for name, value in summary["es_auc"].items() if value is not None})
    return {k: float(v) for k, v in metrics.items()}


def reliability(counts: np.ndarray) -> dict[str, Any]:
    """The expected calibration error of the foreground probability over every voxel scored (inside the rois,
    voxels without a label left out; 15 equal-width bins) and its reliability diagram: per bin the voxels, their mean
    probability and their foreground rate (None for an empty bin)."""
    voxels = counts[2]
    share = [None if n == 0 else float(v / n) for v, n in zip(counts[0], voxels)]
    rate = [None if n == 0 else float(y / n) for y, n in zip(counts[1], voxels)]
    return {
        "ece": ece_from_counts(counts),
        "voxels": voxels.astype(int).tolist(),
        "mean_probability": share,
        "foreground_rate": rate,
    }


def save_run_predictions(
    folder: str | Path, volumes: VolumeDataset, predictions: dict[str, list[torch.Tensor]]
) -> Path:
    """What a training run on a manifest writes for one split (``volumes``, a
    :class:`~labelwise.data.patches.VolumeDataset`), from :meth:`Method.evaluate`'s per-case predictions:

    ``masks/<id>`` and ``probabilities/<id>`` (NIfTI in 3D with the image's spacing and affine; PNG and ``.npy`` in
    2D), ``figures/<id>_mip.png`` (the prediction over the image's projection) and ``figures/<id>_diff_<ref>.png``
    for each reference (``label``: the mask the run was scored on; ``truth``: the manifest's clean mask, when it has
    one), and ``segmentation.json``: every score of :func:`labelwise.metrics.surface.segmentation_scores` per case
    and their mean and std, per reference; cases with a region of interest (the manifest's ``roi``) scored inside
    it (``roi``: how many), and per reference ``calibration`` (:func:`reliability`: the foreground probability's
    expected calibration error and reliability diagram over every voxel scored). Runs with more than 2 classes are
    also scored per class (:func:`labelwise.metrics.surface.score_case`, the one per-case scorer): ``classes`` (the
    foreground class names, :func:`labelwise.metrics.surface.scored_classes`), per case ``per_class`` and per
    reference ``per_class`` (each class's mean, std, count; see
    :func:`labelwise.evaluation.segmentation.summarize_classes`). The classes and their names are the run's
    ``inference.json`` ``output`` (written when training starts, two folders above ``folder``, the run directory:
    the dataset holds no class names and the engine's hook passes none); without that file, the highest label of the
    predictions and labels.

    Cases the dataset reoriented or resampled (its ``grids``, from the case cache: ``data.reorient``,
    ``data.spacing``) are written and scored on their files' own grid: the probability resampled back linearly, the
    mask by nearest neighbour (the evaluation's mask is not thresholded again), both with the axes put back in the
    file's order (:func:`labelwise.data.volumes.from_grid`), with the file's spacing and affine; the label and
    region of interest are read from their files again. Voxels without a label (``data.ignore``, an ignore column)
    are scored nowhere (:func:`labelwise.metrics.surface.score_case`); soft labels (``data.soft_labels``) are scored
    where their probability exceeds 0.5 (said in ``soft_labels``). Cases with several raters (``data.raters``: their
    label is the raters' fusion) add ``raters``: the model's mean Dice against each rater, each rater's against the
    fused label, and the raters' between themselves. Returns the path of ``segmentation.json``."""
    folder = Path(folder)
    ignore: list[int] = []  # data.ignore: the label files' values without a label (the dataset's are IGNORE)
    soft = False  # data.soft_labels: the label files are foreground probabilities
    try:
        spec = json.loads((folder.parent.parent / "inference.json").read_text(encoding="utf-8"))
        ignore = [int(v) for v in spec.get("preprocessing", {}).get("ignore", [])]
        soft = bool(spec.get("preprocessing", {}).get("soft_labels", False))
        output = spec["output"]
        classes = scored_classes(int(output["num_classes"]), [str(n) for n in output["class_names"][1:]])
    except (OSError, ValueError, KeyError, TypeError):
        masks = [*predictions["prediction"], *(t for t, known in zip(volumes.target, volumes.labelled) if known)]
        classes = scored_classes(highest=highest_label(*masks))
    scores: dict[str, list[dict[str, Any]]] = {"label": [], "truth": []}
    calibration: dict[str, np.ndarray] = {}  # per reference: the foreground probability's reliability counts
    figures = []
    rated: list[dict[str, Any]] = []  # per case with several raters: their Dice scores (_rater_scores)
    grids = getattr(volumes, "grids", None) or [None] * len(volumes.cases)
    for i, case in enumerate(volumes.cases):
        spacing, affine = volumes.spacings[i], volumes.affines[i]
        mask = predictions["prediction"][i].cpu().numpy()  # background outside the case's roi (Method.evaluate)
        probability = predictions["probability"][i].cpu().numpy().astype(np.float32)
        image = volumes.image[i].float().cpu().numpy()
        grid = grids[i]
        if grid is not None and grid.changed:  # back on the file's own grid
            spacing, affine = grid.spacing, grid.affine
            mask = from_grid(mask, grid, mask=True)
            probability = from_grid(probability, grid).astype(np.float32)
            image = from_grid(image, grid)
            roi = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else None
            labelled = bool(volumes.labelled[i])  # Case.labelled: case.label is not None
            on_file = (None, mask.shape, case.image)  # the file's own grid
            probability_label = (
                read_probability(case.label, *on_file) if soft and labelled and case.label is not None else None
            )
            label = read_label(case, ignore, probability_label, on_file) if labelled else None
        else:
            case_roi = volumes.rois[i]
            roi = case_roi.cpu().numpy() if case_roi is not None else None
            label = volumes.target[i].cpu().numpy() if bool(volumes.labelled[i]) else None
        candidates = {
            "label": label,
            "truth": read_volume(case.truth, mask=True, ignore=ignore).array if case.truth is not None else None,
        }
        references = {name: mark_ignored(ref, ignore) for name, ref in candidates.items() if ref is not None}
        for name, reference in references.items():
            if reference.shape != mask.shape:
                raise DataError(
                    f"{case.id}: the {name} mask has shape {reference.shape}, the image {case.image} {mask.shape}"
                )
            try:
                scored = score_case(mask, reference, spacing, roi, classes)
            except DataError as err:
                raise DataError(f"{case.id}: scoring against the {name} mask: {err}") from None
            scores[name].append(
                {"id": case.id, **scored["foreground"], **({"per_class": scored["per_class"]} if classes else {})}
            )
            region = reference >= 0 if roi is None else (reference >= 0) & (roi > 0)  # IGNORE: no label
            counts = calibration_counts(probability[region], reference[region] > 0)
            calibration[name] = calibration[name] + counts if name in calibration else counts
        if len(getattr(case, "raters", ())) > 1 and "label" in references:  # data.raters: the label is their fusion
            rated.append(_rater_scores(mask, references["label"], case.raters, spacing, roi))
        nifti = mask.ndim == 3 or stores_spacing(case.image)
        files = write_case(folder, case.id, image, probability, mask, spacing, affine, nifti, references)
        entry = {"id": case.id, **{key: value for key, value in files.items() if key.startswith(("mip", "diff"))}}
        figures.append(entry)
    result = {
        "scores": list(SCORE_NAMES),
        "figures": figures,
        "roi": sum(r is not None for r in volumes.rois),  # cases scored inside their region of interest
        "classes": classes,  # [] for one foreground class
        "references": {
            name: {
                "cases": cases,
                **summarize_cases(cases),
                **({"per_class": summarize_classes(cases, classes)} if classes else {}),
                "calibration": reliability(calibration[name]),
            }
            for name, cases in scores.items()
            if cases
        },
    }
    if soft:  # the references are the soft labels' masks
        result["soft_labels"] = {
            "threshold": SOFT_THRESHOLD,
            "reference": "the likeliest class of the label's class probabilities"
            if classes
            else "label probability > threshold",
        }
    if rated:
        result["raters"] = {
            "cases": len(rated),
            **{key: np.nanmean([r[key] for r in rated], axis=0).tolist() for key in ("model", "rater_vs_label")},
            "between_raters": float(np.nanmean([r["between_raters"] for r in rated])),
        }
    path = folder / "segmentation.json"
    atomic_write(path, to_json(result))
    return path


def _rater_scores(
    mask: np.ndarray, label: np.ndarray, raters: Any, spacing: Any, roi: np.ndarray | None
) -> dict[str, Any]:
    """One case's Dice (inside ``roi``, by the one per-case scorer) of the predicted ``mask`` against each rater's
    mask (``model``), of each rater against the fused ``label`` (``rater_vs_label``), and between the raters (the
    mean over pairs): the model's agreement beside the raters' own."""

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return float(score_case(a, b, spacing, roi, distances=False)["foreground"]["dice"])

    masks = [read_volume(path, mask=True).array for path in raters]
    pairs = [dice(masks[j], masks[k]) for j in range(len(masks)) for k in range(j + 1, len(masks))]
    return {
        "model": [dice(mask, m) for m in masks],
        "rater_vs_label": [dice(m, label) for m in masks],
        "between_raters": float(np.nanmean(pairs)),
    }
