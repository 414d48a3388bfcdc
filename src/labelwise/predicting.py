"""``labelwise predict``: a segmentation run's network over new images and volumes, by overlapping windows.

Each input is cut into windows of ``roi_size`` that overlap by ``overlap`` (0.5: a stride of half a window, as DS6
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
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from labelwise.data.volumes import (
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    case_id,
    read_volume,
    suffix_of,
    write_volume,
)
from labelwise.errors import ConfigError, DataError, LabelwiseError
from labelwise.io import atomic_write

__all__ = ["DEFAULT_ROI", "INDEX_NAME", "default_roi", "diff_rgb", "mask_overlay_rgb", "model_divisor",
           "parse_threshold", "predict_files", "prediction_inputs", "probabilities", "project",
           "sliding_window_predict", "whole_image_model"]

INDEX_NAME = "predictions.json"
DEFAULT_ROI = {2: 256, 3: 64}  # window side when neither the caller nor the run's data.patch_size gives one
REFERENCE_SUFFIXES = ("", "_mask", "_seg", "_label", "_gt")  # <id><suffix> in the reference folder matches <id>
TP_RGB, FN_RGB, FP_RGB = (255, 255, 255), (255, 0, 0), (0, 64, 255)
LABEL_RGB = ((255, 210, 0), (0, 220, 90), (255, 60, 200), (0, 200, 255), (255, 130, 0), (160, 90, 255))

Threshold = float | Literal["otsu"] | None


# --- windows -------------------------------------------------------------------------------------------------------


def model_divisor(model: nn.Module) -> int:
    """The number every spatial size of ``model``'s input must be a multiple of: a ``divisor`` attribute
    (UNetMSS: 16), a MONAI UNet's product of strides, 16 for MONAI's BasicUNet, else 1. Wrapped networks
    are searched (the first known one found)."""
    from monai.networks.nets import BasicUNet, UNet

    for module in model.modules():
        divisor = getattr(module, "divisor", None)
        if isinstance(divisor, int) and not isinstance(divisor, bool) and divisor >= 1:
            return divisor
        if isinstance(module, UNet):  # an anisotropic stride counts by its largest factor
            return int(math.prod(int(max(np.atleast_1d(s))) for s in module.strides))
        if isinstance(module, BasicUNet):
            return 16
    return 1


def whole_image_model(model: nn.Module) -> bool:
    """Whether ``model`` should see whole images by default: it has no parameters (a fixed filter such as the
    frangi method's vesselness, which normalises and thresholds each image it is given, so windows would change
    its output), or a module of it sets ``whole_image = True``."""
    if any(getattr(module, "whole_image", False) is True for module in model.modules()):
        return True
    return next(model.parameters(), None) is None


def _round_up(n: int, divisor: int) -> int:
    return -(-int(n) // divisor) * divisor


def _sizes(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    sizes = (value,) * dims if isinstance(value, (int, np.integer)) else tuple(value)
    if len(sizes) != dims or any(isinstance(s, bool) or int(s) != s or s < 1 for s in sizes):
        raise ConfigError(f"{name}: expected one positive size or {dims} of them, got {value!r}")
    return tuple(int(s) for s in sizes)


def default_roi(spatial_shape: Sequence[int], divisor: int = 1, patch_size: Sequence[int] | None = None
                ) -> tuple[int, ...]:
    """The window for an input of ``spatial_shape``: ``patch_size`` (the run's training patches) if given,
    else per axis the whole extent up to :data:`DEFAULT_ROI` (64 in 3D, 256 in 2D); each side is then rounded up
    to a multiple of ``divisor`` and kept no larger than the extent rounded up so."""
    dims = len(spatial_shape)
    wanted = _sizes(patch_size, dims, "roi size") if patch_size is not None else (DEFAULT_ROI.get(dims, 64),) * dims
    return tuple(min(_round_up(w, divisor), _round_up(s, divisor)) for w, s in zip(wanted, spatial_shape))


def sliding_window_predict(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 4,
    device: str | torch.device | None = None,
    divisible_by: int | None = None,
    padding_mode: str = "constant",
) -> torch.Tensor:
    """Logits ``(B, K, *spatial)`` of ``model`` over ``image`` ``(B, C, *spatial)``, window by window.

    ``roi_size``: the window (one size or one per axis; None: :func:`default_roi`, or the whole image for a
    :func:`whole_image_model`), rounded up to a multiple of ``divisible_by`` (None: :func:`model_divisor`) and
    capped at the image's extent rounded up likewise; inputs smaller than the window are padded
    (``padding_mode``, MONAI's) and the result cropped back. ``overlap`` in [0, 1): the share of a window shared
    with its neighbour; ``mode`` "gaussian" or "constant" blending.
    Runs under ``torch.no_grad`` with the model in eval mode (its mode is restored); windows go to ``device``
    (default: where the model's parameters are; the model is moved there if another device is given), the
    stitched logits come back on the image's device as float32."""
    from monai.inferers import sliding_window_inference

    if not isinstance(image, torch.Tensor) or image.ndim not in (4, 5):
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise DataError(f"sliding window: image must be a (B, C, H, W) or (B, C, D, H, W) tensor, got {shape}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"overlap: expected a value in [0, 1), got {overlap}")
    if mode not in ("gaussian", "constant"):
        raise ConfigError(f"mode: expected 'gaussian' or 'constant', got {mode!r}")
    spatial = tuple(image.shape[2:])
    divisor = model_divisor(model) if divisible_by is None else int(divisible_by)
    if divisor < 1:
        raise ConfigError(f"divisible_by: expected a positive int, got {divisible_by}")
    if roi_size is None:
        whole = whole_image_model(model)
        roi = tuple(_round_up(s, divisor) for s in spatial) if whole else default_roi(spatial, divisor)
    else:
        roi = tuple(min(_round_up(r, divisor), _round_up(s, divisor))
                    for r, s in zip(_sizes(roi_size, len(spatial), "roi size"), spatial))
    parameter = next(model.parameters(), None)
    if device is None:
        device = parameter.device if parameter is not None else image.device
    device = torch.device(device)
    if parameter is not None and parameter.device != device:
        model.to(device)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (tuple, list)):  # deep supervision heads: the full-resolution logits come first
            out = out[0]
        return out.float()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = sliding_window_inference(
                image.float(), roi, sw_batch_size, predictor, overlap=float(overlap), mode=mode,
                padding_mode=padding_mode, sw_device=device, device=image.device,
            )
    finally:
        model.train(was_training)
    if hasattr(logits, "as_tensor"):  # a MONAI MetaTensor
        logits = logits.as_tensor()
    return logits


# --- probabilities and masks ---------------------------------------------------------------------------------------


def parse_threshold(threshold: Any) -> Threshold:
    """None (1 output channel: 0.5; K >= 2: argmax), "otsu", or a number in (0, 1) (strings too, as the CLI
    passes them); a ConfigError otherwise."""
    if threshold is None or (isinstance(threshold, str) and threshold.strip().lower() in ("", "argmax", "none")):
        return None
    if isinstance(threshold, str) and threshold.strip().lower() == "otsu":
        return "otsu"
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold: expected a number in (0, 1) or 'otsu', got {threshold!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"threshold: expected a number in (0, 1) or 'otsu', got {threshold!r}")
    return value


def _class_probabilities(logits: Any) -> torch.Tensor:
    """``(K, *spatial)`` probabilities: sigmoid of one channel, softmax of K >= 2."""
    logits = torch.as_tensor(logits).detach().float().cpu()
    if logits.ndim not in (3, 4):
        raise DataError(f"logits must be (K, H, W) or (K, D, H, W) (one case), got shape {tuple(logits.shape)}")
    return logits.sigmoid() if logits.shape[0] == 1 else logits.softmax(0)


def _threshold_value(probability: np.ndarray, threshold: Threshold) -> float:
    if threshold != "otsu":
        return 0.5 if threshold is None else float(threshold)
    from labelwise.vesselness import otsu_threshold

    return otsu_threshold(probability)  # 0.5 for a constant map


def _masks(classes: torch.Tensor, threshold: Threshold) -> tuple[np.ndarray, np.ndarray, float | str]:
    """Foreground probability, labels and the threshold used ("argmax" where none)."""
    if classes.shape[0] == 1:
        probability = classes[0].numpy().astype(np.float32)
    else:
        probability = classes[1:].sum(0).numpy().astype(np.float32)  # 1 - p(background), without the cancellation
    if threshold is None and classes.shape[0] > 1:
        return probability, classes.argmax(0).numpy().astype(np.int64), "argmax"
    value = _threshold_value(probability, threshold)
    foreground = probability > value
    if classes.shape[0] <= 2:
        return probability, foreground.astype(np.int64), value
    labels = classes[1:].argmax(0).numpy().astype(np.int64) + 1  # the likeliest foreground class
    return probability, np.where(foreground, labels, 0), value


def probabilities(logits: Any, threshold: Threshold = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``(*spatial)`` float32 and mask ``(*spatial)`` int64 from one case's logits
    ``(K, *spatial)`` (``sliding_window_predict(...)[0]``).

    One channel: sigmoid, mask = probability > threshold (0.5 by default, "otsu": Otsu's threshold of this
    probability map; 0.5 for a constant map). K >= 2 channels: softmax, probability = 1 - p(background); the mask
    is the argmax, or with a threshold given, the likeliest foreground class where the probability exceeds it."""
    probability, mask, _ = _masks(_class_probabilities(logits), parse_threshold(threshold))
    return probability, mask


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
    from labelwise.explain.outputs import _png, _upscale

    atomic_write(path, _png(_upscale(rgb), title))


# --- inputs and references -----------------------------------------------------------------------------------------


def prediction_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files given, and the readable files inside folders given (sorted): NIfTI, pictures, ``.npy``."""
    from labelwise.trained import input_files

    return input_files(paths, VOLUME_SUFFIXES)


def _references(reference: str | Path | None, files: Sequence[Path]) -> dict[str, Path]:
    """Reference mask per case id: a folder's files named ``<id>`` (or ``<id>_mask``, ``_seg``, ``_label``,
    ``_gt``) with any supported suffix; a single file for a single input, else by its id."""
    if reference is None:
        return {}
    reference = Path(reference)
    ids = [case_id(f) for f in files]
    if reference.is_file():
        if len(files) == 1:
            return {ids[0]: reference}
        return {case_id(reference): reference} if case_id(reference) in ids else {}
    if not reference.is_dir():
        raise DataError(f"{reference}: reference masks: no such file or folder")
    inputs = {f.resolve() for f in files}
    by_name: dict[str, list[Path]] = {}
    for path in sorted(reference.iterdir()):
        if path.is_file() and suffix_of(path) in VOLUME_SUFFIXES and path.resolve() not in inputs:
            by_name.setdefault(case_id(path), []).append(path)
    found: dict[str, Path] = {}
    for cid in ids:
        for suffix in REFERENCE_SUFFIXES:
            candidates = by_name.get(cid + suffix, [])
            if len(candidates) > 1:
                raise DataError(f"{reference}: several reference masks for {cid}: "
                                f"{', '.join(p.name for p in candidates)}")
            if candidates:
                found[cid] = candidates[0]
                break
    if not found:
        raise DataError(f"{reference}: no reference mask matches the inputs' ids ({', '.join(ids[:5])}"
                        f"{', ...' if len(ids) > 5 else ''}); name them <id>.nii.gz, <id>.png, ... or <id>_mask.*")
    return found


def _read_image(path: Path, in_channels: int, spatial_dims: int, intensity: str) -> Volume:
    volume = read_volume(path)
    array, spacing = volume.array, volume.spacing
    if suffix_of(path) == ".npy" and len(spacing) == spatial_dims - 1:  # an (X, Y, Z) array read as (C, H, W)
        array, spacing = array[None], (1.0,) * spatial_dims
    from labelwise.trained import fit_channels

    array = fit_channels(array, path, in_channels, spatial_dims)
    if intensity != "none":
        from labelwise.data.patches import normalize_intensity

        array = normalize_intensity(array, intensity)
    return Volume(np.ascontiguousarray(array, dtype=np.float32), tuple(spacing), volume.affine)


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


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float | None:
    p, r = prediction.astype(bool), reference.astype(bool)
    total = int(p.sum()) + int(r.sum())
    return None if total == 0 else 2.0 * int((p & r).sum()) / total


def _run_settings(trained: Any) -> tuple[list[int] | None, str]:
    """The run config's training patch size and intensity normalisation ("none" unless a manifest run)."""
    try:
        from labelwise.config import load_config

        data = load_config(Path(trained.run_dir) / "config.yaml").data
    except (LabelwiseError, OSError, ValueError):
        return None, "none"
    patch = getattr(data, "patch_size", None)
    intensity = getattr(data, "intensity", "none") if getattr(data, "manifest", None) is not None else "none"
    return (list(patch) if patch else None), str(intensity)


# --- the command ---------------------------------------------------------------------------------------------------


def predict_files(
    trained: Any,
    files: Sequence[str | Path],
    out: str | Path,
    threshold: Threshold | str = None,
    reference: str | Path | None = None,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    *,
    sw_batch_size: int = 4,
    device: str | torch.device | None = None,
    mip_axis: int | None = None,
    progress: bool | Callable[[str], None] = True,
) -> list[dict[str, Any]]:
    """Predict every input (files, or folders of them) with ``trained`` (a :class:`labelwise.trained.Trained`
    segmentation run) and write the outputs listed in the module docstring under ``out``.

    ``threshold``: see :func:`probabilities` (None: 0.5 for one output channel, argmax otherwise; a number or
    "otsu" thresholds the foreground probability). ``reference``: a folder of reference masks matched by case id
    (or one mask for one input) for the difference figures and Dice. ``roi_size``: the window (None: the run's
    ``data.patch_size``, else :func:`default_roi`; the whole image for a :func:`whole_image_model`); ``overlap``:
    between windows. Inputs of manifest runs get the run's per-volume ``data.intensity`` normalisation.
    ``mip_axis``: the projection axis of 3D figures (see :func:`project`). ``progress``: True prints one line per
    case to stderr; a callable receives that line.

    Returns the cases' index entries (also merged, by id, into ``out/predictions.json``)."""
    if getattr(trained, "task", None) != "segmentation":
        raise DataError(f"{getattr(trained, 'run_dir', 'the run')}: labelwise predict needs a segmentation run; "
                        "for classification explanations use labelwise explain")
    threshold = parse_threshold(threshold)
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"overlap: expected a value in [0, 1), got {overlap}")
    files = prediction_inputs(files)
    ids = [case_id(f) for f in files]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(f"several inputs have the id {repeated[0]}: "
                        f"{', '.join(str(f) for f in files if case_id(f) == repeated[0])}")
    references = _references(reference, files)
    patch_size, intensity = _run_settings(trained)
    model, dims = trained.model, trained.spatial_dims
    divisor, whole = model_divisor(model), whole_image_model(model)
    if roi_size is not None:
        roi_size = _sizes(roi_size, dims, "roi size")
    if callable(progress):
        report = progress
    elif progress:
        import typer

        def report(line: str) -> None:
            typer.echo(line, err=True)
    else:
        def report(line: str) -> None:
            return None

    out = Path(out)
    entries: list[dict[str, Any]] = []
    for number, path in enumerate(files, 1):
        start = time.perf_counter()
        cid = case_id(path)
        image = _read_image(path, trained.in_channels, dims, intensity)
        ref = _read_reference(references[cid], path, image) if cid in references else None
        spatial = image.spatial_shape
        if roi_size is not None:
            roi = tuple(min(_round_up(r, divisor), _round_up(s, divisor)) for r, s in zip(roi_size, spatial))
        elif whole:  # a fixed filter: whatever patches the run's data names
            roi = tuple(_round_up(s, divisor) for s in spatial)
        else:
            roi = default_roi(spatial, divisor, patch_size)
        logits = sliding_window_predict(model, torch.from_numpy(image.array)[None], roi, overlap,
                                        sw_batch_size=sw_batch_size, device=device, divisible_by=divisor)[0]
        probability, mask, used = _masks(_class_probabilities(logits), threshold)
        del logits

        nifti = dims == 3 or suffix_of(path) in NIFTI_SUFFIXES
        files_written: dict[str, str | None] = {"diff": None}
        files_written.update(write_case(out, cid, image.array, probability, mask, image.spacing, image.affine, nifti,
                                        {"": ref.array} if ref is not None else {}, mip_axis))
        dice: float | None = None
        per_class: list[float | None] | None = None
        if ref is not None:
            dice = _dice(mask > 0, ref.array > 0)
            if trained.num_classes > 2:
                per_class = [_dice(mask == k, ref.array == k) for k in range(1, trained.num_classes)]

        seconds = time.perf_counter() - start
        entry: dict[str, Any] = {
            "id": cid, "input": str(path), **files_written,
            "reference": str(references[cid]) if cid in references else None,
            "threshold": used, "shape": list(spatial), "spacing": [float(s) for s in image.spacing],
            "roi_size": list(roi), "overlap": float(overlap), "foreground_voxels": int((mask > 0).sum()),
            "seconds": round(seconds, 3),
        }
        if reference is not None:
            entry["dice"] = dice
            if per_class is not None:
                entry["dice_per_class"] = per_class
        entries.append(entry)
        _write_index(out, trained, entries)  # after every case, so an error later keeps what is done
        score = f", Dice {dice:.4f}" if dice is not None else (", no reference" if reference is not None else "")
        report(f"[{number}/{len(files)}] {cid} {'x'.join(map(str, spatial))}: {seconds:.1f} s, "
               f"{entry['foreground_voxels']} foreground {'voxels' if dims == 3 else 'pixels'}{score}")
    return entries


def _write_index(out: Path, trained: Any, entries: list[dict[str, Any]]) -> Path:
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
        "run": str(getattr(trained, "run_dir", "")), "checkpoint": str(getattr(trained, "checkpoint", "")),
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
    and their mean and std, per reference. Returns the path of ``segmentation.json``."""
    from labelwise.evaluate_segmentation import SCORE_NAMES, summarize_cases, to_json
    from labelwise.metrics.surface import segmentation_scores

    folder = Path(folder)
    scores: dict[str, list[dict[str, Any]]] = {"label": [], "truth": []}
    figures = []
    for i, case in enumerate(volumes.cases):
        spacing, affine = volumes.spacings[i], volumes.affines[i]
        mask = predictions["prediction"][i].cpu().numpy()
        probability = predictions["probability"][i].cpu().numpy().astype(np.float32)
        references = {"label": volumes.target[i].cpu().numpy() if bool(volumes.labelled[i]) else None,
                      "truth": read_volume(case.truth, mask=True).array if case.truth is not None else None}
        references = {name: reference for name, reference in references.items() if reference is not None}
        for name, reference in references.items():
            if reference.shape != mask.shape:
                raise DataError(f"{case.id}: the {name} mask has shape {reference.shape}, the image {case.image} "
                                f"{mask.shape}")
            scores[name].append({"id": case.id, **segmentation_scores(mask > 0, reference > 0, spacing)})
        nifti = mask.ndim == 3 or suffix_of(case.image) in NIFTI_SUFFIXES
        files = write_case(folder, case.id, volumes.image[i].float().cpu().numpy(), probability, mask, spacing,
                           affine, nifti, references)
        entry = {"id": case.id, **{key: value for key, value in files.items() if key.startswith(("mip", "diff"))}}
        figures.append(entry)
    result = {"scores": list(SCORE_NAMES), "figures": figures,
              "references": {name: {"cases": cases, **summarize_cases(cases)}
                             for name, cases in scores.items() if cases}}
    path = folder / "segmentation.json"
    atomic_write(path, to_json(result))
    return path
