"""What the semi-supervised classification methods share: the labelled/unlabelled parts of a batch, the supervised
loss (single-label or multi-label), confidence-masked pseudo-label losses, and a ramp-up of the unlabelled weight.

Batches come from the engine's mixed sampler: ``data.labelled_per_batch`` labelled samples (default half the
batch) and the rest unlabelled, whose targets are -1 and never used."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from labelwise.errors import ConfigError
from labelwise.methods.base import Method
from labelwise.models import build_model

__all__ = ["SemiSupervised", "classification_loss", "confident_pseudo_loss", "ramp_up"]


def classification_loss(logits: Tensor, target: Tensor, multilabel: bool, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy over classes (targets ``(B,)``) or binary cross-entropy per label (targets ``(B, K)`` 0/1);
    0 (still connected to the graph) for an empty batch."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if multilabel:
        return nn.functional.binary_cross_entropy_with_logits(logits, target.float())
    return nn.functional.cross_entropy(logits, target, label_smoothing=label_smoothing)


def confident_pseudo_loss(
    logits: Tensor, probability: Tensor, multilabel: bool, threshold: float
) -> tuple[Tensor, Tensor]:
    """Loss of ``logits`` against hard pseudo labels of ``probability`` (no gradient), counting only confident
    ones: max p >= threshold (classes), or p >= threshold / p <= 1 - threshold per label. Returns the loss (mean
    over all samples or sample-labels, unconfident ones counting 0, as FixMatch) and the share kept."""
    probability = probability.detach()
    if logits.shape[0] == 0:
        return logits.sum() * 0.0, logits.new_tensor(0.0)
    if multilabel:
        mask = ((probability >= threshold) | (probability <= 1 - threshold)).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, (probability >= 0.5).float(), reduction="none")
        return (loss * mask).mean(), mask.mean()
    confidence, pseudo = probability.max(dim=1)
    mask = (confidence >= threshold).float()
    return (nn.functional.cross_entropy(logits, pseudo, reduction="none") * mask).mean(), mask.mean()


def ramp_up(step: int, length: int) -> float:
    """The sigmoid ramp-up exp(-5 (1 - t)^2) of Laine & Aila / Tarvainen & Valpola, t = step / length (1 after)."""
    if length <= 0 or step >= length:
        return 1.0
    t = step / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


class SemiSupervised(Method):
    """Base of the semi-supervised classification methods: one network ``model`` (the predictor) built from
    ``model:``, single-label or multi-label outputs."""

    uses_unlabelled = True

    def __init__(self, config, data):
        super().__init__(config, data)
        if data.task != "classification":
            raise ConfigError(f"method: {self.name} is for classification; data.task is {data.task!r}")
        self.multilabel = data.multilabel
        self.networks["model"] = self.build_network()

    def build_network(self) -> nn.Module:
        d = self.data
        return build_model(
            self.config.model, d.spatial_dims, d.in_channels, d.num_classes, "classification", d.image_size
        )

    def split_batch(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Labelled images and targets, and unlabelled images, of a batch (augmented when the method takes the
        config's augment section)."""
        batch = self.augment_batch(batch)
        labelled = batch["labelled"]
        return batch["image"][labelled], batch["target"][labelled], batch["image"][~labelled]

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.multilabel else logits.softmax(dim=1)

    def supervised_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return classification_loss(logits, target, self.multilabel)
