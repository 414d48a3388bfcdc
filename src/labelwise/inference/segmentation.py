"""``labelwise predict``: a segmentation run's network over new images and volumes, by overlapping windows.

Each input is cut into windows of ``window`` that overlap by ``overlap`` (0.5: a stride of half a window, as DS6
does with 64^3 patches at stride 32); the windows' logits are blended with a Gaussian weight (the centre of a window
counts more than its edges) by :func:`labelwise.models.windows.blend_windows` (equal to MONAI's
``sliding_window_inference``, without importing MONAI), which also pads inputs smaller than a window. Windows are
rounded up to a size the network accepts (UNetMSS: multiples of 16; a MONAI UNet with n levels: of 2^(n-1)).

Written under ``out`` for an input ``<id>.<suffix>`` (``<id>`` as :func:`labelwise.data.volumes.case_id` gives it)::

    probabilities/<id>.nii.gz   foreground probability, float32 (3D and NIfTI inputs; input's spacing and affine)
    probabilities/<id>.png      ... 2D pictures and arrays: 8-bit picture, plus <id>.npy (float32)
    masks/<id>.nii.gz           predicted labels, uint8 (2D pictures and arrays: masks/<id>.png, 0/255 if binary)
    uncertainty/<id>_entropy.nii.gz   with --uncertainty: the predictive entropy over every flip of the input, over
                                its maximum ([0, 1]); 2D pictures and arrays: .npy (float32) and an 8-bit .png
    uncertainty/<id>_variance.nii.gz  ... and the variance of the foreground probability over the flips ([0, 0.25])
    figures/<id>_mip.png        3D: maximum-intensity projection of the image with the mask's projection in colour;
                                2D: the image with the mask filled and outlined
    figures/<id>_diff.png       with a reference mask: true positives white, false negatives red, false positives
                                blue, compared pixel by pixel on the two masks' projections
                                (:func:`labelwise.inference.figures.diff_rgb`)
    predictions.json            {"run", "checkpoint", "class_names" (label k of a mask is class_names[k]:
                                background, then data.class_names or foreground), "cases": [one entry per input],
                                "mean_dice"; an ensemble: "ensemble", its runs}; with a reference, an entry's
                                "dice" is the foreground Dice (None where both are empty); with --uncertainty,
                                "entropy" and "variance" (the maps' paths) and "mean_entropy" and "mean_variance"
                                (inside the roi): a case to review ranks high

References and regions of interest are paired with the inputs by :func:`labelwise.data.pairing.match_references`
(the rule of ``labelwise evaluate segmentation`` too) and scored by :func:`labelwise.metrics.surface.score_case`
(its overlap scores), the one per-case scorer. The masks folder is what ``labelwise evaluate segmentation --pred OUT``
reads.
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

from labelwise.data.pairing import check_reference, match_references
from labelwise.data.volumes import (
    VOLUME_SUFFIXES,
    Volume,
    case_id,
    from_grid,
    read_volume,
    stores_spacing,
    write_volume,
)
from labelwise.errors import DataError
from labelwise.inference.figures import diff_rgb, mask_overlay_rgb, project, write_png
from labelwise.inference.run import RunModel, input_files, reporter
from labelwise.io import atomic_write
from labelwise.metrics.surface import inside, mark_ignored, score_case, scored_classes
from labelwise.models.outputs import Threshold, flip_uncertainty, parse_threshold, segment
from labelwise.models.windows import sizes

__all__ = ["INDEX_NAME", "predict_files", "prediction_inputs", "probabilities", "write_case"]

INDEX_NAME = "predictions.json"
UNCERTAINTY = ("entropy", "variance")  # predict --uncertainty: the maps written per case


def probabilities(logits: Any, threshold: Threshold = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``(*spatial)`` float32 and mask ``(*spatial)`` int64 of one case's logits
    ``(K, *spatial)``, by :func:`labelwise.models.outputs.segment` (the one threshold path)."""
    logits = torch.as_tensor(logits).detach().float().cpu()
    if logits.ndim not in (3, 4):
        raise DataError(f"logits must be (K, H, W) or (K, D, H, W) (one case), got shape {tuple(logits.shape)}")
    probability, mask, _ = segment(logits[None], parse_threshold(threshold))
    return probability[0].numpy().astype(np.float32), mask[0].numpy()


