"""Sliding-window inference: a network over inputs of any size, by overlapping windows blended with a Gaussian
weight (MONAI's :func:`monai.inferers.sliding_window_inference`, reproduced here), windows rounded up to a size the
network takes.

Training's end-of-run predictions (:meth:`labelwise.methods.Method.predict`) and ``labelwise predict`` both go
through :func:`sliding_window_predict`. It does not import MONAI: importing any part of MONAI loads all of it
(seconds, more than ``import torch``), which a cold ``labelwise predict`` of labelwise's own networks should not pay.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelwise.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_ROI",
    "PADDING_MODES",
    "blend_windows",
    "importance_map",
    "window_starts",
    "default_roi",
    "model_divisor",
    "round_up",
    "sizes",
    "sliding_window_predict",
    "whole_image_model",
]

PADDING_MODES = ("constant", "reflect", "replicate", "circular")  # torch's, for inputs smaller than the window
DEFAULT_ROI = {2: 256, 3: 64}  # window side when neither the caller nor the run's data.patch_size gives one


def model_divisor(model: nn.Module) -> int:
    """The number every spatial size of ``model``'s input must be a multiple of: a ``divisor`` attribute
    (UNetMSS: 16), a MONAI UNet's product of strides, 16 for MONAI's BasicUNet, else 1. Wrapped networks
    are searched (the first known one found)."""
    # A MONAI network in ``model`` means its module is imported: MONAI is not imported to look for one.
    nets = sys.modules.get("monai.networks.nets")
    UNet, BasicUNet = (nets.UNet, nets.BasicUNet) if nets is not None else ((), ())
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


def round_up(n: int, divisor: int) -> int:
    """The smallest multiple of ``divisor`` that is >= ``n``."""
    return -(-int(n) // divisor) * divisor


def sizes(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    """``value`` (one size, or one per axis) as ``dims`` positive sizes; a ConfigError naming ``name`` otherwise."""
    values = (value,) * dims if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != dims or any(isinstance(s, bool) or int(s) != s or s < 1 for s in values):
        raise ConfigError(f"{name}: expected one positive size or {dims} of them, got {value!r}")
    return tuple(int(s) for s in values)


def default_roi(
    spatial_shape: Sequence[int], divisor: int = 1, patch_size: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The window for an input of ``spatial_shape``: ``patch_size`` (the run's training patches) if given,
    else per axis the whole extent up to :data:`DEFAULT_ROI` (64 in 3D, 256 in 2D); each side is then rounded up
    to a multiple of ``divisor`` and kept no larger than the extent rounded up so."""
    dims = len(spatial_shape)
    wanted = sizes(patch_size, dims, "roi size") if patch_size is not None else (DEFAULT_ROI.get(dims, 64),) * dims
    return tuple(min(round_up(w, divisor), round_up(s, divisor)) for w, s in zip(wanted, spatial_shape))


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
    (``padding_mode``, one of :data:`PADDING_MODES`) and the result cropped back. ``overlap`` in [0, 1): the share
    of a window shared with its neighbour; ``mode`` "gaussian" or "constant" blending. Blended as MONAI's
    ``sliding_window_inference`` does (:func:`blend_windows`; MONAI itself for a network whose outputs are not of
    its input's size).
    Runs under ``torch.no_grad`` with the model in eval mode (its mode is restored); windows go to ``device``
    (default: where the model's parameters are; the model is moved there if another device is given), the
    stitched logits come back on the image's device as float32."""
    if not isinstance(image, torch.Tensor) or image.ndim not in (4, 5):
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise DataError(f"sliding window: image must be a (B, C, H, W) or (B, C, D, H, W) tensor, got {shape}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"overlap: expected a value in [0, 1), got {overlap}")
    if mode not in ("gaussian", "constant"):
        raise ConfigError(f"mode: expected 'gaussian' or 'constant', got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ConfigError(f"padding_mode: expected one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
    spatial = tuple(image.shape[2:])
    divisor = model_divisor(model) if divisible_by is None else int(divisible_by)
    if divisor < 1:
        raise ConfigError(f"divisible_by: expected a positive int, got {divisible_by}")
    if roi_size is None:
        whole = whole_image_model(model)
        roi = tuple(round_up(s, divisor) for s in spatial) if whole else default_roi(spatial, divisor)
    else:
        roi = tuple(
            min(round_up(r, divisor), round_up(s, divisor))
            for r, s in zip(sizes(roi_size, len(spatial), "roi size"), spatial)
        )
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
            arguments = (roi, sw_batch_size, predictor, float(overlap), mode, padding_mode, device, image.device)
            logits: object = blend_windows(image.float(), *arguments)
            if logits is None:  # outputs of another size than their windows: MONAI scales them
                from monai.inferers import sliding_window_inference

                logits = sliding_window_inference(
                    image.float(),
                    roi,
                    sw_batch_size,
                    predictor,
                    overlap=float(overlap),
                    mode=mode,
                    padding_mode=padding_mode,
                    sw_device=device,
                    device=image.device,
                )
    finally:
        model.train(was_training)
    if hasattr(logits, "as_tensor"):  # a MONAI MetaTensor
        logits = logits.as_tensor()
    return cast(torch.Tensor, logits)  # predictor returns one tensor, so MONAI does


def importance_map(roi: Sequence[int], mode: str, device: torch.device, sigma_scale: float = 0.125) -> torch.Tensor:
    """The weight of each position of a window, as MONAI's ``compute_importance_map``: ones ("constant"), or a
    Gaussian of sigma ``sigma_scale`` x the side per axis ("gaussian"); clamped below at its minimum or 1e-3."""
    if mode == "constant":
        weight = torch.ones(tuple(roi), device=device, dtype=torch.float)
    else:
        for i, side in enumerate(roi):
            x = torch.arange(start=-(side - 1) / 2.0, end=(side - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * (side * sigma_scale) ** 2))
            weight = weight.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    return torch.clamp_(weight, min=max(torch.min(weight).item(), 1e-3))


def window_starts(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """The first corner of every window of ``roi`` over ``image_size`` (each side >= the window's), in MONAI's
    order (the last axis fastest): a stride of ``int(side * (1 - overlap))`` (at least 1; the side itself where the
    window spans the axis), the last window moved back to end at the image's edge."""
    per_axis = []
    for size, side in zip(image_size, roi):
        step = side if side == size else max(int(side * (1 - overlap)), 1)
        count = next((d + 1 for d in range(math.ceil(size / step)) if d * step + side >= size), 1)
        per_axis.append([i * step - max(i * step + side - size, 0) for i in range(count)])
    return list(itertools.product(*per_axis))


def blend_windows(
    image: torch.Tensor,
    roi: Sequence[int],
    sw_batch_size: int,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: float,
    mode: str,
    padding_mode: str,
    sw_device: torch.device,
    device: torch.device,
) -> torch.Tensor | None:
    """MONAI's ``sliding_window_inference`` of ``predictor`` (one tensor out) over ``image`` ``(B, C, *spatial)``,
    the same operations in the same order, so the same numbers: the image padded (half before, half after; the
    window's size at least) where it is smaller than the window, ``sw_batch_size`` windows per call (windows of
    every image of the batch in turn), each output weighted by :func:`importance_map` and summed, the sum divided
    by the summed weights, the padding cropped off. None where ``predictor``'s outputs are not of the window's size
    (MONAI scales them; the caller falls back to it)."""
    batch, spatial = image.shape[0], tuple(image.shape[2:])
    before = [max(r - s, 0) // 2 for r, s in zip(roi, spatial)]
    after = [max(r - s, 0) - b for r, s, b in zip(roi, spatial, before)]
    if any(before) or any(after):  # F.pad's order: the last axis first
        pad = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
        image = F.pad(image, pad, mode=padding_mode, value=0.0)
    image_size = tuple(max(s, r) for s, r in zip(spatial, roi))
    windows = [tuple(slice(a, a + r) for a, r in zip(start, roi)) for start in window_starts(image_size, roi, overlap)]
    weight = importance_map(roi, mode, sw_device).to(image.dtype)[None, None]
    output: torch.Tensor | None = None
    count = torch.zeros((1, 1, *image_size), dtype=image.dtype, device=device)
    total = len(windows) * batch
    for first in range(0, total, sw_batch_size):
        where = [
            (slice(i // len(windows), i // len(windows) + 1), slice(None), *windows[i % len(windows)])
            for i in range(first, min(first + sw_batch_size, total))
        ]
        if sw_batch_size > 1:
            x = torch.cat([image[w] for w in where]).to(sw_device)
        else:
            x = image[where[0]].to(sw_device)
        out = predictor(x)
        if tuple(out.shape[2:]) != tuple(roi):
            return None
        if output is None:
            output = torch.zeros((batch, out.shape[1], *image_size), dtype=image.dtype, device=device)
            weight_out = weight.to(device)
            for w in windows:
                count[(slice(None), slice(None)) + w] += weight_out
        out *= weight
        out = out.to(device)
        for w, o in zip(where, out):
            output[w] += o
    assert output is not None  # at least one window
    output /= count
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return output[(slice(None), slice(None)) + crop]
