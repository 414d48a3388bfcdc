"""Report figures drawn with matplotlib's object API (Agg, no pyplot state); each returns PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

MAX_SAMPLES = 8
# Mask classes 1..K get these colours in turn (class 0, background, is left transparent).
MASK_COLOURS = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
]
_RESERVED = {"step", "split", "time"}


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None for null, NaN, booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over ``records``, skipping lines without a finite value or step."""
    steps, values = [], []
    for record in records:
        step, value = _number(record.get("step")), _number(record.get(key))
        if step is not None and value is not None:
            steps.append(step)
            values.append(value)
    return steps, values


def _keys(records: list[dict], keep) -> list[str]:
    """Metric names in ``records`` passing ``keep``, in first-seen order."""
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            if key not in _RESERVED and keep(key):
                seen.setdefault(key, None)
    return list(seen)


def loss_curves_png(records: list[dict]) -> bytes | None:
    """Train loss (and each ``loss/<term>``) against step, plus val metrics in a second panel; None
    without train records."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    loss_keys = [k for k in _keys(train, lambda k: k == "loss" or k.startswith("loss/")) if _series(train, k)[0]]
    if not loss_keys:
        return None
    val_loss = _series(val, "loss")
    val_keys = [k for k in _keys(val, lambda k: k != "loss") if _series(val, k)[0]]

    fig = Figure(figsize=(11 if val_keys else 6.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 2 if val_keys else 1, squeeze=False)[0]
    ax = axes[0]
    all_values = []
    for key in loss_keys:
        steps, values = _series(train, key)
        all_values += values
        main = key == "loss"
        ax.plot(
            steps,
            values,
            label=f"train {key}",
            linewidth=1.8 if main else 1.1,
            alpha=1.0 if main else 0.8,
            marker="o" if len(steps) == 1 else None,
        )
    if val_loss[0]:
        all_values += val_loss[1]
        ax.plot(*val_loss, label="val loss", linestyle="--", marker="o", markersize=3, color="black")
    if all_values and min(all_values) > 0 and max(all_values) / min(all_values) > 30:
        ax.set_yscale("log")
    ax.set(title="Training loss", xlabel="step", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    if val_keys:
        ax = axes[1]
        for key in val_keys:
            per_class = "/" in key
            ax.plot(
                *_series(val, key),
                label=key,
                marker="o",
                markersize=2 if per_class else 3,
                linewidth=0.9 if per_class else 1.6,
                alpha=0.7 if per_class else 1.0,
            )
        ax.set(title="Validation metrics", xlabel="step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncols=2 if len(val_keys) > 6 else 1)
    return _png(fig)


def _as_str(value: np.ndarray | None) -> str:
    """A 0-d (or 1-element) string array as ``str``; '' when absent."""
    if value is None:
        return ""
    value = np.asarray(value)
    return str(value.reshape(-1)[0]) if value.size else ""


def _class_label(index: int, names: list[str]) -> str:
    """Class ``index`` by its name when ``names`` has one."""
    return names[index] if 0 <= index < len(names) else str(index)


def _normalise(image: np.ndarray) -> np.ndarray:
    """Scale a 2D image to [0, 1] by its 1st and 99th percentiles (robust to outliers)."""
    image = np.nan_to_num(image.astype(np.float32))
    low, high = np.percentile(image, [1, 99])
    if high <= low:
        high = low + 1.0
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _mask_overlay(ax, mask: np.ndarray, num_classes: int, contour: bool) -> None:
    """Draw class-index ``mask`` (0 = background) on ``ax`` as a translucent fill, optionally with contours."""
    cmap = ListedColormap([MASK_COLOURS[i % len(MASK_COLOURS)] for i in range(max(num_classes, 1))])
    shown = np.ma.masked_where(mask <= 0, mask - 1)
    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=max(num_classes, 1) - 0.5, alpha=0.45, interpolation="nearest")
    if contour:
        for c in np.unique(mask):
            if c > 0:
                ax.contour(
                    (mask == c).astype(float),
                    levels=[0.5],
                    linewidths=1.2,
                    colors=[MASK_COLOURS[(int(c) - 1) % len(MASK_COLOURS)]],
                )


def _slice(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """The middle slice along D of a 3D spatial array (trailing dims D, H, W); 2D arrays unchanged."""
    return array[..., array.shape[-3] // 2, :, :] if spatial_dims == 3 else array


def _label_set(row: np.ndarray, names: list[str]) -> str:
    """The labels set in a 0/1 row, by name (``-`` when none)."""
    present = [names[k] if k < len(names) else str(k) for k in np.flatnonzero(np.asarray(row) > 0)]
    return ", ".join(present) if present else "-"


def samples_png(samples: dict[str, np.ndarray]) -> bytes | None:
    """A grid of up to 8 test samples: classification images titled true/pred (red when wrong), or
    segmentation images with the target and the predicted mask side by side; None without samples."""
    image = samples.get("image")
    target, prediction = samples.get("target"), samples.get("prediction")
    if image is None or target is None or prediction is None or len(image) == 0:
        return None
    image, target, prediction = np.asarray(image), np.asarray(target), np.asarray(prediction)
    if image.ndim == 3:  # (N, H, W) without a channel axis
        image = image[:, None]
    if image.ndim not in (4, 5):
        raise ValueError(f"samples image must be (N, C, H, W) or (N, C, D, H, W), got shape {image.shape}")
    n = min(len(image), len(target), len(prediction), MAX_SAMPLES)
    if n == 0:
        return None
    task = _as_str(samples.get("task")) or ("classification" if prediction.ndim == 1 else "segmentation")
    names = [str(c) for c in np.asarray(samples.get("class_names", []), dtype=str).reshape(-1)]
    spatial_dims = image.ndim - 2
    depth = image.shape[2] if spatial_dims == 3 else 0
    where = f" (middle slice, z = {depth // 2} of {depth})" if depth else ""
    grey = [_normalise(_slice(image[i, 0], spatial_dims)) for i in range(n)]

    if task == "classification":
        cols = min(n, 4)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(2.6 * cols, 2.8 * rows + 0.3), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i >= n:
                continue
            ax.imshow(grey[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if target.ndim == 2:  # multi-label: the labels present, true and predicted
                true_set, pred_set = _label_set(target[i], names), _label_set(prediction[i], names)
                title, right = f"true: {true_set}\npred: {pred_set}", true_set == pred_set
            else:
                true, pred = int(target[i]), int(prediction[i])
                title, right = f"true: {_class_label(true, names)} / pred: {_class_label(pred, names)}", true == pred
            ax.set_title(title, fontsize=9, color="#1a7f37" if right else "#cf222e")
        if where:
            fig.suptitle(f"Test samples{where}", fontsize=11)
        return _png(fig)

    # segmentation: masks are class indices 0..K; class_names name the foreground classes 1..K
    masks = [_slice(target[i], spatial_dims).astype(int) for i in range(n)]
    preds = [_slice(prediction[i], spatial_dims).astype(int) for i in range(n)]
    num_classes = int(max(max(m.max() for m in masks), max(p.max() for p in preds), len(names)))
    pairs = min(n, 4)
    rows = math.ceil(n / pairs)
    fig = Figure(figsize=(2.3 * 2 * pairs, 2.5 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 2 * pairs, squeeze=False)
    for ax in axes.reshape(-1):
        ax.set_axis_off()
    for i in range(n):
        left, right = axes[i // pairs, 2 * (i % pairs)], axes[i // pairs, 2 * (i % pairs) + 1]
        for ax, mask, label in ((left, masks[i], "target"), (right, preds[i], "prediction")):
            ax.imshow(grey[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            _mask_overlay(ax, mask, num_classes, contour=label == "target")
            ax.set_title(f"#{i} {label}", fontsize=10)
    handles = [
        Patch(
            color=MASK_COLOURS[(c - 1) % len(MASK_COLOURS)],
            alpha=0.6,
            label=names[c - 1] if c - 1 < len(names) else f"class {c}",
        )
        for c in range(1, num_classes + 1)
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=10, frameon=False)
    fig.suptitle(f"Test samples{where}: target (fill + contour) | prediction", fontsize=12)
    return _png(fig)


def reliability_png(calibration: dict[str, dict[str, Any]]) -> bytes | None:
    """Reliability diagram of the test voxels' foreground probability, one line per reference (``{name:
    segmentation.json's calibration}``: mean probability against foreground rate per bin, the diagonal being
    perfect calibration), ECE in the legend; None when no bin holds a voxel."""
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfectly calibrated")
    drawn = False
    for name, found in calibration.items():
        pairs = [
            (p, r)
            for p, r in zip(found.get("mean_probability") or [], found.get("foreground_rate") or [])
            if _number(p) is not None and _number(r) is not None
        ]
        if not pairs:
            continue
        ece = _number(found.get("ece"))
        ax.plot(*zip(*pairs), marker="o", label=f"vs {name}" + (f" (ECE {ece:.3f})" if ece is not None else ""))
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("predicted foreground probability (bin mean)")
    ax.set_ylabel("foreground rate in the reference")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _png(fig)
