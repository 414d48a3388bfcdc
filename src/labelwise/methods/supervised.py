"""``method: supervised``: one network trained on labelled samples only (classification or segmentation)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from labelwise.data.raters import rater_label
from labelwise.errors import ConfigError
from labelwise.losses import MSS_WEIGHTS, dice_ce_loss, focal_tversky_loss, mss_loss, self_corrected_target
from labelwise.methods.base import Method
from labelwise.methods.semi import classification_loss
from labelwise.metrics.surface import IGNORE
from labelwise.models import build_model


class SupervisedOptions(BaseModel):
    """Options of ``method: supervised``."""

    model_config = ConfigDict(extra="forbid")
    loss: Literal["auto", "cross_entropy", "dice_ce", "focal_tversky"] = "auto"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    alpha: float = Field(0.7, ge=0, description="focal_tversky: weight of false negatives")
    beta: float = Field(0.3, ge=0, description="focal_tversky: weight of false positives")
    gamma: float = Field(0.75, gt=0, description="focal_tversky: focal exponent")
    mss_weights: tuple[float, float, float] = Field(MSS_WEIGHTS, description="unet_mss: full, 1/2, 1/4 outputs")
    threshold: float | Literal["otsu", "calibrate"] = Field(
        0.5,
        description="one-channel segmenters: p > threshold, or otsu; calibrate (binary masks, one or two "
        "channels): the threshold with the best mean Dice on the validation cases, chosen at the end of training",
    )
    calibration_tolerance: float = Field(
        0.005,
        ge=0,
        lt=1,
        description="threshold: calibrate: among the thresholds "
        "within this much of the best mean validation Dice, the one nearest 0.5",
    )
    temperature: Literal["fit", "none"] = Field(
        "none",
        description="segmentation: fit, divide the logits by the temperature with the lowest negative "
        "log-likelihood of the validation voxels, chosen at the end of training (calibrated probabilities; the "
        "argmax and the 0.5 threshold stay); none: 1",
    )
    isotonic: bool = Field(
        False,
        description="binary segmentation: map the foreground probability through the isotonic regression of the "
        "validation voxels' labels on it, fitted at the end of training (after temperature: fit and threshold: "
        "calibrate); the masks stay the network's own. Wants more validation cases than a temperature does",
    )
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window inference: overlap of the patches")
    tta: bool = Field(
        False,
        description="segmentation inference (end-of-run scores, predict): average the logits "
        "over the flips along every spatial axis (4 passes in 2D, 8 in 3D)",
    )
    scales: list[float] = Field(
        [1.0],
        min_length=1,
        description="binary segmentation inference (end-of-run scores, calibration, predict): predict each image "
        "also magnified by these factors (resampled linearly, the logits resampled back) and keep, per voxel, the "
        "view in which the foreground is likeliest, as a multi-scale filter keeps its strongest scale; structures "
        "too thin for the network at 1 are found magnified. [1.0]: off",
    )
    min_size: int = Field(
        0,
        ge=0,
        description="segmentation inference: remove connected components (per class) smaller than this many voxels",
    )
    self_correct: float | None = Field(
        None,
        gt=0.5,
        lt=1,
        description="binary masks: from self_correct_from of the steps on, a background pixel farther than "
        "self_correct_band pixels from the labelled foreground whose foreground probability (this step's forward "
        "pass) exceeds this becomes foreground in the loss (masks that leave structures out); null: off",
    )
    self_correct_from: float = Field(0.3, ge=0, lt=1, description="self_correct: share of the steps before it starts")
    self_correct_band: int = Field(
        3, ge=0, description="self_correct: pixels around the labelled foreground that are never changed"
    )


class Supervised(Method):
    """Plain supervised training on the labelled samples only: cross-entropy for classification (binary
    cross-entropy per label for multi-label data); Dice + cross-entropy (softmax over classes) or
    Focal Tversky (one sigmoid channel, binary masks; the default for ``unet_mss``) for segmentation. A U-Net MSS
    in train mode returns three full-size outputs, scored with weights ``mss_weights`` (DS6's 1, 0.66, 0.34)."""

    name = "supervised"
    Options = SupervisedOptions
    augments = True
    honours_ignore = True

    def __init__(self, config, data):
        super().__init__(config, data)
        loss = self.options.loss
        if loss == "auto":
            loss = (
                "cross_entropy"
                if data.task == "classification"
                else "focal_tversky"
                if config.model.name == "unet_mss"
                else "dice_ce"
            )
        if loss in ("dice_ce", "focal_tversky") and data.task != "segmentation":
            raise ConfigError(f"method.loss: {loss} is a segmentation loss but data.task is {data.task!r}")
        if loss == "focal_tversky" and data.num_classes != 2:
            raise ConfigError(
                f"method.loss: focal_tversky trains one sigmoid channel for binary masks; the data has "
                f"{data.num_classes} classes (use dice_ce)"
            )
        self.loss_name = loss
        self.out_channels = 1 if loss == "focal_tversky" else data.num_classes
        self.networks["model"] = build_model(
            config.model, data.spatial_dims, data.in_channels, self.out_channels, data.task, data.image_size
        )
        if self.options.self_correct is not None and (data.task != "segmentation" or data.num_classes != 2):
            raise ConfigError(
                f"method.self_correct: corrects binary masks (2 classes); the data has {data.num_classes} classes "
                f"({data.task})"
            )
        if min(self.options.scales) <= 0:
            raise ConfigError(f"method.scales: {self.options.scales}: magnifications must be positive")
        if self.options.scales != [1.0] and (data.task != "segmentation" or data.num_classes != 2):
            raise ConfigError(
                f"method.scales: {self.options.scales}: magnifies binary masks (2 classes); the data has "
                f"{data.num_classes} classes ({data.task})"
            )
        if self.options.threshold == "calibrate" and (data.task != "segmentation" or data.num_classes != 2):
            raise ConfigError(
                "method.threshold: calibrate chooses the threshold of binary masks (2 classes); the data "
                f"has {data.num_classes} classes ({data.task})"
            )
        if self.options.temperature == "fit" and data.task != "segmentation":
            raise ConfigError(
                "method.temperature: fit calibrates segmentation probabilities; the data is classification"
            )
        if self.options.isotonic and (data.task != "segmentation" or data.num_classes != 2):
            raise ConfigError(
                "method.isotonic: true recalibrates the foreground probability of binary masks (2 classes); the "
                f"data has {data.num_classes} classes ({data.task})"
            )
        self.fits_temperature = self.options.temperature == "fit"
        self.fits_isotonic = self.options.isotonic
        self.threshold, self.overlap = self.options.threshold, self.options.overlap
        self.calibration_tolerance = self.options.calibration_tolerance
        self.tta, self.min_size = self.options.tta, self.options.min_size
        self.scales = tuple(self.options.scales)
        self.window = list(config.data.patch_size) if config.data.patch_size else None  # predict: windows of a patch

    def self_corrected(
        self, outputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``target`` corrected by :func:`labelwise.losses.self_corrected_target` with the foreground probability of
        the full-size output of this step's forward pass."""
        logits = (outputs[0] if isinstance(outputs, (tuple, list)) else outputs).detach()
        foreground = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)[:, 1]
        o = self.options
        return self_corrected_target(foreground, target, o.self_correct, o.self_correct_band)

    def segmentation_loss(
        self,
        outputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        soft: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The configured loss of logits (a tensor, or U-Net MSS's tuple) against a label map ``(B, *spatial)``;
        voxels of label :data:`~labelwise.metrics.surface.IGNORE` (``data.ignore``, an ignore column) count in
        neither loss. ``weight`` ``(B, *spatial)``: per-voxel loss weights (a weight column); ``soft``
        ``(B, *spatial)``: the foreground probability trained against instead of the label (soft labels), or
        ``(B, K, *spatial)``: one probability per class."""
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        o = self.options
        if self.loss_name != "focal_tversky" and soft is None:  # hard labels: IGNORE is dice_ce_loss's own
            weights = None if weight is None else weight.unsqueeze(1)
            loss_fn = partial(dice_ce_loss, label_smoothing=o.label_smoothing, weight=weights)
            target = target.unsqueeze(1)
        else:  # IGNORE as a weight of 0, with the weight column's
            labelled = (target != IGNORE).unsqueeze(1)
            w = None if bool(labelled.all()) else labelled.float()
            if weight is not None:
                w = weight.unsqueeze(1).float() if w is None else w * weight.unsqueeze(1)
            if self.loss_name == "focal_tversky":
                loss_fn = partial(focal_tversky_loss, alpha=o.alpha, beta=o.beta, gamma=o.gamma, weight=w)
                target = (soft if soft is not None else target.clamp_min(0)).unsqueeze(1).float()
            else:  # soft labels as class probabilities (binary: background 1 - p; or one map per class)
                assert soft is not None
                loss_fn = partial(dice_ce_loss, label_smoothing=o.label_smoothing, weight=w)
                target = soft.float() if soft.ndim > target.ndim else torch.stack([1 - soft, soft], dim=1).float()
        if isinstance(outputs, (tuple, list)):  # a U-Net MSS's outputs: one weight each
            return mss_loss(outputs, target, loss_fn, o.mss_weights[: len(outputs)])
        return loss_fn(outputs, target)

    def rater_target(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``data.raters: sample``: the batch's target replaced by the labels of one of the case's raters, drawn for
        every sample at every step (the global RNG, seeded per step by the engine), from its ``votes`` map; voxels
        without a label stay so. Other batches are returned as they are."""
        votes = batch.get("votes")
        if votes is None:
            return batch
        fit = self.data.raters or {}
        raters, classes = int(fit.get("raters", 1)), int(fit.get("classes", 2))
        pick = torch.randint(raters, (votes.shape[0],), device=votes.device).view(-1, *[1] * (votes.ndim - 1))
        labels = rater_label(votes.long(), pick, classes)
        target = torch.where(batch["target"] == IGNORE, batch["target"], labels.to(batch["target"].dtype))
        return {**{k: v for k, v in batch.items() if k != "votes"}, "target": target}

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = self.rater_target(self.augment_batch(batch))
        outputs = self.networks["model"](batch["image"])
        target = batch["target"]
        if self.data.task == "segmentation":
            logs = {}
            o = self.options
            soft = batch.get("soft")
            if o.self_correct is not None and self.step >= o.self_correct_from * self.config.trainer.max_steps:
                target, changed = self.self_corrected(outputs, target)
                logs["corrected"] = changed.float().mean().detach()
                if soft is not None:  # a corrected pixel is foreground for sure
                    soft = torch.where(changed, torch.ones_like(soft), soft)
            return {"loss": self.segmentation_loss(outputs, target, batch.get("weight"), soft), **logs}
        return {"loss": classification_loss(outputs, target, self.data.multilabel, self.options.label_smoothing)}