def prediction_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files given, and the readable files inside folders given (sorted): NIfTI, pictures, ``.npy``."""
    return input_files(paths, VOLUME_SUFFIXES)


def _references(reference: str | Path | None, files: Sequence[Path], what: str = "reference") -> dict[str, Path]:
    """The ``reference`` mask (or region-of-interest mask) of each input by case id
    (:func:`labelwise.data.pairing.match_references`); refused when it matches none."""
    if reference is None:
        return {}
    found = {case_id(f): r for f, r in match_references(files, reference, what).items()}
    if not found:
        ids = [case_id(f) for f in files]
        raise DataError(
            f"{reference}: no {what} mask matches the inputs' ids ({', '.join(ids[:5])}"
            f"{', ...' if len(ids) > 5 else ''}); name them <id>.nii.gz, <id>.png, ... or <id>_mask.*"
        )
    return found


# --- the command ---------------------------------------------------------------------------------------------------


def predict_files(
    run: RunModel | Sequence[RunModel],
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
    uncertainty: bool = False,
    progress: bool | Callable[[str], None] = True,
) -> list[dict[str, Any]]:
    """Predict every input (files, or folders of them) with ``run`` (a segmentation :class:`RunModel`) and write the
    outputs listed in the module docstring under ``out``. Inputs are read and preprocessed as the run's training
    data was (:meth:`RunModel.read`) and go through the run's own ``predict`` and threshold, so the test images give
    the run's own test predictions.

    ``threshold``: None keeps the run's (``method.threshold`` for one output channel, argmax otherwise); a number,
    "otsu" or "argmax" overrides it (see :func:`labelwise.models.outputs.segment`). ``reference``: a folder of
    reference masks paired with the inputs by :func:`labelwise.data.pairing.match_references` (or one mask for one
    input) for the difference figures and Dice. ``roi``: a folder (or file) of region-of-interest masks matched the
    same way: the mask is background outside a case's region and its Dice is scored inside it.
    ``window``/``overlap``: the sliding windows (None: the run's ``data.patch_size`` and ``method.overlap``; a run
    trained on whole images sees whole images). ``tta`` (flip test-time augmentation), ``min_size`` (smallest
    connected component kept, voxels): None keeps the run's (``method.tta``, ``method.min_size``); ``batch_size``:
    windows per forward pass. ``mip_axis``: the projection axis of 3D figures (see
    :func:`labelwise.inference.figures.project`). ``uncertainty``: also write the entropy and flip-variance maps
    (module docstring; :func:`labelwise.models.outputs.flip_uncertainty`) from every flip of the input, whatever
    ``tta`` (which still decides the mask: the flips' mean logits, or the unflipped ones), and their means inside
    the roi in the index. ``progress``: True prints one line per case to stderr; a callable
    receives that line.

    Several runs (``run`` a sequence: an ensemble, e.g. the folds of a cross-validation) each predict as above on
    the input's own grid; their class probabilities are averaged (not their logits), and the mean is thresholded by
    the first run's rule (``min_size``, and its threshold, or the runs' mean threshold where they calibrated
    different ones; ``threshold`` overrides both). They must have the same outputs (classes, names, activation).
    With ``uncertainty``, every run's flips are pooled.

    Returns the cases' index entries (also merged, by id, into ``out/predictions.json``)."""
    runs = [run] if isinstance(run, RunModel) else list(run)
    if not runs:
        raise DataError("predict: no run given")
    run = runs[0]
    for other in runs:
        if other.task != "segmentation":
            raise DataError(
                f"{other.run_dir}: a classification run; its predict writes class probabilities "
                "(labelwise.inference.predict_classes)"
            )
        if other.spec["output"] != run.spec["output"]:
            raise DataError(
                f"{other.run_dir}: its outputs ({other.class_names}, {other.activation}) differ from {run.run_dir}'s "
                f"({run.class_names}, {run.activation}); an ensemble averages the probabilities of the same classes"
            )
    dims = run.spatial_dims
    for other in runs:
        other.configure(
            threshold=threshold,
            overlap=overlap,
            window=sizes(window, dims, "window size") if window is not None else None,
            tta=tta,
            min_size=min_size,
            batch_size=batch_size,
        )
    if threshold is None and len(runs) > 1:  # the runs' own thresholds: one, or the mean of calibrated ones
        chosen = [r.method.segment_threshold(run.num_classes) for r in runs]
        if len({str(t) for t in chosen}) > 1:
            if not all(isinstance(t, float) for t in chosen):
                raise DataError(
                    f"the runs threshold their probabilities differently ({', '.join(map(str, chosen))}); "
                    "give the ensemble's with --threshold"
                )
            run.threshold_override = (float(np.mean([float(t) for t in chosen if t is not None])),)
    files = prediction_inputs(files)
    ids = [case_id(f) for f in files]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(
            f"several inputs have the id {repeated[0]}: {', '.join(str(f) for f in files if case_id(f) == repeated[0])}"
        )
    references = _references(reference, files)
    rois = _references(roi, files, what="region-of-interest")
    missing = [cid for cid in ids if roi is not None and cid not in rois]
    if missing:
        raise DataError(
            f"{roi}: no region-of-interest mask for {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
        )
    report = reporter(progress)
    out = Path(out)
    entries: list[dict[str, Any]] = []
    for number, path in enumerate(files, 1):
        start = time.perf_counter()
        cid = case_id(path)
        raw = run.read_raw(path)  # the input's own grid: what outputs, references and rois are on
        image = run.preprocess(raw)  # the training grid (reoriented, resampled) and intensity
        ref = read_volume(references[cid], mask=True, ignore=run.ignore) if cid in references else None
        if ref is not None:
            check_reference(path, raw, references[cid], ref)
            ref.array = mark_ignored(ref.array, run.ignore)  # data.ignore: those voxels are scored nowhere
        spatial = raw.spatial_shape
        shown = from_grid(image.array, image.grid)
        outputs = [_case_logits(r, path, uncertainty, image if r is run else None) for r in runs]
        if len(runs) == 1:
            logits = outputs[0][0]
        else:  # the mean probability, as logits the first run's threshold reads the same way
            mean = torch.stack([r.probabilities(o[0]) for r, o in zip(runs, outputs)]).mean(0)
            logits = mean.clamp_min(1e-12).log() if run.activation == "softmax" else torch.logit(mean, eps=1e-7)
        maps: dict[str, np.ndarray] = {}
        if uncertainty:
            samples = torch.cat([o[1] for o in outputs if o[1] is not None])
            maps = dict(zip(UNCERTAINTY, (m[0].numpy() for m in flip_uncertainty(samples))))
            del samples
        del outputs
        probability, mask, used = (t[0] for t in run.segment(logits))
        probability, mask = probability.numpy().astype(np.float32), mask.numpy()
        del logits
        region = None
        if cid in rois:
            roi_volume = read_volume(rois[cid], mask=True)
            check_reference(path, raw, rois[cid], roi_volume, "region-of-interest")
            region = roi_volume.array > 0
        mask = inside(mask, region)  # background outside the region of interest

        nifti = dims == 3 or stores_spacing(path)
        files_written: dict[str, str | None] = {"diff": None}
        files_written.update(
            write_case(
                out,
                cid,
                shown,
                probability,
                mask,
                raw.spacing,
                raw.affine,
                nifti,
                {"": ref.array} if ref is not None else {},
                mip_axis,
            )
        )
        for name, values in maps.items():  # float maps as the probability is written; their means inside the roi
            files_written[name] = write_map(out, f"uncertainty/{cid}_{name}", values, raw.spacing, raw.affine, nifti)
        seconds = time.perf_counter() - start
        window = run.method.window or list(spatial)
        entry: dict[str, Any] = {
            "id": cid,
            "input": str(path),
            **files_written,
            "reference": str(references[cid]) if cid in references else None,
            "threshold": used,
            "shape": list(spatial),
            "spacing": [float(s) for s in raw.spacing],
            "window": [int(w) for w in window],
            "overlap": float(run.method.overlap),
            "tta": bool(run.method.tta),
            "min_size": int(run.method.min_size),
            "roi": str(rois[cid]) if cid in rois else None,
            "foreground_voxels": int((mask > 0).sum()),
            "seconds": round(seconds, 3),
        }
        for name, values in maps.items():
            entry[f"mean_{name}"] = float(values[region].mean() if region is not None else values.mean())
        if ref is not None:  # the overlap scores of the one per-case scorer, inside the roi
            scored = score_case(mask, ref.array, raw.spacing, region, scored_classes(run.num_classes), distances=False)
            entry["dice"] = _finite(scored["foreground"]["dice"])
            if scored["per_class"]:
                entry["dice_per_class"] = [_finite(s["dice"]) for s in scored["per_class"].values()]
        elif reference is not None:
            entry["dice"] = None
        entries.append(entry)
        _write_index(out, runs, entries)  # after every case, so an error later keeps what is done
        score = (
            f", Dice {entry['dice']:.4f}"
            if entry.get("dice") is not None
            else (", no reference" if reference is not None else "")
        )
        report(
            f"[{number}/{len(files)}] {cid} {'x'.join(map(str, spatial))}: {seconds:.1f} s, "
            f"{entry['foreground_voxels']} foreground {'voxels' if dims == 3 else 'pixels'}{score}"
        )
    return entries


