"""``labelwise predict``: a segmentation run's network over new images and volumes, by overlapping windows.

Each input is cut into windows of ``window`` that overlap by ``overlap`` (0.5: a stride of half a window, as DS6
does with 64^3 patches at stride 32); the windows' logits are blended with a Gaussian weight (the centre of a window
counts more than its edges) by MONAI's :func:`monai.inferers.sliding_window_inference`, which also pads inputs
smaller than a window. Windows are rounded up to a size the network accepts (UNetMSS: multiples of 16; a MONAI
UNet with n levels: of 2^(n-1)).

Written under ``out`` for an input ``<id>.<suffix>`` (``<id>`` as :func:`labelwise.data.volumes.case_id` gives it)::

    probabilities/<id>.nii.gz   foreground probability, float32 (3D and NIfTI inputs; input's spacing and affine)
    probabilities/<id>.png      ... 2D pictures and arrays: 8-bit picture, plus <id>.npy (float32)
    masks/<id>.nii.gz           predicted labels, uint8 (2D pictures and arrays: masks/<id>.png, 0/255 if binary)
    figures/<id>_mip.png        3D: maximum-intensity projection of the image with the mask's projection in colour;
                                2D: the image with the mask filled and outlined
    figures/<id>_diff.png       with a reference mask: true positives white, false negatives red, false positives
                                blue, compared pixel by pixel on the two masks' projections (:func:`diff_rgb`)
    predictions.json            {"run", "checkpoint", "cases": [one entry per input], "mean_dice"}; with a
                                reference, an entry's "dice" is the foreground Dice (None where both are empty)

The masks folder is what ``labelwise evaluate segmentation --pred OUT`` reads.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelwise.data.npz import save_npz
from labelwise.data.pairing import match_by_key
from labelwise.data.table import read_rows, write_table
from labelwise.data.volumes import (
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    case_id,
    from_grid,
    read_volume,
    suffix_of,
    write_volume,
)
from labelwise.errors import ConfigError, DataError
from labelwise.evaluation.segmentation import SCORE_NAMES, summarize_cases, to_json
from labelwise.explain.outputs import png_bytes, upscale
from labelwise.inference.run import RunModel, fit_channels, input_files
from labelwise.io import atomic_write
from labelwise.metrics.segmentation import dice
from labelwise.metrics.surface import segmentation_scores
from labelwise.models.outputs import Threshold, parse_threshold, segment
from labelwise.models.windows import sizes

__all__ = ["INDEX_NAME", "diff_rgb", "mask_overlay_rgb", "predict_files", "prediction_inputs", "probabilities",
           "project", "save_run_predictions", "write_case"]

INDEX_NAME = "predictions.json"
REFERENCE_SUFFIXES = ("", "_mask", "_seg", "_label", "_gt", "_roi")  # <id><suffix> in the reference folder matches <id>
TP_RGB, FN_RGB, FP_RGB = (255, 255, 255), (255, 0, 0), (0, 64, 255)
LABEL_RGB = ((255, 210, 0), (0, 220, 90), (255, 60, 200), (0, 200, 255), (255, 130, 0), (160, 90, 255))


def probabilities(logits: Any, threshold: Threshold = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``(*spatial)`` float32 and mask ``(*spatial)`` int64 of one case's logits
    ``(K, *spatial)``, by :func:`labelwise.models.outputs.segment` (the one threshold path)."""
    logits = torch.as_tensor(logits).detach().float().cpu()
    if logits.ndim not in (3, 4):
        raise DataError(f"logits must be (K, H, W) or (K, D, H, W) (one case), got shape {tuple(logits.shape)}")
    probability, mask, _ = segment(logits[None], parse_threshold(threshold))
    return probability[0].numpy().astype(np.float32), mask[0].numpy()


# --- figures -------------------------------------------------------------------------------------------------------


