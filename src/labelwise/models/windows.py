"""Sliding-window inference: a network over inputs of any size, by overlapping windows blended with a Gaussian
weight (MONAI's :func:`monai.inferers.sliding_window_inference`), windows rounded up to a size the network takes.

Training's end-of-run predictions (:meth:`labelwise.methods.Method.predict`) and ``labelwise predict`` both go
through :func:`sliding_window_predict`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from labelwise.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_ROI",
    "default_roi",
    "model_divisor",
    "round_up",
    "sizes",
    "sliding_window_predict",
    "whole_image_model",
]

DEFAULT_ROI = {2: 256, 3: 64}  # window side when neither the caller nor the run's data.patch_size gives one


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
