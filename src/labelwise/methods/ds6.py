"""``method: ds6``: deformation-aware semi-supervised segmentation (Chatterjee et al., "DS6, Deformation-aware
Semi-supervised Learning: Application to Small Vessel Segmentation with Noisy Training Data", J. Imaging 2022).

Each step draws one random smooth elastic deformation ``T`` for the batch (:class:`labelwise.augment.RandomElastic`,
a cubic B-spline field with locked borders) and minimises::

    w_sup * MSS(f(x), y) + w_deformed * MSS(f(Tx), Ty) + w_consistency * FT(f(Tx), sigmoid(T f(x)))

MSS is the multi-scale Focal Tversky loss of the U-Net MSS outputs (weights 1, 0.66, 0.34), FT the Focal Tversky
loss of the full-resolution output against a soft target. The first two terms use the labelled samples of the batch
only; unlabelled cases (an empty ``label`` in the manifest) contribute the consistency term only: that is the
semi-supervised part. ``baseline_steps`` first trains the plain U-Net MSS for that many steps, then switches the
deformation terms on: the paper's two-stage recipe (train the baseline, fine-tune with deformation) in one config.

Partial and soft labels: voxels without a label (``data.ignore``, a manifest's ``ignore`` column) count in none of
the three terms (the deformed term sees them where ``T`` moved them); a ``weight`` column's weights and soft labels
(``data.soft_labels``, ``data.raters: mean``) enter the two supervised terms, moved by ``T`` like the mask.

Beyond the paper (each an option, the paper's choice the default until a benchmark says otherwise):

- ``loss: dice_ce``: softmax outputs with Dice + cross-entropy for the two supervised terms and the soft Dice +
  cross-entropy against the warped softmax for the consistency term (:func:`labelwise.losses.soft_dice_ce_loss`).
- ``teacher: ema``: the consistency target comes from a teacher whose weights are the moving average of the
  student's (``ema_decay``), not from the student itself: a steadier target that does not chase its own errors.
- ``consistency_rampup``: the consistency weight rises over that many steps (sigmoid ramp, as in mean teacher)
  after the deformation starts, so an untrained network is not asked to agree with itself.
- ``confidence``: the consistency term counts only voxels whose target's largest class probability reaches it.
- ``consistency: ce``: the consistency term is the cross-entropy against the (detached) warped probabilities
  (:func:`labelwise.losses.soft_cross_entropy`) instead of the training loss. Focal Tversky or Dice against a
  network's own soft output pushes every voxel above about 0.3 towards foreground, step after step (a slow dilation
  that unlabelled images, which have no supervised term to stop it, show most); cross-entropy's gradient is zero
  where the prediction equals the target."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from labelwise.augment import RandomElastic, warp
from labelwise.augment.pipeline import stack_maps, unstack_maps
from labelwise.data.patches import MAPS
from labelwise.errors import ConfigError
from labelwise.losses import focal_tversky_loss, soft_cross_entropy, soft_dice_ce_loss
from labelwise.methods.base import ema_update, frozen_copy, warmed_decay
from labelwise.methods.semi import ramp_up
from labelwise.methods.supervised import Supervised, SupervisedOptions
from labelwise.metrics.surface import IGNORE


class DS6Options(SupervisedOptions):
    """Options of ``method: ds6`` (besides those of ``supervised``)."""

    weights: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="supervised, deformed, consistency")
    spacing: tuple[float, float] = Field((5.0, 7.0), description="B-spline control-point spacing range (voxels)")
    magnitude: tuple[float, float] = Field((0.01, 0.03), description="largest displacement range, [-1, 1] units")
    baseline_steps: int = Field(0, ge=0, description="steps of plain supervised training before deformation starts")
    detach_consistency_target: bool = Field(False, description="stop the gradient through sigmoid(T f(x))")
    teacher: Literal["self", "ema"] = Field(
        "self", description="consistency target from the student itself (paper) or from its moving average"
    )
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="teacher: ema: teacher = decay * teacher + (1 - decay) * student"
    )
    consistency_rampup: int = Field(
        0,
        ge=0,
        description="steps of the sigmoid ramp-up of the consistency weight, counted from the start of the deformation",
    )
    confidence: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="consistency only where the target's largest class probability is at least this (0: everywhere)",
    )
    consistency: Literal["loss", "ce"] = Field(
        "loss",
        description="consistency term: the training loss against the "
        "soft target (paper) or cross-entropy against the detached target",
    )


class DS6(Supervised):
    """U-Net MSS (or any segmenter) trained with DS6's deformation-aware losses; see the module docstring."""

    name = "ds6"
    Options = DS6Options
    uses_unlabelled = True
    honours_ignore = True  # voxels without a label count in none of the three terms; weights and soft labels in the two
    # supervised ones

    def __init__(self, config, data):
        super().__init__(config, data)
        if self.loss_name not in ("focal_tversky", "dice_ce"):
            raise ConfigError(
                "method.loss: ds6 trains with focal_tversky (one sigmoid channel, the paper) or "
                f"dice_ce (softmax); got {self.loss_name}"
            )
        o = self.options
        if o.self_correct is not None:
            raise ConfigError("method.self_correct: only supervised corrects its masks while training; ds6 does not")
        if min(o.weights) < 0 or o.spacing[0] > o.spacing[1] or o.magnitude[0] > o.magnitude[1]:
            raise ConfigError("method: weights must be >= 0, spacing and magnitude (low, high) ranges")
        self.elastic = RandomElastic(spacing=o.spacing, magnitude=o.magnitude, generator=None)
        if o.teacher == "ema":
            self.networks["teacher"] = frozen_copy(self.networks["model"])

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o, model = self.options, self.networks["model"]
        # the config's augmentation first (data.raters: sample: then a rater drawn), then DS6's own deformation
        batch = self.rater_target(self.augment_batch(batch))
        x, y = batch["image"], batch["target"]
        labelled = batch.get("labelled", torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
        outputs = model(x)
        full = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        zero = full.sum() * 0  # keeps the graph when a term is empty
        names = [name for name in MAPS if name in batch]  # a weight column, soft labels
        supervised = self._labelled_loss(outputs, y, labelled, zero, {n: batch[n] for n in names})
        if self.step < o.baseline_steps:  # the other terms logged as 0, so every step logs the same keys
            return {
                "loss": supervised,
                "supervised": supervised.detach(),
                "deformed": zero.detach(),
                "consistency": zero.detach(),
            }
        # one deformation for the batch, drawn from the global RNG (seeded per step by the engine)
        if names:  # the maps move with the mask (nearest neighbour: values kept)
            (x_t, moved), field = self.elastic(
                x, stack_maps(y, [batch[n] for n in names]), modes=("bilinear", "nearest")
            )
            y_t, moved_maps = unstack_maps(moved, y.dtype, [batch[n] for n in names])
            maps_t = dict(zip(names, moved_maps))
        else:
            (x_t, y_t), field = self.elastic(x, y.unsqueeze(1))
            y_t, maps_t = y_t.squeeze(1), {}
        outputs_t = model(x_t)
        full_t = outputs_t[0] if isinstance(outputs_t, (tuple, list)) else outputs_t
        deformed = self._labelled_loss(outputs_t, y_t, labelled, zero, maps_t)
        if o.teacher == "ema":
            with torch.no_grad():
                source = self.networks["teacher"](x)
                source = source[0] if isinstance(source, (tuple, list)) else source
        else:
            source = full
        target = self._probabilities(warp(source, field))
        if o.detach_consistency_target or o.consistency == "ce":
            target = target.detach()
        weight = None
        if o.confidence > 0:
            sure = torch.maximum(target, 1 - target) if target.shape[1] == 1 else target.max(1, keepdim=True).values
            weight = (sure >= o.confidence).to(target.dtype).detach()
        unlabelled = (y_t == IGNORE).unsqueeze(1)  # voxels without a label: out of the consistency term too
        if bool(unlabelled.any()):
            kept = (~unlabelled).to(target.dtype)
            weight = kept if weight is None else weight * kept
        if o.consistency == "ce":
            consistency = soft_cross_entropy(full_t, target, weight)
        elif self.loss_name == "dice_ce":
            consistency = soft_dice_ce_loss(full_t, target, weight)
        else:
            consistency = focal_tversky_loss(full_t, target, alpha=o.alpha, beta=o.beta, gamma=o.gamma, weight=weight)
        w = o.weights
        ramp = ramp_up(self.step - o.baseline_steps, o.consistency_rampup)
        loss = w[0] * supervised + w[1] * deformed + w[2] * ramp * consistency
        return {
            "loss": loss,
            "supervised": supervised.detach(),
            "deformed": deformed.detach(),
            "consistency": consistency.detach(),
        }

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.loss_name == "focal_tversky" else torch.softmax(logits, dim=1)

    @torch.no_grad()
    def after_step(self) -> None:
        if self.options.teacher == "ema":
            ema_update(
                self.networks["model"], self.networks["teacher"], warmed_decay(self.options.ema_decay, self.step)
            )

    def _labelled_loss(
        self,
        outputs,
        target: torch.Tensor,
        labelled: torch.Tensor,
        zero: torch.Tensor,
        maps: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        if not bool(labelled.any()):
            return zero
        if not bool(labelled.all()):
            pick = labelled.nonzero().squeeze(1)
            outputs = tuple(o[pick] for o in outputs) if isinstance(outputs, (tuple, list)) else outputs[pick]
            target, maps = target[pick], {n: m[pick] for n, m in maps.items()}
        return self.segmentation_loss(outputs, target, maps.get("weight"), maps.get("soft"))