def project(volume: np.ndarray, affine: np.ndarray | None = None, axis: int | None = None,
            reduce: Callable[..., np.ndarray] = np.max) -> np.ndarray:
    """The 2D view of a 3D ``volume`` ``(X, Y, Z)`` that the figures show: ``reduce`` (maximum) along ``axis``.

    ``axis`` None: with an ``affine``, the volume is first turned to RAS axes and projected along
    superior-inferior, else along the last axis. The projection is then rotated 90 degrees (``np.rot90``) so that
    the second remaining axis (anterior) points up. A 2D array is returned as it is."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        return volume
    if volume.ndim != 3:
        raise DataError(f"projection: expected a 2D or 3D array, got shape {volume.shape}")
    if axis is None:
        if affine is not None:
            from nibabel.orientations import apply_orientation, io_orientation

            volume = apply_orientation(volume, io_orientation(np.asarray(affine, dtype=np.float64)))
        axis = 2
    if not -3 <= axis < 3:
        raise ConfigError(f"mip axis: expected 0, 1 or 2, got {axis}")
    return np.rot90(reduce(volume, axis=axis))


def _grey(image: np.ndarray) -> np.ndarray:
    """``image`` (2D) scaled to [0, 1] between its 0.5th and 99.5th percentiles (constant: 0)."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(image, (0.5, 99.5)) if image.size else (0.0, 0.0)
    if not high > low:
        low, high = float(image.min(initial=0.0)), float(image.max(initial=0.0))
    if not high > low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _boundary(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def mask_overlay_rgb(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 ``(H, W, 3)``: grey ``image`` ``(H, W)`` with each label > 0 of ``labels`` filled in its colour
    (blended by ``alpha``) and outlined in it."""
    grey = _grey(image)
    if labels.shape != grey.shape:
        raise DataError(f"overlay: mask shape {labels.shape} differs from the image's {grey.shape}")
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for label in (int(v) for v in np.unique(labels) if v > 0):
        region = labels == label
        colour = np.asarray(LABEL_RGB[(label - 1) % len(LABEL_RGB)], dtype=np.float64) / 255
        rgb[region] = (1 - alpha) * rgb[region] + alpha * colour
        rgb[_boundary(region)] = colour
    return np.round(rgb * 255).astype(np.uint8)


def diff_rgb(image: np.ndarray, prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)``: the difference of two 2D binary masks (projections, for volumes) over the dimmed grey
    ``image``: white where both are set (true positives), red where only the reference is (false negatives), blue
    where only the prediction is (false positives)."""
    prediction, reference = np.asarray(prediction) > 0, np.asarray(reference) > 0
    grey = _grey(image) * 0.5
    rgb = np.round(np.repeat(grey[..., None], 3, axis=2) * 255).astype(np.uint8)
    rgb[prediction & reference] = TP_RGB
    rgb[reference & ~prediction] = FN_RGB
    rgb[prediction & ~reference] = FP_RGB
    return rgb


def _write_png(path: Path, rgb: np.ndarray, title: str) -> None:
    atomic_write(path, png_bytes(upscale(rgb), title))


# --- inputs and references -----------------------------------------------------------------------------------------


def prediction_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files given, and the readable files inside folders given (sorted): NIfTI, pictures, ``.npy``."""
    return input_files(paths, VOLUME_SUFFIXES)


def _references(reference: str | Path | None, files: Sequence[Path], what: str = "reference") -> dict[str, Path]:
    """Reference (or region-of-interest) mask per case id: a folder's files named ``<id>`` (or ``<id>_mask``,
    ``_seg``, ``_label``, ``_gt``, ``_roi``) with any supported suffix, else the one whose key is the input's under
    the pairing rule of ``labelwise data manifest`` (:func:`labelwise.data.pairing.match_by_key`: ``01_test.tif``
    with ``01_manual1.gif``); a single file for a single input, else by its id."""
    if reference is None:
        return {}
    reference = Path(reference)
    ids = [case_id(f) for f in files]
    if reference.is_file():
        if len(files) == 1:
            return {ids[0]: reference}
        return {case_id(reference): reference} if case_id(reference) in ids else {}
    if not reference.is_dir():
        raise DataError(f"{reference}: {what} masks: no such file or folder")
    inputs = {f.resolve() for f in files}
    by_name: dict[str, list[Path]] = {}
    for path in sorted(reference.iterdir()):
        if path.is_file() and suffix_of(path) in VOLUME_SUFFIXES and path.resolve() not in inputs:
            by_name.setdefault(case_id(path), []).append(path)
    found: dict[str, Path] = {}
    keyed = {case_id(i): o for i, o in match_by_key(list(files), [p for ps in by_name.values() for p in ps]).items()}
    for cid in ids:
        if not any(by_name.get(cid + suffix) for suffix in REFERENCE_SUFFIXES) and cid in keyed:
            found[cid] = keyed[cid]  # named by the pairing rule of labelwise data manifest (01_test ~ 01_manual1)
            continue
        for suffix in REFERENCE_SUFFIXES:
            candidates = by_name.get(cid + suffix, [])
            if len(candidates) > 1:
                raise DataError(f"{reference}: several {what} masks for {cid}: "
                                f"{', '.join(p.name for p in candidates)}")
            if candidates:
                found[cid] = candidates[0]
                break
    if not found:
        raise DataError(f"{reference}: no {what} mask matches the inputs' ids ({', '.join(ids[:5])}"
                        f"{', ...' if len(ids) > 5 else ''}); name them <id>.nii.gz, <id>.png, ... or <id>_mask.*")
    return found


def _read_reference(path: Path, image_path: Path, image: Volume) -> Volume:
    reference = read_volume(path, mask=True)
    if reference.array.shape != image.spatial_shape:
        raise DataError(f"{path}: reference mask of shape {reference.array.shape} does not match the input "
                        f"{image_path} of shape {image.spatial_shape}")
    if (reference.affine is not None and image.affine is not None
            and not np.allclose(reference.spacing, image.spacing, rtol=1e-3)):
        raise DataError(f"{path}: reference spacing {reference.spacing} differs from the input {image_path} "
                        f"spacing {image.spacing}")
    return reference


# --- the command ---------------------------------------------------------------------------------------------------


def predict_files(
    run: RunModel,
    files: Sequence[str | Path],
    out: str | Path,
    threshold: Threshold | str = None,
    reference: str | Path | None = None,
    window: int | Sequence[int] | None = None,
    overlap: float | None = None,
    roi: str | Path | None = None,
    *,
    tta: bool | None = None,
    min_size: int | None = None,
    batch_size: int | None = None,
    mip_axis: int | None = None,
    progress: bool | Callable[[str], None] = True,
) -> list[dict[str, Any]]:
    """Predict every input (files, or folders of them) with ``run`` (a segmentation :class:`RunModel`) and write the
    outputs listed in the module docstring under ``out``. Inputs are read and preprocessed as the run's training
    data was (:meth:`RunModel.read`) and go through the run's own ``predict`` and threshold, so the test images give
    the run's own test predictions.

    ``threshold``: None keeps the run's (``method.threshold`` for one output channel, argmax otherwise); a number,
    "otsu" or "argmax" overrides it (see :func:`labelwise.models.outputs.segment`). ``reference``: a folder of
    reference masks matched by case id (or one mask for one input) for the difference figures and Dice. ``roi``: a
    folder (or file) of region-of-interest masks matched the same way: the mask is background outside a case's
    region and its Dice is scored inside it. ``window``/``overlap``: the sliding windows (None: the run's ``data.patch_size`` and ``method.overlap``; a run
    trained on whole images sees whole images). ``tta`` (flip test-time augmentation), ``min_size`` (smallest
    connected component kept, voxels): None keeps the run's (``method.tta``, ``method.min_size``); ``batch_size``:
    windows per forward pass. ``mip_axis``: the projection axis of 3D figures (see
    :func:`project`). ``progress``: True prints one line per case to stderr; a callable receives that line.

    Returns the cases' index entries (also merged, by id, into ``out/predictions.json``)."""
    if run.task != "segmentation":
        raise DataError(f"{run.run_dir}: a classification run; its predict writes class probabilities "
                        "(labelwise.inference.predict.predict_classes)")
    dims = run.spatial_dims
    run.configure(threshold=threshold, overlap=overlap,
                  window=sizes(window, dims, "window size") if window is not None else None,
                  tta=tta, min_size=min_size, batch_size=batch_size)
    files = prediction_inputs(files)
    ids = [case_id(f) for f in files]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(f"several inputs have the id {repeated[0]}: "
                        f"{', '.join(str(f) for f in files if case_id(f) == repeated[0])}")
    references = _references(reference, files)
    rois = _references(roi, files, what="region-of-interest")
    missing = [cid for cid in ids if roi is not None and cid not in rois]
    if missing:
        raise DataError(f"{roi}: no region-of-interest mask for {', '.join(missing[:5])}"
                        f"{', ...' if len(missing) > 5 else ''}")
    report = _reporter(progress)
    out = Path(out)
    entries: list[dict[str, Any]] = []
    for number, path in enumerate(files, 1):
        start = time.perf_counter()
        cid = case_id(path)
        raw = run.read_raw(path)  # the input's own grid: what outputs, references and rois are on
        image = run.preprocess(raw)  # the training grid (reoriented, resampled) and intensity
        ref = _read_reference(references[cid], path, raw) if cid in references else None
        spatial = raw.spatial_shape
        logits = run.logits(torch.from_numpy(image.array)[None], spacing=image.spacing)
        shown = image.array
        if image.grid is not None and image.grid.changed:  # logits back on the input's grid (linear), then thresholded
            logits = torch.from_numpy(from_grid(logits.numpy(), image.grid))
            shown = from_grid(image.array, image.grid)
        probability, mask, used = (t[0] for t in run.segment(logits))
        probability, mask = probability.numpy().astype(np.float32), mask.numpy()
        del logits
        region = _read_reference(rois[cid], path, raw).array > 0 if cid in rois else None
        if region is not None:
            mask = np.where(region, mask, 0)

        nifti = dims == 3 or suffix_of(path) in NIFTI_SUFFIXES
        files_written: dict[str, str | None] = {"diff": None}
        files_written.update(write_case(out, cid, shown, probability, mask, raw.spacing, raw.affine, nifti,
                                        {"": ref.array} if ref is not None else {}, mip_axis))
        seconds = time.perf_counter() - start
        window = run.method.window or list(spatial)
        entry: dict[str, Any] = {
            "id": cid, "input": str(path), **files_written,
            "reference": str(references[cid]) if cid in references else None,
            "threshold": used, "shape": list(spatial), "spacing": [float(s) for s in raw.spacing],
            "window": [int(w) for w in window], "overlap": float(run.method.overlap),
            "tta": bool(run.method.tta), "min_size": int(run.method.min_size),
            "roi": str(rois[cid]) if cid in rois else None,
            "foreground_voxels": int((mask > 0).sum()), "seconds": round(seconds, 3),
        }
        if ref is not None:
            truth = ref.array if region is None else np.where(region, ref.array, 0)  # scored inside the roi
            entry["dice"] = _finite(dice(torch.from_numpy(mask > 0)[None], torch.from_numpy(truth > 0)[None],
                                         num_classes=2)[0, 0])
            if run.num_classes > 2:
                entry["dice_per_class"] = [_finite(v) for v in dice(torch.from_numpy(mask)[None],
                                                                     torch.from_numpy(truth)[None],
                                                                     num_classes=run.num_classes)[0]]
        elif reference is not None:
            entry["dice"] = None
        entries.append(entry)
        _write_index(out, run, entries)  # after every case, so an error later keeps what is done
        score = (f", Dice {entry['dice']:.4f}" if entry.get("dice") is not None
                 else (", no reference" if reference is not None else ""))
        report(f"[{number}/{len(files)}] {cid} {'x'.join(map(str, spatial))}: {seconds:.1f} s, "
               f"{entry['foreground_voxels']} foreground {'voxels' if dims == 3 else 'pixels'}{score}")
    return entries


def _finite(value: Any) -> float | None:
    """A score for JSON: None where it is undefined (nan: both masks empty, the convention of
    :func:`labelwise.metrics.segmentation.dice`)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _reporter(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        import typer

        return lambda line: typer.echo(line, err=True)
    return lambda line: None


def _write_index(out: Path, run: RunModel, entries: list[dict[str, Any]]) -> Path:
    path = out / INDEX_NAME
    old: list[dict[str, Any]] = []
    if path.is_file():
        try:
            old = [e for e in json.loads(path.read_text()).get("cases", []) if isinstance(e, dict)]
        except (OSError, ValueError, AttributeError):
            old = []
    new_ids = {e["id"] for e in entries}
    cases = [e for e in old if e.get("id") not in new_ids] + entries
    scores = [e["dice"] for e in cases if e.get("dice") is not None]
    document = {
        "run": str(run.run_dir), "checkpoint": str(run.checkpoint),
        "cases": cases, "mean_dice": float(np.mean(scores)) if scores else None,
    }
    return atomic_write(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def write_case(out: Path, cid: str, image: np.ndarray, probability: np.ndarray, mask: np.ndarray,
               spacing: Sequence[float], affine: np.ndarray | None, nifti: bool,
               references: dict[str, np.ndarray] | None = None, mip_axis: int | None = None) -> dict[str, str]:
    """Write one predicted case under ``out`` and return the paths written, relative to ``out``, by key:
    ``probability`` and ``mask`` (NIfTI with ``spacing`` and ``affine`` when ``nifti``; else PNG, plus the
    probability as ``probability_npy``), ``mip`` (the mask over the projection of ``image`` ``(C, *spatial)``:
    colour shown as grey, otherwise its first channel) and, per reference mask ``{name: mask}``, ``diff_<name>``
    (``diff`` for the name ""): white where both are set, red where only the reference is, blue where only the
    prediction is."""
    files = {"probability": f"probabilities/{cid}.nii.gz" if nifti else f"probabilities/{cid}.png",
             "mask": f"masks/{cid}.nii.gz" if nifti else f"masks/{cid}.png"}
    write_volume(out / files["probability"], probability, spacing if nifti else None, affine if nifti else None)
    if not nifti:
        files["probability_npy"] = f"probabilities/{cid}.npy"
        write_volume(out / files["probability_npy"], probability)
    write_volume(out / files["mask"], mask.astype(np.uint8), spacing, affine)
    shown = image.mean(0) if image.shape[0] == 3 else image[0]
    view, predicted = project(shown, affine, mip_axis), project(mask, affine, mip_axis)
    files["mip"] = f"figures/{cid}_mip.png"
    _write_png(out / files["mip"], mask_overlay_rgb(view, predicted),
               f"{cid}: prediction {'MIP' if mask.ndim == 3 else 'overlay'}")
    for name, reference in (references or {}).items():
        key = f"diff_{name}" if name else "diff"
        files[key] = f"figures/{cid}_{key}.png"
        _write_png(out / files[key], diff_rgb(view, predicted > 0, project(reference > 0, affine, mip_axis)),
                   f"{cid}: {f'vs {name}: ' if name else ''}white true positive, red false negative, blue false positive")
    return files


# --- the end-of-run outputs of a run on a manifest ----------------------------------------------------------------


def save_run_predictions(folder: str | Path, volumes: Any, predictions: dict[str, list[torch.Tensor]]) -> Path:
    """What a training run on a manifest writes for one split (``volumes``, a
    :class:`~labelwise.data.patches.VolumeDataset`), from :meth:`Method.evaluate`'s per-case predictions:

    ``masks/<id>`` and ``probabilities/<id>`` (NIfTI in 3D with the image's spacing and affine; PNG and ``.npy`` in
    2D), ``figures/<id>_mip.png`` (the prediction over the image's projection) and ``figures/<id>_diff_<ref>.png``
    for each reference (``label``: the mask the run was scored on; ``truth``: the manifest's clean mask, when it has
    one), and ``segmentation.json``: every score of :func:`labelwise.metrics.surface.segmentation_scores` per case
    and their mean and std, per reference; cases with a region of interest (the manifest's ``roi``) scored inside
    it (``roi``: how many). Runs with more than 2 classes are also scored per class
    (:func:`labelwise.metrics.surface.class_scores`): ``classes`` (the foreground class names), per case
    ``per_class`` and per reference ``per_class`` (each class's mean, std, count; see
    :func:`labelwise.evaluation.segmentation.summarize_classes`). The classes and their names are the run's
    ``inference.json`` ``output`` (written when training starts, two folders above ``folder``, the run directory: the
    dataset holds no class names and the engine's hook passes none); without that file, the highest label of the
    predictions and labels.

    Cases the dataset reoriented or resampled (its ``grids``, from the case cache: ``data.reorient``,
    ``data.spacing``) are written and scored on their files' own grid: the probability resampled back linearly, the
    mask by nearest neighbour (the evaluation's mask is not thresholded again), both with the axes put back in the
    file's order (:func:`labelwise.data.volumes.from_grid`), with the file's spacing and affine; the label and
    region of interest are read from their files again. Returns the path of ``segmentation.json``."""
    from labelwise.evaluation.segmentation import summarize_classes
    from labelwise.metrics.surface import class_scores

    folder = Path(folder)
    try:
        output = json.loads((folder.parent.parent / "inference.json").read_text(encoding="utf-8"))["output"]
        num_classes, names = int(output["num_classes"]), [str(n) for n in output["class_names"][1:]]
    except (OSError, ValueError, KeyError, TypeError):
        masks = [*predictions["prediction"], *(t for t, known in zip(volumes.target, volumes.labelled) if known)]
        num_classes, names = max([2, *(int(m.max()) + 1 for m in masks if m.numel())]), None
    classes = (names if names is not None and len(names) == num_classes - 1 else
               [str(k) for k in range(1, num_classes)]) if num_classes > 2 else []
    scores: dict[str, list[dict[str, Any]]] = {"label": [], "truth": []}
    figures = []
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
            label = read_volume(case.label, mask=True).array if bool(volumes.labelled[i]) else None
        else:
            roi = volumes.rois[i].cpu().numpy() if volumes.rois[i] is not None else None
            label = volumes.target[i].cpu().numpy() if bool(volumes.labelled[i]) else None
        references = {"label": label,
                      "truth": read_volume(case.truth, mask=True).array if case.truth is not None else None}
        references = {name: reference for name, reference in references.items() if reference is not None}
        for name, reference in references.items():
            if reference.shape != mask.shape:
                raise DataError(f"{case.id}: the {name} mask has shape {reference.shape}, the image {case.image} "
                                f"{mask.shape}")
            if not classes:
                scores[name].append({"id": case.id, **segmentation_scores(mask > 0, reference > 0, spacing, roi)})
                continue
            try:
                scored = class_scores(mask, reference, spacing, num_classes, roi, classes)
            except DataError as err:
                raise DataError(f"{case.id}: scoring against the {name} mask: {err}") from None
            scores[name].append({"id": case.id, **scored["foreground"], "per_class": scored["per_class"]})
        nifti = mask.ndim == 3 or suffix_of(case.image) in NIFTI_SUFFIXES
        files = write_case(folder, case.id, image, probability, mask, spacing, affine, nifti, references)
        entry = {"id": case.id, **{key: value for key, value in files.items() if key.startswith(("mip", "diff"))}}
        figures.append(entry)
    result = {"scores": list(SCORE_NAMES), "figures": figures,
              "roi": sum(r is not None for r in volumes.rois),  # cases scored inside their region of interest
              "classes": classes,  # [] for one foreground class
              "references": {name: {"cases": cases, **summarize_cases(cases),
                                    **({"per_class": summarize_classes(cases, classes)} if classes else {})}
                             for name, cases in scores.items() if cases}}
    path = folder / "segmentation.json"
    atomic_write(path, to_json(result))
    return path


# --- classification runs --------------------------------------------------------------------------------------------


def classification_inputs(paths: Sequence[str | Path], split: str | None = None
                          ) -> list[tuple[str, Path | None, np.ndarray | None]]:
    """``(id, file, array)`` per sample: image files and folders (pictures, ``.npy``, NIfTI, Harvard-GDP ``.npz``; the
    id is the file name without its suffix), a classification table ``.csv`` (its ``id`` and ``image`` columns,
    images relative to the table's folder) or a dataset ``.npz`` holding ``image`` ``(N, C, *spatial)`` (ids from its
    ``ids`` array, else the row number). ``split`` keeps the rows of one split of a table or dataset."""
    samples: list[tuple[str, Path | None, np.ndarray | None]] = []
    for path in map(Path, paths):
        if path.is_file() and suffix_of(path) == ".csv":
            _, rows = read_rows(path, "classification table")
            for row in rows:
                if "id" not in row or "image" not in row:
                    raise DataError(f"{path}: a classification table needs the columns id and image")
                if split is None or row.get("split") == split:
                    image = Path(row["image"])
                    samples.append((row["id"], image if image.is_absolute() else path.parent / image, None))
        elif path.is_file() and suffix_of(path) == ".npz" and _is_dataset(path):
            with np.load(path, allow_pickle=False) as data:
                image = np.asarray(data["image"], dtype=np.float32)
                ids = data["ids"].astype(str) if "ids" in data.files else np.arange(len(image)).astype(str)
                rows = np.arange(len(image)) if split is None or "split" not in data.files else \
                    np.flatnonzero(data["split"].astype(str) == split)
            samples += [(str(ids[i]), None, image[i]) for i in rows]
        else:
            samples += [(case_id(f), f, None) for f in input_files([path])]
    if not samples:
        raise DataError(f"no samples{f' in split {split!r}' if split else ''} in {', '.join(map(str, paths))}")
    ids = [s[0] for s in samples]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(f"several inputs have the id {repeated[0]}")
    return samples


def _is_dataset(path: Path) -> bool:
    """A labelwise dataset ``.npz`` (an ``image`` array of samples), not a Harvard-GDP patient file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "image" in data.files
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read .npz: {err}") from None


def predict_classes(run: RunModel, inputs: Sequence[str | Path], out: str | Path, split: str | None = None,
                    batch_size: int = 32, progress: bool | Callable[[str], None] = True) -> dict[str, Path]:
    """Class (or label) probabilities of a classification run for every sample of ``inputs`` (see
    :func:`classification_inputs`), read and preprocessed as training read its data, through the run's network and
    output activation. Writes ``out/predictions.csv`` (``id`` + one probability column per class or label, named as
    the run names them) and ``out/predictions.npz`` (``probability`` ``(N, K)``, ``prediction``, ``id``; ids also in
    ``predictions_ids.txt``), both readable by ``labelwise evaluate classification --predictions``."""
    if run.task != "classification":
        raise DataError(f"{run.run_dir}: a segmentation run; use labelwise predict with image files or folders")
    run.require_head()
    samples = classification_inputs(inputs, split)
    report = _reporter(progress)
    chunks = []
    for start in range(0, len(samples), batch_size):
        batch = [run.read(path).array if path is not None else _preprocessed(run, array, sid)
                 for sid, path, array in samples[start : start + batch_size]]
        shapes = {b.shape for b in batch}
        if len(shapes) > 1:
            raise DataError(f"inputs differ in shape ({', '.join(map(str, sorted(shapes)))}) after preprocessing; "
                            "the run resizes only when trained with data.image_size")
        chunks.append(run.probabilities(run.logits(torch.from_numpy(np.stack(batch)))))
        report(f"[{min(start + batch_size, len(samples))}/{len(samples)}] samples")
    probability = torch.cat(chunks).numpy().astype(np.float64)
    ids = [s[0] for s in samples]
    names = run.class_names
    prediction = (probability > 0.5).astype(np.int64) if run.multilabel else probability.argmax(1)
    out = Path(out)
    files = {"csv": out / "predictions.csv", "npz": out / "predictions.npz", "ids": out / "predictions_ids.txt"}
    write_table(files["csv"], [{"id": i, **{n: f"{p:.8g}" for n, p in zip(names, row)}}
                               for i, row in zip(ids, probability)])
    save_npz(files["npz"], {"probability": probability.astype(np.float32), "prediction": prediction,
                            "id": np.array(ids), "class_names": np.array(names)}, compress=True)
    atomic_write(files["ids"], "".join(f"{i}\n" for i in ids))
    return files


def _preprocessed(run: RunModel, array: np.ndarray, sid: str) -> np.ndarray:
    """A dataset ``.npz`` sample ``(C, *spatial)`` through the run's preprocessing, as a file would be."""
    channels = fit_channels(array, Path(sid), run.in_channels, run.spatial_dims)
    return run.preprocess(Volume(channels, (1.0,) * run.spatial_dims)).array
