"""``method: fixmatch``: consistency between a weak and a strong view (Sohn et al., "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020). The prediction on a weakly augmented
unlabelled image, when confident, is the hard target of the same image strongly augmented.

Views come from :mod:`labelwise.augment.views` (batched, on the device): weak = flip + translation, strong = weak +
random intensity/blur/noise/shift operations + cutout. The paper's unlabelled ratio mu is set through the batch:
``data.labelled_per_batch`` labelled, the rest unlabelled."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from labelwise.augment.views import strong_view, weak_view
from labelwise.methods.semi import SemiSupervised, confident_pseudo_loss


class FixMatchOptions(BaseModel):
    """Options of ``method: fixmatch``."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.95, gt=0.5, le=1, description="confidence needed to use a pseudo label (tau)")
    weight: float = Field(1.0, ge=0, description="weight of the unlabelled loss (lambda_u)")
    magnitude: float = Field(0.5, ge=0, le=1, description="strength of the strong augmentation")


class FixMatch(SemiSupervised):
    """loss = CE(weak(labelled)) + weight * CE(strong(unlabelled), argmax p(weak(unlabelled))) over confident ones."""

    name = "fixmatch"
    Options = FixMatchOptions

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        xl, yl, xu = self.split_batch(batch)
        model = self.networks["model"]
        strong = strong_view(xu, magnitude=self.options.magnitude)
        logits = model(torch.cat([weak_view(xl), weak_view(xu), strong]))
        nl, nu = len(xl), len(xu)
        supervised = self.supervised_loss(logits[:nl], yl)
        target = self.probabilities(logits[nl : nl + nu].detach())
        unlabelled, kept = confident_pseudo_loss(logits[nl + nu :], target, self.multilabel, self.options.threshold)
        return {
            "loss": supervised + self.options.weight * unlabelled,
            "supervised": supervised.detach(),
            "unlabelled": unlabelled.detach(),
            "confident": kept,
        }
