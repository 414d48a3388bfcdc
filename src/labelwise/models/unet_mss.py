"""U-Net MSS: a 5-level U-Net with multi-scale supervision (deep supervision at 1/2 and 1/4 resolution).

Chatterjee et al., "DS6, Deformation-aware Semi-supervised Learning: Application to Small Vessel Segmentation with
Noisy Training Data", J. Imaging 8(10):259, 2022 (doi:10.3390/jimaging8100259).

Maps ``(B, in_channels, *spatial)`` to logits ``(B, out_channels, *spatial)``; every spatial size must be divisible
by 16 (four 2x max poolings). In train mode with ``deep_supervision`` the forward returns a tuple
``(full, half_up, quarter_up)`` of full-size logits (train them with :func:`labelwise.losses.mss_loss`); in eval mode,
or without deep supervision, it returns the full-resolution logits alone, as the paper does at test time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelwise.errors import ConfigError, DataError

__all__ = ["DEFAULT_CHANNELS", "PAPER_CHANNELS", "UNetMSS"]

PAPER_CHANNELS = (64, 128, 256, 512, 1024)
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _conv_bn_relu(dims: int, in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3(x3) convolution (padding 1, with bias as in the paper's code), BatchNorm, ReLU."""
    return [
        _CONV[dims](in_channels, out_channels, kernel_size=3, padding=1),
        _NORM[dims](out_channels),
        nn.ReLU(inplace=True),
    ]


def _block(dims: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv-BN-ReLU layers: ``(B, in_channels, *s)`` -> ``(B, out_channels, *s)``."""
    layers = _conv_bn_relu(dims, in_channels, out_channels) + _conv_bn_relu(dims, out_channels, out_channels)
    return nn.Sequential(*layers)


def _up(dims: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """Nearest 2x upsampling then one conv-BN-ReLU: ``(B, in_channels, *s)`` -> ``(B, out_channels, *2s)``."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(dims, in_channels, out_channels))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected a positive int, got {value!r}")
    return value


class UNetMSS(nn.Module):
    """U-Net MSS of DS6 (Chatterjee et al. 2022): ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``.

    ``channels``: the five level widths, narrow by default; :meth:`paper` builds the paper's 64..1024 (about 103 M
    parameters in 3D). The deep-supervision heads are plain 1x1(x1) convolutions (no ReLU, unlike the original code,
    whose ReLU kept every auxiliary sigmoid >= 0.5) on the decoder features at 1/2 and 1/4 resolution; their logits
    are upsampled to full size by nearest-neighbour interpolation (as ``F.interpolate``'s default in the paper's code).
    ``deep_supervision`` decides at construction whether the two heads exist; it can be switched off later, not on.
    """

    levels = 5
    divisor = 2 ** (levels - 1)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ConfigError(f"spatial_dims: expected 2 or 3, got {spatial_dims!r}")
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = _positive_int("out_channels", out_channels)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) != self.levels:
            raise ConfigError(f"channels: expected {self.levels} widths (one per level), got {channels!r}")
        widths = tuple(_positive_int(f"channels[{i}]", c) for i, c in enumerate(channels))
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.channels = widths
        self.deep_supervision = bool(deep_supervision)
        d = spatial_dims

        self.pool = _POOL[d](kernel_size=2, stride=2)
        self.encoder = nn.ModuleList(_block(d, c_in, c_out) for c_in, c_out in zip((in_channels, *widths[:-1]), widths))
        # decoder level i (3, 2, 1, 0) upsamples level i + 1 to width i, concatenates skip i, then a block.
        self.up = nn.ModuleList(_up(d, widths[i + 1], widths[i]) for i in range(self.levels - 1))
        self.decoder = nn.ModuleList(_block(d, 2 * widths[i], widths[i]) for i in range(self.levels - 1))
        self.head = _CONV[d](widths[0], out_channels, kernel_size=1)
        if self.deep_supervision:
            self.head_half = _CONV[d](widths[1], out_channels, kernel_size=1)
            self.head_quarter = _CONV[d](widths[2], out_channels, kernel_size=1)

    @classmethod
    def paper(cls, spatial_dims: int, in_channels: int, out_channels: int, deep_supervision: bool = True) -> UNetMSS:
        """The paper's widths 64, 128, 256, 512, 1024 (about 103 M parameters in 3D, 34 M in 2D, for 1 -> 1)."""
        return cls(spatial_dims, in_channels, out_channels, PAPER_CHANNELS, deep_supervision)

    def _check(self, x: Tensor) -> None:
        expected = f"(B, {self.in_channels}, " + ", ".join(["*"] * self.spatial_dims) + ")"
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise DataError(f"UNetMSS input: expected shape {expected}, got {tuple(x.shape)}")
        if any(s % self.divisor for s in x.shape[2:]):
            raise DataError(
                f"UNetMSS input: every spatial size must be divisible by {self.divisor} (4 poolings by 2), "
                f"got shape {tuple(x.shape)}; pad or crop the input"
            )

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Logits ``(B, out_channels, *spatial)``; in train mode with deep supervision a tuple of three such tensors
        ``(full, half_up, quarter_up)``."""
        self._check(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        supervise = self.training and self.deep_supervision
        aux: dict[int, Tensor] = {}
        for level in reversed(range(self.levels - 1)):
            x = self.decoder[level](torch.cat((skips[level], self.up[level](x)), dim=1))
            if supervise and level == 2:
                aux[level] = self.head_quarter(x)
            elif supervise and level == 1:
                aux[level] = self.head_half(x)
        full = self.head(x)
        if not supervise:
            return full
        size = full.shape[2:]
        return full, F.interpolate(aux[1], size=size, mode="nearest"), F.interpolate(aux[2], size=size, mode="nearest")
