"""MONAI networks behind one constructor signature, so a config names a network and its widths only.

Every builder takes ``(cfg, spatial_dims, in_channels, out_channels)`` and returns an ``nn.Module``
mapping ``(B, in_channels, *spatial)`` to ``(B, out_channels)`` (classifiers) or
``(B, out_channels, *spatial)`` (segmenters).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from monai.networks import nets
from torch import nn

from labelwise.errors import ConfigError

if TYPE_CHECKING:
    from labelwise.config import ModelConfig

Builder = Callable[["ModelConfig", int, int, int], nn.Module]


def _norm(cfg: ModelConfig, channels: list[int]) -> str | tuple:
    """MONAI norm argument; group norm uses up to 8 groups, as many as divide every width."""
    if cfg.norm == "instance":
        return ("instance", {"affine": True})
    if cfg.norm != "group":
        return cfg.norm
    return ("group", {"num_groups": math.gcd(8, *channels)})


def _replace_batch_norm(net: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Swap every BatchNorm layer of ``net`` for the configured group or instance norm, in place."""
    for name, child in net.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            c = child.num_features
            if cfg.norm == "group":
                replacement: nn.Module = nn.GroupNorm(math.gcd(8, c), c)
            else:
                instance = {nn.BatchNorm1d: nn.InstanceNorm1d, nn.BatchNorm2d: nn.InstanceNorm2d}.get(type(child), nn.InstanceNorm3d)
                replacement = instance(c, affine=True)
            setattr(net, name, replacement)
        else:
            _replace_batch_norm(child, cfg)
    return net


def _resnet(default_layers: list[int]) -> Builder:
    def build(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
        if cfg.dropout:
            raise ConfigError("model.dropout: MONAI's ResNet has no dropout; set it to 0 or pick densenet121")
        channels = cfg.channels or [64, 128, 256, 512]
        layers = cfg.layers or default_layers
        if len(channels) != 4 or len(layers) != 4:
            raise ConfigError("model.channels and model.layers: a ResNet needs 4 values each (one per stage)")
        net = nets.ResNet(
            block="basic",
            layers=layers,
            block_inplanes=channels,
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=out_channels,
            conv1_t_size=3,
            conv1_t_stride=1,
            no_max_pool=True,
            norm=_norm(cfg, channels),
        )
        # MONAI 1.6's ResNet applies ``norm`` to its stem only; the residual stages keep BatchNorm.
        return _replace_batch_norm(net, cfg) if cfg.norm != "batch" else net

    return build


def _densenet121(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    return nets.DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, dropout_prob=cfg.dropout
    )


def _unet(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    channels = cfg.channels or [16, 32, 64, 128]
    return nets.UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=[2] * (len(channels) - 1),
        num_res_units=2,
        norm=_norm(cfg, channels),
        dropout=cfg.dropout,
    )


def _basic_unet(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    features = cfg.channels or [32, 32, 64, 128, 256, 32]
    if len(features) != 6:
        raise ConfigError("model.channels: basic_unet needs 6 widths (5 encoder levels + the last decoder)")
    return nets.BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=features,
        norm=_norm(cfg, features),
        dropout=cfg.dropout,
    )


def _unet_mss(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    from labelwise.models.unet_mss import DEFAULT_CHANNELS, UNetMSS

    if cfg.norm != "batch" or cfg.dropout:
        raise ConfigError("model: unet_mss has batch norm and no dropout (as in DS6); leave model.norm and "
                          "model.dropout at their defaults")
    channels = cfg.channels or list(DEFAULT_CHANNELS)
    if len(channels) != 5:
        raise ConfigError("model.channels: unet_mss needs 5 widths (DS6's paper: [64, 128, 256, 512, 1024])")
    return UNetMSS(spatial_dims, in_channels, out_channels, channels, deep_supervision=cfg.deep_supervision)


MODELS: dict[str, Builder] = {
    "resnet10": _resnet([1, 1, 1, 1]),
    "resnet18": _resnet([2, 2, 2, 2]),
    "resnet34": _resnet([3, 4, 6, 3]),
    "densenet121": _densenet121,
    "unet": _unet,
    "basic_unet": _basic_unet,
    "unet_mss": _unet_mss,
}

SEGMENTERS = {"unet", "basic_unet", "unet_mss"}


def build_model(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, task: str) -> nn.Module:
    """Build ``cfg.name``; sizes given in the config must agree with the data's."""
    for key, from_data in (("spatial_dims", spatial_dims), ("in_channels", in_channels), ("out_channels", out_channels)):
        given = getattr(cfg, key)
        if given is not None and given != from_data:
            raise ConfigError(f"model.{key}: config says {given} but the data has {from_data}")
    is_segmenter = cfg.name in SEGMENTERS
    if is_segmenter != (task == "segmentation"):
        kind = "a segmentation" if is_segmenter else "a classification"
        raise ConfigError(f"model.name: {cfg.name!r} is {kind} network but data.task is {task!r}")
    return MODELS[cfg.name](cfg, spatial_dims, in_channels, out_channels)