def _case_logits(
    run: RunModel, path: Path, uncertainty: bool, image: Volume | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One run's logits ``(1, K, *spatial)`` of the input at ``path`` on the input's own grid (read and preprocessed
    as the run's training data was; ``image``: the input already so preprocessed for this run), and with
    ``uncertainty`` its logits under every flip ``(F, 1, K, *spatial)``: their mean (with the run's tta) or the
    unflipped one are the logits."""
    image = run.read(path) if image is None else image
    samples = None
    if uncertainty:  # every flip once: their mean (with the run's tta) or the unflipped one gives the mask
        samples = run.flip_logits(torch.from_numpy(image.array)[None])
        logits = samples.mean(0) if run.method.tta else samples[0]
    else:
        logits = run.logits(torch.from_numpy(image.array)[None], spacing=image.spacing)
    if image.grid is not None and image.grid.changed:  # back on the input's grid (linear), then thresholded
        logits = torch.from_numpy(from_grid(logits.numpy(), image.grid))
        if samples is not None:
            samples = torch.from_numpy(from_grid(samples.numpy(), image.grid))
    return logits, samples


def _finite(value: Any) -> float | None:
    """A score for JSON: None where it is undefined (nan: both masks empty, the convention of
    :func:`labelwise.metrics.segmentation.dice`)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _write_index(out: Path, runs: Sequence[RunModel], entries: list[dict[str, Any]]) -> Path:
    run = runs[0]
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
        "run": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "class_names": list(run.class_names),  # label k of the masks is class_names[k]
        "cases": cases,
        "mean_dice": float(np.mean(scores)) if scores else None,
    }
    if len(runs) > 1:  # an ensemble: every run, the first also under "run"
        document["ensemble"] = [str(r.run_dir) for r in runs]
    return atomic_write(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def write_map(
    out: Path, stem: str, values: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None, nifti: bool
) -> str:
    """A float voxel map (values in [0, 1]) written as the probability is: ``<stem>.nii.gz`` with ``spacing`` and
    ``affine`` when ``nifti``, else ``<stem>.npy`` (float32) and an 8-bit ``<stem>.png`` beside it. Returns the
    main file's path relative to ``out``."""
    values = np.asarray(values, dtype=np.float32)
    if nifti:
        write_volume(out / f"{stem}.nii.gz", values, spacing, affine)
        return f"{stem}.nii.gz"
    write_volume(out / f"{stem}.npy", values)
    write_volume(out / f"{stem}.png", np.clip(values, 0.0, 1.0))
    return f"{stem}.npy"


def write_case(
    out: Path,
    cid: str,
    image: np.ndarray,
    probability: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    affine: np.ndarray | None,
    nifti: bool,
    references: dict[str, np.ndarray] | None = None,
    mip_axis: int | None = None,
) -> dict[str, str]:
    """Write one predicted case under ``out`` and return the paths written, relative to ``out``, by key:
    ``probability`` and ``mask`` (NIfTI with ``spacing`` and ``affine`` when ``nifti``; else PNG, plus the
    probability as ``probability_npy``), ``mip`` (the mask over the projection of ``image`` ``(C, *spatial)``:
    colour shown as grey, otherwise its first channel) and, per reference mask ``{name: mask}``, ``diff_<name>``
    (``diff`` for the name ""): white where both are set, red where only the reference is, blue where only the
    prediction is."""
    files = {
        "probability": f"probabilities/{cid}.nii.gz" if nifti else f"probabilities/{cid}.png",
        "mask": f"masks/{cid}.nii.gz" if nifti else f"masks/{cid}.png",
    }
    write_volume(out / files["probability"], probability, spacing if nifti else None, affine if nifti else None)
    if not nifti:
        files["probability_npy"] = f"probabilities/{cid}.npy"
        write_volume(out / files["probability_npy"], probability)
    write_volume(out / files["mask"], mask.astype(np.uint8), spacing, affine)
    shown = image.mean(0) if image.shape[0] == 3 else image[0]
    view, predicted = project(shown, affine, mip_axis), project(mask, affine, mip_axis)
    files["mip"] = f"figures/{cid}_mip.png"
    write_png(
        out / files["mip"],
        mask_overlay_rgb(view, predicted),
        f"{cid}: prediction {'MIP' if mask.ndim == 3 else 'overlay'}",
    )
    for name, reference in (references or {}).items():
        key = f"diff_{name}" if name else "diff"
        files[key] = f"figures/{cid}_{key}.png"
        write_png(
            out / files[key],
            diff_rgb(view, predicted > 0, project(reference > 0, affine, mip_axis)),
            f"{cid}: {f'vs {name}: ' if name else ''}white true positive, red false negative, blue false positive",
        )
    return files
