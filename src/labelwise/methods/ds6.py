"""``method: ds6``: deformation-aware semi-supervised segmentation (Chatterjee et al., "DS6, Deformation-aware
Semi-supervised Learning: Application to Small Vessel Segmentation with Noisy Training Data", J. Imaging 2022).

Each step draws one random smooth elastic deformation ``T`` for the batch (:class:`labelwise.augment.RandomElastic`,
a cubic B-spline field with locked borders) and minimises::

    w_sup * MSS(f(x), y) + w_deformed * MSS(f(Tx), Ty) + w_consistency * FT(f(Tx), sigmoid(T f(x)))

MSS is the multi-scale Focal Tversky loss of the U-Net MSS outputs (weights 1, 0.66, 0.34), FT the Focal Tversky
loss of the full-resolution output against a soft target. The first two terms use the labelled samples of the batch
only; unlabelled cases (an empty ``label`` in the manifest) contribute the consistency term only: that is the
semi-supervised part. ``baseline_steps`` first trains the plain U-Net MSS for that many steps, then switches the
deformation terms on: the paper's two-stage recipe (train the baseline, fine-tune with deformation) in one config."""

from __future__ import annotations

import torch
from pydantic import Field

from labelwise.augment import RandomElastic, warp
from labelwise.errors import ConfigError
from labelwise.losses import focal_tversky_loss
from labelwise.methods.supervised import Supervised, SupervisedOptions


class DS6Options(SupervisedOptions):
    """Options of ``method: ds6`` (besides those of ``supervised``)."""

    weights: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="supervised, deformed, consistency")
    spacing: tuple[float, float] = Field((5.0, 7.0), description="B-spline control-point spacing range (voxels)")
    magnitude: tuple[float, float] = Field((0.01, 0.03), description="largest displacement range, [-1, 1] units")
    baseline_steps: int = Field(0, ge=0, description="steps of plain supervised training before deformation starts")
    detach_consistency_target: bool = Field(False, description="stop the gradient through sigmoid(T f(x))")


class DS6(Supervised):
    """U-Net MSS (or any segmenter) trained with DS6's deformation-aware losses; see the module docstring."""

    name = "ds6"
    Options = DS6Options
    uses_unlabelled = True

    def __init__(self, config, data):
        super().__init__(config, data)
        if self.loss_name != "focal_tversky":
            raise ConfigError("method.loss: ds6 trains one sigmoid channel with Focal Tversky (binary masks); "
                              f"got {self.loss_name}")
        o = self.options
        if min(o.weights) < 0 or o.spacing[0] > o.spacing[1] or o.magnitude[0] > o.magnitude[1]:
            raise ConfigError("method: weights must be >= 0, spacing and magnitude (low, high) ranges")
        self.elastic = RandomElastic(spacing=o.spacing, magnitude=o.magnitude, generator=None)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o, model = self.options, self.networks["model"]
        batch = self.augment_batch(batch)  # the config's augmentation first, then DS6's own deformation
        x, y = batch["image"], batch["target"]
        labelled = batch.get("labelled", torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
        outputs = model(x)
        full = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        zero = full.sum() * 0  # keeps the graph when a term is empty
        supervised = self._labelled_loss(outputs, y, labelled, zero)
        if self.step < o.baseline_steps:  # the other terms logged as 0, so every step logs the same keys
            return {"loss": supervised, "supervised": supervised.detach(), "deformed": zero.detach(),
                    "consistency": zero.detach()}
        # one deformation for the batch, drawn from the global RNG (seeded per step by the engine)
        (x_t, y_t), field = self.elastic(x, y.unsqueeze(1))
        y_t = y_t.squeeze(1)
        outputs_t = model(x_t)
        full_t = outputs_t[0] if isinstance(outputs_t, (tuple, list)) else outputs_t
        deformed = self._labelled_loss(outputs_t, y_t, labelled, zero)
        target = torch.sigmoid(warp(full, field))
        if o.detach_consistency_target:
            target = target.detach()
        consistency = focal_tversky_loss(full_t, target, alpha=o.alpha, beta=o.beta, gamma=o.gamma)
        w = o.weights
        loss = w[0] * supervised + w[1] * deformed + w[2] * consistency
        return {"loss": loss, "supervised": supervised.detach(), "deformed": deformed.detach(),
                "consistency": consistency.detach()}

    def _labelled_loss(self, outputs, target: torch.Tensor, labelled: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        if bool(labelled.all()):
            return self.segmentation_loss(outputs, target)
        if not bool(labelled.any()):
            return zero
        pick = labelled.nonzero().squeeze(1)
        chosen = tuple(o[pick] for o in outputs) if isinstance(outputs, (tuple, list)) else outputs[pick]
        return self.segmentation_loss(chosen, target[pick])
