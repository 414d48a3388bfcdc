"""MONAI networks behind one constructor signature, so a config names a network and its widths only.

Every builder takes ``(cfg, spatial_dims, in_channels, out_channels, image_size)`` and returns an ``nn.Module``
mapping ``(B, in_channels, *spatial)`` to ``(B, out_channels)`` (classifiers) or
``(B, out_channels, *spatial)`` (segmenters). ``image_size`` (the data's training image or patch size) matters only
to the ViTs, whose position embeddings are built for one size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from labelwise.errors import ConfigError
from labelwise.models.config import ModelConfig

Builder = Callable[["ModelConfig", int, int, int, "tuple[int, ...] | None"], nn.Module]


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
                instance = {nn.BatchNorm1d: nn.InstanceNorm1d, nn.BatchNorm2d: nn.InstanceNorm2d}.get(
                    type(child), nn.InstanceNorm3d
                )
                replacement = instance(c, affine=True)
            setattr(net, name, replacement)
        else:
            _replace_batch_norm(child, cfg)
    return net


def _resnet(default_layers: list[int]) -> Builder:
    def build(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
        from monai.networks import nets

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


def _densenet121(
    cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None
) -> nn.Module:
    from monai.networks import nets

    return nets.DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, dropout_prob=cfg.dropout
    )


def _unet(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    from monai.networks import nets

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


def _basic_unet(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    from monai.networks import nets

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


def _unet_mss(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    from labelwise.models.unet_mss import DEFAULT_CHANNELS, UNetMSS

    if cfg.norm != "batch" or cfg.dropout:
        raise ConfigError(
            "model: unet_mss has batch norm and no dropout (as in DS6); leave model.norm and "
            "model.dropout at their defaults"
        )
    channels = cfg.channels or list(DEFAULT_CHANNELS)
    if len(channels) != 5:
        raise ConfigError("model.channels: unet_mss needs 5 widths (DS6's paper: [64, 128, 256, 512, 1024])")
    return UNetMSS(spatial_dims, in_channels, out_channels, channels, deep_supervision=cfg.deep_supervision)


def _transformer_norm(cfg: ModelConfig) -> None:
    if cfg.norm != "batch":
        raise ConfigError(f"model.norm: {cfg.name} uses layer norm in its transformer; leave model.norm unset")


def _vit(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    """MONAI's ViT (see :class:`labelwise.models.encoders.ViTBackbone`) with a linear head on its mean token."""
    from labelwise.models.encoders import ViTBackbone

    _transformer_norm(cfg)
    net = ViTBackbone(cfg, spatial_dims, in_channels, image_size)
    net.head = nn.Linear(net.dim, out_channels)
    return net


def _swin(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    """MONAI's Swin transformer (see :class:`labelwise.models.encoders.SwinBackbone`) with a linear head on the
    mean of its last stage."""
    from labelwise.models.encoders import SwinBackbone

    _transformer_norm(cfg)
    net = SwinBackbone(cfg, spatial_dims, in_channels, image_size)
    net.head = nn.Linear(net.dim, out_channels)
    return net


def _unetr(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    """MONAI's UNETR: a ViT (16-pixel patches, 12 blocks; ``channels: [hidden]`` or ``[hidden, decoder width]``,
    default [768, 16]; ``heads: [12]``) with a convolutional decoder (``model.norm``)."""
    from monai.networks import nets

    from labelwise.models.encoders import ViTBackbone

    vit = ViTBackbone(cfg, spatial_dims, in_channels, image_size, unetr=True)
    widths = cfg.channels or [768, 16]
    return nets.UNETR(
        in_channels,
        out_channels,
        img_size=vit.image_size,
        feature_size=widths[1] if len(widths) > 1 else 16,
        hidden_size=vit.dim,
        mlp_dim=4 * vit.dim,
        num_heads=(cfg.heads or [12])[0],
        proj_type="conv",
        norm_name=_norm(cfg, [widths[-1]]),
        dropout_rate=cfg.dropout,
        spatial_dims=spatial_dims,
        qkv_bias=False,
    )


def _swin_unetr(cfg: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, image_size=None) -> nn.Module:
    """MONAI's SwinUNETR (``channels: [feature_size]``, default 24, a multiple of 12; ``layers``/``heads`` per
    stage; 2-voxel patches); its decoder uses ``model.norm`` (instance norm fails where the bottleneck is one voxel,
    at 32-voxel inputs). Inputs: each side a multiple of 32."""
    from monai.networks import nets

    from labelwise.models.encoders import swin_options

    width, depths, heads, patch = swin_options(cfg)
    if patch != 2:
        raise ConfigError(f"model.patch_size: swin_unetr's decoder (MONAI) expects 2-voxel patches, got {patch}")
    if width % 12:
        raise ConfigError(f"model.channels: swin_unetr's feature size must be a multiple of 12, got {width}")
    return nets.SwinUNETR(
        in_channels,
        out_channels,
        patch_size=patch,
        depths=depths,
        num_heads=heads,
        window_size=7,
        feature_size=width,
        norm_name=_norm(cfg, [width]),
        drop_rate=cfg.dropout,
        spatial_dims=spatial_dims,
    )


MODELS: dict[str, Builder] = {
    "resnet10": _resnet([1, 1, 1, 1]),
    "resnet18": _resnet([2, 2, 2, 2]),
    "resnet34": _resnet([3, 4, 6, 3]),
    "densenet121": _densenet121,
    "unet": _unet,
    "basic_unet": _basic_unet,
    "unet_mss": _unet_mss,
    "vit": _vit,
    "swin": _swin,
    "unetr": _unetr,
    "swin_unetr": _swin_unetr,
}

SEGMENTERS = {"unet", "basic_unet", "unet_mss", "unetr", "swin_unetr"}


def build_model(
    cfg: ModelConfig,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    task: str,
    image_size: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build ``cfg.name``; sizes given in the config must agree with the data's (``image_size``: a training
    sample's spatial size, for the ViTs)."""
    for key, from_data in (
        ("spatial_dims", spatial_dims),
        ("in_channels", in_channels),
        ("out_channels", out_channels),
    ):
        given = getattr(cfg, key)
        if given is not None and given != from_data:
            raise ConfigError(f"model.{key}: config says {given} but the data has {from_data}")
    is_segmenter = cfg.name in SEGMENTERS
    if is_segmenter != (task == "segmentation"):
        kind = "a segmentation" if is_segmenter else "a classification"
        raise ConfigError(f"model.name: {cfg.name!r} is {kind} network but data.task is {task!r}")
    assert cfg.name is not None  # Config fills in the task's default network
    return MODELS[cfg.name](cfg, spatial_dims, in_channels, out_channels, image_size)
