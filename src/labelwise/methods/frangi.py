"""``method: frangi``: the classical baseline of vessel segmentation, multi-scale Frangi vesselness and a threshold.

Nothing is learnt by gradient descent. With ``threshold: tuned`` (the default) the one step of "training" picks the
vesselness threshold that maximises the mean Dice against the labelled training cases (among quantiles of
their positive vesselness and evenly spaced values); ``otsu`` thresholds every image by Otsu's method; a number is
used as it is. The network is :class:`Vesselness`, so a frangi run predicts, is evaluated and is reported like any
other run."""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from labelwise.errors import ConfigError
from labelwise.filters.vesselness import otsu_threshold, vesselness
from labelwise.methods.base import Method
from labelwise.metrics.segmentation import dice

_EPS = 1e-6


class FrangiOptions(BaseModel):
    """Options of ``method: frangi``."""

    model_config = ConfigDict(extra="forbid")
    sigmas: list[float] = Field([0.5, 1.0, 1.5, 2.0, 3.0], min_length=1, description="vessel scales, in voxels")
    threshold: Literal["tuned", "otsu"] | float = "tuned"
    ridges: Literal["bright", "dark"] = Field(
        "bright",
        description="bright vessels (angiography) or dark ones (fundus photographs): dark inverts the image first",
    )
    candidates: int = Field(
        64,
        ge=2,
        description="tuned: thresholds tried (as many quantiles of the positive "
        "vesselness and as many evenly spaced values)",
    )


class Vesselness(nn.Module):
    """Frangi vesselness (:func:`labelwise.filters.vesselness.vesselness`; bright vessels, or dark ones inverted) as a
    segmenter:
    ``(B, C, *spatial)`` -> logits ``(B, 1, *spatial)`` = logit(v) - logit(threshold), so that a probability above
    0.5 means a vesselness above the threshold (the channels are averaged first). ``threshold`` < 0 means Otsu's
    threshold of each image's vesselness. The vesselness map passes through the identity module ``response``, the
    layer Grad-CAM explains (the filter has no learnt layers: its map is where the filter responds)."""

    threshold: torch.Tensor  # a buffer (saved with the weights)

    def __init__(self, sigmas: list[float], dark: bool = False):
        super().__init__()
        self.sigmas, self.dark = [float(s) for s in sigmas], dark
        self.register_buffer("threshold", torch.tensor(-1.0, dtype=torch.float64))
        self.response = nn.Identity()

    def vesselness(self, image: torch.Tensor, spacing: tuple[float, ...] | None = None) -> np.ndarray:
        """Vesselness in [0, 1] of one image ``(C, *spatial)`` of voxel ``spacing`` (None: isotropic; the scales are
        in voxels of its finest axis, see :func:`labelwise.filters.vesselness.vesselness`)."""
        grey = image.detach().float().mean(0).cpu().numpy()
        return vesselness(grey, spacing=spacing, sigmas=self.sigmas, bright=not self.dark)

    def forward(self, x: torch.Tensor, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
        maps, limits = [], []
        for image in x:
            v = self.vesselness(image, spacing).astype(np.float64)
            t = float(self.threshold)
            maps.append(torch.from_numpy(v))
            limits.append(otsu_threshold(v) if t < 0 else t)
        v = self.response(torch.stack(maps).unsqueeze(1).to(x.device))
        limit = torch.tensor(limits, dtype=torch.float64, device=x.device).view(-1, *[1] * (v.ndim - 1))
        return (_logit(v) - _logit(limit)).float()


class Frangi(Method):
    """The Frangi vesselness baseline; see the module docstring."""

    name = "frangi"
    Options = FrangiOptions

    def __init__(self, config, data):
        super().__init__(config, data)
        if data.task != "segmentation" or data.num_classes != 2:
            raise ConfigError("method: frangi segments vessels: it needs binary masks (data.task: segmentation)")
        self.networks["model"] = Vesselness(self.options.sigmas, dark=self.options.ridges == "dark")
        self.out_channels = 1
        threshold = self.options.threshold
        if isinstance(threshold, float) and not 0 < threshold < 1:
            raise ConfigError(f"method.threshold: a vesselness threshold lies in (0, 1), got {threshold}")
        if isinstance(threshold, float):
            self.networks["model"].threshold.fill_(threshold)

    def predict(self, image: torch.Tensor, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
        return self.networks["model"](image, spacing)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The first step tunes the threshold (``tuned``); the loss logged is 1 - the training Dice it reaches."""
        model = self.networks["model"]
        model = cast(Vesselness, getattr(model, "module", model))  # unwrapped from Fabric's wrapper, if any
        if self.options.threshold != "tuned" or self.step > 0:
            return {"loss": torch.zeros(())}
        volumes = getattr(self.data.split("train"), "volumes", self.data.split("train"))
        maps, masks = [], []
        spacings = getattr(volumes, "spacings", [None] * len(volumes))
        for image, target, labelled, spacing in zip(volumes.image, volumes.target, _labelled(volumes), spacings):
            if labelled:
                maps.append(model.vesselness(image, spacing))
                masks.append(target.numpy() > 0)
        every = np.concatenate([m.reshape(-1) for m in maps])
        positive = every[every > 0]
        n = self.options.candidates
        quantiles = np.quantile(positive, np.linspace(0, 0.999, n)) if positive.size else np.empty(0)
        candidates = np.unique(np.concatenate([quantiles, np.linspace(0.01, 0.99, n)]))
        candidates = candidates[(candidates > 0) & (candidates < 1)]
        if candidates.size == 0:
            raise ConfigError("method: frangi found no vesselness response on the training cases")
        truth = [torch.from_numpy(y)[None] for y in masks]
        scores = [_mean_dice([torch.from_numpy(m > t)[None] for m in maps], truth) for t in candidates]
        best = int(np.argmax(scores))
        model.threshold.fill_(float(candidates[best]))
        return {"loss": torch.tensor(1.0 - scores[best])}


def _labelled(volumes) -> list[bool]:
    labelled = getattr(volumes, "labelled", None)
    return labelled.tolist() if labelled is not None else [True] * len(volumes.image)


def _mean_dice(predictions: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    """Mean foreground Dice over cases (:func:`labelwise.metrics.segmentation.dice`: a case with both masks empty is
    left out); 0 when every case is empty."""
    values = torch.cat([dice(p, t, num_classes=2)[:, 0] for p, t in zip(predictions, truths)])
    return float(torch.nanmean(values)) if bool(torch.isfinite(values).any()) else 0.0


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)
