"""``method: pseudo_label``: the model's own confident predictions on unlabelled images as targets (Lee, "Pseudo-Label:
The Simple and Efficient Semi-Supervised Learning Method for Deep Neural Networks", ICML workshop 2013), with a
confidence threshold and a ramped-up weight."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from labelwise.methods.semi import SemiSupervised, confident_pseudo_loss, ramp_up


class PseudoLabelOptions(BaseModel):
    """Options of ``method: pseudo_label``."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.95, gt=0.5, le=1, description="confidence needed to use a pseudo label")
    weight: float = Field(1.0, ge=0, description="weight of the unlabelled loss")
    rampup_steps: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")


class PseudoLabel(SemiSupervised):
    """loss = CE(labelled) + weight * ramp(step) * CE(unlabelled, argmax of the model's own prediction), counting
    only predictions at least ``threshold`` confident (no gradient through the targets)."""

    name = "pseudo_label"
    augments = True
    Options = PseudoLabelOptions

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        xl, yl, xu = self.split_batch(batch)
        logits = self.networks["model"](torch.cat([xl, xu]))
        supervised = self.supervised_loss(logits[: len(xl)], yl)
        unlabelled = logits[len(xl) :]
        pseudo, kept = confident_pseudo_loss(
            unlabelled, self.probabilities(unlabelled), self.multilabel, self.options.threshold
        )
        weight = self.options.weight * ramp_up(self.step, self.options.rampup_steps)
        return {
            "loss": supervised + weight * pseudo,
            "supervised": supervised.detach(),
            "pseudo": pseudo.detach(),
            "confident": kept,
        }
