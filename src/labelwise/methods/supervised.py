"""``method: supervised``: one network trained on labelled samples only (classification or segmentation)."""

from __future__ import annotations

from typing import Literal

import torch
from monai.losses import DiceCELoss
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from labelwise.methods.base import Method
from labelwise.models import build_model


class SupervisedOptions(BaseModel):
    """Options of ``method: supervised``."""

    model_config = ConfigDict(extra="forbid")
    loss: Literal["auto", "cross_entropy", "dice_ce"] = "auto"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class Supervised(Method):
    """Plain supervised training: cross-entropy for classification, Dice + cross-entropy for segmentation."""

    name = "supervised"
    Options = SupervisedOptions

    def __init__(self, config, data):
        super().__init__(config, data)
        self.networks["model"] = build_model(
            config.model, data.spatial_dims, data.in_channels, data.num_classes, data.task
        )
        loss = self.options.loss
        if loss == "auto":
            loss = "cross_entropy" if data.task == "classification" else "dice_ce"
        if loss == "dice_ce":
            self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, label_smoothing=self.options.label_smoothing)
        self.loss_name = loss

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        return self.networks["model"](image)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.predict(batch["image"])
        target = batch["target"]
        if self.loss_name == "dice_ce":
            return {"loss": self.dice_ce(logits, target.unsqueeze(1))}
        return {"loss": nn.functional.cross_entropy(logits, target, label_smoothing=self.options.label_smoothing)}
