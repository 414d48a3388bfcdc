"""``method: mean_teacher``: a teacher whose weights are the moving average of the student's, and a consistency
loss between their predictions under different noise (Tarvainen & Valpola, "Mean teachers are better role
models", NeurIPS 2017)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from labelwise.augment.views import weak_view
from labelwise.methods.base import ema_update, frozen_copy, warmed_decay
from labelwise.methods.semi import SemiSupervised, ramp_up


class MeanTeacherOptions(BaseModel):
    """Options of ``method: mean_teacher``."""

    model_config = ConfigDict(extra="forbid")
    ema_decay: float = Field(0.99, ge=0, lt=1, description="teacher = decay * teacher + (1 - decay) * student")
    weight: float = Field(1.0, ge=0, description="weight of the consistency loss (after ramp-up)")
    rampup_steps: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")
    predict_with: Literal["teacher", "student"] = "teacher"


class MeanTeacher(SemiSupervised):
    """loss = CE(student(labelled)) + weight * ramp(step) * mean squared difference of the student's and the
    teacher's probabilities over the whole batch, each network seeing its own weak view. After every optimizer
    step the teacher takes the exponential moving average of the student (buffers such as batch-norm statistics
    are copied)."""

    name = "mean_teacher"
    Options = MeanTeacherOptions

    def __init__(self, config, data):
        super().__init__(config, data)
        self.networks["teacher"] = frozen_copy(self.networks["model"])
        self.predictor = "teacher" if self.options.predict_with == "teacher" else "model"

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        xl, yl, xu = self.split_batch(batch)
        x = torch.cat([xl, xu])
        logits = self.networks["model"](weak_view(x))
        with torch.no_grad():
            teacher = self.probabilities(self.networks["teacher"](weak_view(x)))
        supervised = self.supervised_loss(logits[: len(xl)], yl)
        consistency = ((self.probabilities(logits) - teacher) ** 2).mean()
        weight = self.options.weight * ramp_up(self.step, self.options.rampup_steps)
        return {
            "loss": supervised + weight * consistency,
            "supervised": supervised.detach(),
            "consistency": consistency.detach(),
        }

    @torch.no_grad()
    def after_step(self) -> None:
        ema_update(self.networks["model"], self.networks["teacher"], warmed_decay(self.options.ema_decay, self.step))
