"""``method: pretrain``: one backbone pretrained on any weighted subset of three tasks (Qian, "Heuristic Vision
Pre-Training with Self-Supervised and Supervised Multi-Task Learning", 2023), so single-task and multi-task runs are
the same code and the ablation is a config change:

- ``multilabel``: binary cross-entropy of a linear head over the image-level tags (what is in the image); samples
  without tags (``use_label`` 0, or no tags) skip this term;
- ``mim``: masked image modelling as SimMIM (Xie et al. 2022): random patches of the input are replaced by a learned
  value per channel (CNNs), or their tokens by a learned mask token (ViT, Swin); a light decoder (one 1x1
  convolution and a pixel shuffle) reconstructs the image from the last feature map, and the L1 (or L2) loss counts
  the masked pixels only;
- ``contrastive``: two augmented views (:func:`labelwise.augment.views.contrastive_views`) agree: SimCLR's NT-Xent
  (Chen et al. 2020) or MoCo v3's InfoNCE against a momentum encoder (Chen, Xie & He 2021).

Validation and test report the k-nearest-neighbour accuracy of the pooled embeddings (cosine similarity, k
neighbours weighted by exp(similarity / 0.07)) against the labelled training samples, and each task's loss is
logged. Downstream runs start from the backbone with ``model.init_from: RUN_DIR`` (``model.freeze_backbone: true``:
a linear probe)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from labelwise.augment.views import contrastive_views
from labelwise.errors import ConfigError
from labelwise.methods.base import Method, ema_update, frozen_copy
from labelwise.models.backbones import build_backbone

Task = Literal["multilabel", "mim", "contrastive"]


class PretrainOptions(BaseModel):
    """Options of ``method: pretrain``."""

    model_config = ConfigDict(extra="forbid")
    tasks: dict[Task, float] = Field(
        {"multilabel": 1.0, "mim": 1.0, "contrastive": 1.0}, description="the tasks and their loss weights"
    )
    mask_ratio: float = Field(0.6, gt=0, lt=1, description="mim: share of patches masked")
    mask_patch: int | None = Field(
        None, gt=0, description="mim: side of a masked patch (default: the backbone's stride)"
    )
    mim_loss: Literal["l1", "l2"] = "l1"
    contrastive: Literal["simclr", "moco"] = "simclr"
    temperature: float = Field(0.2, gt=0)
    projection_dim: int = Field(128, gt=0)
    momentum: float = Field(0.99, ge=0, lt=1, description="moco: momentum of the key encoder")
    knn_k: int = Field(20, gt=0, description="neighbours of the k-NN monitor")

    @field_validator("tasks")
    @classmethod
    def _some_task(cls, tasks: dict[str, float]) -> dict[str, float]:
        if not tasks or any(w < 0 for w in tasks.values()):
            raise ValueError("give at least one task with a weight >= 0, e.g. {mim: 1.0, contrastive: 1.0}")
        return tasks


def mlp(dim_in: int, dim_hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, dim_hidden), nn.BatchNorm1d(dim_hidden), nn.ReLU(inplace=True), nn.Linear(dim_hidden, dim_out)
    )


class MIMDecoder(nn.Module):
    """SimMIM's light decoder: a 1x1 convolution to ``in_channels * stride^d`` values per position of the last map,
    rearranged into the full-resolution image; also holds the learned value that replaces masked inputs
    (``mask_dim``: one per input channel for CNNs, a token for transformers)."""

    def __init__(
        self,
        dim: int,
        in_channels: int,
        stride: int,
        spatial_dims: int,
        mask_dim: int | None = None,
        token: bool = False,
    ):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.proj = conv(dim, in_channels * stride**spatial_dims, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(mask_dim or in_channels))
        if token:  # a transformer's mask token: SimMIM draws it like the other weights
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.in_channels, self.stride, self.spatial_dims = in_channels, stride, spatial_dims

    def forward(self, last: Tensor) -> Tensor:
        y = self.proj(last)  # (B, C s^d, *grid)
        b, grid, s, d, c = y.shape[0], y.shape[2:], self.stride, self.spatial_dims, self.in_channels
        y = y.reshape(b, c, *([s] * d), *grid)
        # (B, C, s1..sd, g1..gd) -> (B, C, g1, s1, ..., gd, sd) -> (B, C, g1 s1, ..., gd sd)
        order = [0, 1] + [i for k in range(d) for i in (2 + d + k, 2 + k)]
        return y.permute(*order).reshape(b, c, *(g * s for g in grid))


def random_patch_mask(shape: tuple[int, ...], patch: int, ratio: float, device: torch.device) -> Tensor:
    """``(B, 1, *spatial)`` 0/1 float: exactly round(ratio * patches) random patches of side ``patch`` per sample."""
    b, spatial = shape[0], shape[2:]
    if any(n % patch for n in spatial):
        raise ConfigError(f"method.mask_patch: {patch} must divide the image size {list(spatial)}")
    grid = [n // patch for n in spatial]
    count = int(torch.tensor(grid).prod())
    keep = round(ratio * count)
    order = torch.rand(b, count, device=device).argsort(dim=1)
    mask = (order.argsort(dim=1) < keep).float().reshape(b, 1, *grid)
    for axis in range(len(spatial)):
        mask = mask.repeat_interleave(patch, dim=2 + axis)
    return mask


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss: each of the 2B projections must pick its partner view among the other 2B - 1."""
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(logits, target)


