"""Encoders behind one interface for pretraining and transfer: ``features(x)`` (the feature maps of every stage,
``(B, C_i, *spatial_i)``), ``embed(x)`` (a pooled embedding ``(B, dim)``) and ``stride`` (how much smaller the last
map is than the input). Their parameter names equal those of the matching classifier of
:mod:`labelwise.models.networks` without its head, so pretrained weights load into it by name (``init_from``).

Encoders, 2D and 3D: the MONAI ResNets (``resnet10/18/34``), the U-Net MSS encoder (``unet_mss``), MONAI's ViT
(``vit``; ``unetr``: the same ViT as UNETR's, so its weights start a UNETR) and MONAI's Swin transformer (``swin``;
``swin_unetr``: SwinUNETR's encoder). The ``vit`` and ``swin`` classifiers are these encoders with a linear ``head``
on the embedding.

Masked image modelling (:meth:`Backbone.masked_features`) follows SimMIM: a CNN sees its input with the masked pixels
replaced by a learned value per channel; a transformer replaces the masked patches' tokens by a learned mask token
after the patch embedding (``mask_dim`` is the size of that learned value, ``token_patch`` the side of the smallest
patch a mask may hide)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from torch import Tensor, nn

from labelwise.errors import ConfigError
from labelwise.models.config import ModelConfig
from labelwise.models.encoders import Backbone, SwinBackbone, ViTBackbone
from labelwise.models.networks import MODELS

if TYPE_CHECKING:
    from monai.networks.nets import ResNet

    from labelwise.models.unet_mss import UNetMSS

__all__ = [
    "BACKBONES",
    "Backbone",
    "ResNetBackbone",
    "SwinBackbone",
    "UNetMSSBackbone",
    "ViTBackbone",
    "build_backbone",
]


class ResNetBackbone(Backbone):
    """A MONAI ResNet of :mod:`labelwise.models.networks` without its classification layer."""

    # the ResNet's layers, taken over by __init__
    conv1: nn.Module
    bn1: nn.Module
    act: nn.Module
    maxpool: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    layer4: nn.Module

    def __init__(self, cfg: ModelConfig, spatial_dims: int, in_channels: int):
        super().__init__()
        assert cfg.name is not None  # build_backbone looked it up in BACKBONES
        net = cast("ResNet", MODELS[cfg.name](cfg, spatial_dims, in_channels, 1, None))
        for name in ("conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))
        self.no_max_pool = net.no_max_pool
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        assert net.fc is not None  # the registry's ResNets have their classification layer
        self.dim = net.fc.in_features
        self.stride = 8 if self.no_max_pool else 16  # layers 2-4 halve the size (+ the max pool)

    def features(self, x: Tensor) -> list[Tensor]:
        x = self.act(self.bn1(self.conv1(x)))
        if not self.no_max_pool:
            x = self.maxpool(x)
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps


class UNetMSSBackbone(Backbone):
    """The encoder of :class:`labelwise.models.UNetMSS` (five levels of two convolutions, max pooling between): its
    names (``encoder.<level>...``) are those of the U-Net MSS, so ``init_from`` starts a segmenter's encoder."""

    def __init__(self, cfg: ModelConfig, spatial_dims: int, in_channels: int):
        super().__init__()
        net = cast("UNetMSS", MODELS["unet_mss"](cfg, spatial_dims, in_channels, 1, None))
        self.pool, self.encoder = net.pool, net.encoder
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.dim = net.channels[-1]
        self.stride = net.divisor

    def features(self, x: Tensor) -> list[Tensor]:
        maps = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            maps.append(x)
        return maps


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet10": ResNetBackbone,
    "resnet18": ResNetBackbone,
    "resnet34": ResNetBackbone,
    "unet_mss": UNetMSSBackbone,
    "vit": ViTBackbone,
    "swin": SwinBackbone,
    "swin_unetr": SwinBackbone,
}


def build_backbone(
    cfg: ModelConfig, spatial_dims: int, in_channels: int, image_size: tuple[int, ...] | None = None
) -> Backbone:
    """The encoder of ``model.name`` (see :data:`BACKBONES`; ``unetr``: its ViT); ``image_size``: the data's, for the
    ViT's position embeddings when ``model.image_size`` is not set."""
    if cfg.name == "unetr":
        return ViTBackbone(cfg, spatial_dims, in_channels, image_size, unetr=True)
    if cfg.name not in BACKBONES:
        raise ConfigError(
            f"model.name: {cfg.name!r} has no pretraining backbone yet; use one of "
            f"{', '.join(sorted([*BACKBONES, 'unetr']))}"
        )
    if BACKBONES[cfg.name] in (ViTBackbone, SwinBackbone):
        return BACKBONES[cfg.name](cfg, spatial_dims, in_channels, image_size)
    return BACKBONES[cfg.name](cfg, spatial_dims, in_channels)


def encoder_state(tensors: dict[str, Tensor], prefix: str = "backbone.") -> dict[str, Tensor]:
    """The backbone's weights out of a checkpoint's flat tensors (``<network>.<key>``), without the prefix."""
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise ConfigError(f"model.init_from: the checkpoint has no {prefix[:-1]!r} network (is it a pretrain run?)")
    return state


def load_encoder(model: nn.Module, state: dict[str, Tensor], freeze: bool = False, source: str = "") -> list[str]:
    """Copy ``state`` into the parameters of ``model`` that have the same names and shapes; with ``freeze`` those stop
    requiring gradients and their batch-norm layers stay in evaluation mode (a linear probe). Returns the loaded
    names; refuses when nothing matches."""
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    if not loaded:
        raise ConfigError(f"model.init_from {source}: no weight fits this model (different network or widths?)")
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    if freeze:
        freeze_encoder(model, loaded)
    return loaded


def freeze_encoder(model: nn.Module, names: list[str]) -> None:
    """Freeze the entries ``names`` of ``model``'s state dict (what :func:`load_encoder` loaded): their parameters
    stop requiring gradients and the batch-norm layers they hold stay in evaluation mode (a linear probe)."""
    chosen = set(names)
    for name, p in model.named_parameters():
        if name in chosen:
            p.requires_grad_(False)
    frozen = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and f"{n}.weight" in chosen
    ]
    plain_train = model.train

    def train(mode: bool = True) -> nn.Module:
        plain_train(mode)
        for m in frozen:
            m.eval()
        return model

    model.train = train  # type: ignore[method-assign]
    model.train(model.training)