def moco_loss(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's InfoNCE of queries against the batch's keys (positives on the diagonal), scaled by 2 tau."""
    q, k = nn.functional.normalize(q, dim=1), nn.functional.normalize(k, dim=1)
    logits = q @ k.T / temperature
    target = torch.arange(q.shape[0], device=q.device)
    return nn.functional.cross_entropy(logits, target) * 2 * temperature


def knn_predict(query: Tensor, bank: Tensor, bank_target: Tensor, k: int, num_classes: int, multilabel: bool) -> Tensor:
    """Class scores ``(N, K)`` of each query embedding from its ``k`` most cosine-similar bank embeddings, weighted
    by exp(similarity / 0.07): for single labels a weighted vote, for tags a weighted mean."""
    query, bank = nn.functional.normalize(query.float(), dim=1), nn.functional.normalize(bank.float(), dim=1)
    similarity, index = (query @ bank.T).topk(min(k, bank.shape[0]), dim=1)
    weight = (similarity / 0.07).exp()
    votes = bank_target[index].float() if multilabel else nn.functional.one_hot(bank_target[index], num_classes).float()
    return (votes * weight[..., None]).sum(dim=1) / weight.sum(dim=1, keepdim=True)


class Pretrain(Method):
    """See the module docstring. Networks: ``backbone`` (what transfers), and per task ``tag_head``,
    ``mim_decoder``, ``projector`` (+ ``predictor``, ``momentum_backbone``, ``momentum_projector`` for MoCo)."""

    name = "pretrain"
    Options = PretrainOptions
    uses_unlabelled = True
    predictor = None  # a backbone, no classifier head: what transfers is explained after fine-tuning or probing

    def __init__(self, config, data):
        super().__init__(config, data)
        o, d = self.options, data
        self.tasks = {t: w for t, w in o.tasks.items()}
        if d.task != "classification":
            raise ConfigError("method: pretrain reads images with optional tags: set data.task: classification")
        if "multilabel" in self.tasks and not d.multilabel:
            raise ConfigError(
                "method.tasks: multilabel needs image-level tags: several data.labels columns (0/1), "
                "or an .npz whose label is (N, K) 0/1; drop the task for single-label data"
            )
        backbone = build_backbone(config.model, d.spatial_dims, d.in_channels, d.image_size)
        self.networks["backbone"] = backbone
        if "multilabel" in self.tasks:
            self.networks["tag_head"] = nn.Linear(backbone.dim, d.num_classes)
        if "mim" in self.tasks:
            self.patch = o.mask_patch or backbone.stride
            if self.patch % backbone.token_patch:
                raise ConfigError(
                    f"method.mask_patch: {self.patch} must be a multiple of {config.model.name}'s "
                    f"token patch {backbone.token_patch}"
                )
            if d.image_size and any(n % backbone.stride for n in d.image_size):
                raise ConfigError(
                    f"method.tasks.mim: the image size {list(d.image_size)} must be a multiple of "
                    f"{config.model.name}'s output stride {backbone.stride} to be reconstructed"
                )
            self.networks["mim_decoder"] = MIMDecoder(
                backbone.dim, d.in_channels, backbone.stride, d.spatial_dims, backbone.mask_dim, backbone.masks_tokens
            )
        if "contrastive" in self.tasks:
            self.networks["projector"] = mlp(backbone.dim, backbone.dim, o.projection_dim)
            if o.contrastive == "moco":
                self.networks["predictor"] = mlp(o.projection_dim, backbone.dim, o.projection_dim)
                for name in ("backbone", "projector"):
                    self.networks[f"momentum_{name}"] = frozen_copy(self.networks[name])

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["image"]
        backbone: Any = self.networks["backbone"]  # Any: a Backbone, or Fabric's wrapper that forwards its methods
        losses: dict[str, Tensor] = {}
        if "multilabel" in self.tasks:
            tagged = batch["labelled"]
            logits = self.networks["tag_head"](backbone.embed(x[tagged])) if bool(tagged.any()) else None
            losses["multilabel"] = (
                nn.functional.binary_cross_entropy_with_logits(logits, batch["target"][tagged].float())
                if logits is not None
                else x.new_zeros(())
            )
        if "mim" in self.tasks:
            decoder: Any = self.networks["mim_decoder"]
            mask = random_patch_mask(tuple(x.shape), self.patch, self.options.mask_ratio, x.device)
            reconstruction = decoder(backbone.masked_features(x, mask, decoder.mask_token)[-1])
            error = (reconstruction - x).abs() if self.options.mim_loss == "l1" else (reconstruction - x) ** 2
            losses["mim"] = (error * mask).sum() / (mask.sum() * x.shape[1]).clamp(min=1)
        if "contrastive" in self.tasks:
            v1, v2 = contrastive_views(x)
            projector = self.networks["projector"]
            z1, z2 = projector(backbone.embed(v1)), projector(backbone.embed(v2))
            if self.options.contrastive == "simclr":
                losses["contrastive"] = nt_xent(z1, z2, self.options.temperature)
            else:
                predictor = self.networks["predictor"]
                with torch.no_grad():
                    key_net: Any = self.networks["momentum_backbone"]
                    key_proj = self.networks["momentum_projector"]
                    k1, k2 = key_proj(key_net.embed(v1)), key_proj(key_net.embed(v2))
                t = self.options.temperature
                losses["contrastive"] = moco_loss(predictor(z1), k2, t) + moco_loss(predictor(z2), k1, t)
        total = sum(self.tasks[name] * value for name, value in losses.items())
        return {"loss": total, **{name: value.detach() for name, value in losses.items()}}

    @torch.no_grad()
    def after_step(self) -> None:
        if "momentum_backbone" not in self.networks:
            return
        for name in ("backbone", "projector"):
            ema_update(self.networks[name], self.networks[f"momentum_{name}"], self.options.momentum)

    def predict(self, image: Tensor, spacing: tuple[float, ...] | None = None) -> Tensor:
        """Pooled embeddings ``(B, dim)`` of the backbone."""
        backbone: Any = self.networks["backbone"]  # a Backbone, or Fabric's wrapper that forwards embed
        return backbone.embed(image)

    @torch.no_grad()
    def evaluate(
        self, outputs: Tensor, target: Tensor, rois: Sequence[Tensor | None] | None = None
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """k-NN accuracy of the embeddings against the labelled training samples (tags: mean per-label accuracy)."""
        train = self.data.split("train")
        rows = torch.nonzero(train.labelled).flatten()
        backbone: Any = self.networks["backbone"]  # a Backbone, or Fabric's wrapper that forwards embed
        device = next(backbone.parameters()).device
        bs = self.config.data.eval_batch_size
        bank = torch.cat(
            [backbone.embed(train.image[rows[i : i + bs]].to(device)).float().cpu() for i in range(0, len(rows), bs)]
        )
        scores = knn_predict(
            outputs, bank, train.target[rows], self.options.knn_k, self.data.num_classes, self.data.multilabel
        )
        if self.data.multilabel:
            prediction = (scores > 0.5).long()
            accuracy = (prediction == target).float().mean()
        else:
            prediction = scores.argmax(dim=1)
            accuracy = (prediction == target).float().mean()
        return {"knn_accuracy": float(accuracy)}, {"prediction": prediction, "target": target, "embedding": outputs}
