"""U-Net MSS (DS6): shapes in 2D and 3D, train vs eval outputs, parameter counts, auxiliary heads, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labelwise.errors import ConfigError, DataError
from labelwise.losses import mss_loss
from labelwise.models import UNetMSS
from labelwise.models.unet_mss import DEFAULT_CHANNELS, PAPER_CHANNELS

TINY = (4, 4, 8, 8, 8)
SIZE = {2: (32, 32), 3: (16, 16, 16)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(dims: int, cin: int, cout: int, ch: tuple[int, ...], deep_supervision: bool = True) -> int:
    """By hand: a conv k^d with bias, BatchNorm's weight and bias; blocks are two conv-BN, the up path one conv-BN."""
    k = 3**dims

    def conv_bn(a: int, b: int) -> int:
        return k * a * b + b + 2 * b

    def block(a: int, b: int) -> int:
        return conv_bn(a, b) + conv_bn(b, b)

    encoder = sum(block(a, b) for a, b in zip((cin, *ch[:-1]), ch))
    decoder = sum(conv_bn(ch[i + 1], ch[i]) + block(2 * ch[i], ch[i]) for i in range(4))
    heads = (ch[0] + 1) * cout + (((ch[1] + 1) * cout + (ch[2] + 1) * cout) if deep_supervision else 0)
    return encoder + decoder + heads


@pytest.mark.parametrize("dims", [2, 3])
def test_train_and_eval_outputs(dims):
    torch.manual_seed(0)
    model = UNetMSS(dims, 2, 3, channels=TINY)
    x = torch.randn(2, 2, *SIZE[dims])
    outputs = model.train()(x)
    assert isinstance(outputs, tuple) and len(outputs) == 3
    assert all(o.shape == (2, 3, *SIZE[dims]) for o in outputs)
    with torch.no_grad():
        logits = model.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3, *SIZE[dims])


def test_non_cubic_input_and_no_deep_supervision():
    torch.manual_seed(0)
    model = UNetMSS(3, 1, 1, channels=TINY, deep_supervision=False).train()
    assert not hasattr(model, "head_half") and not hasattr(model, "head_quarter")
    out = model(torch.randn(1, 1, 16, 32, 48))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 16, 32, 48)


def test_heads_do_not_change_the_main_output():
    torch.manual_seed(0)
    with_heads = UNetMSS(2, 1, 1, channels=TINY).train()
    without = UNetMSS(2, 1, 1, channels=TINY, deep_supervision=False).train()
    missing, unexpected = without.load_state_dict(with_heads.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"head_half", "head_quarter"}
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(with_heads(x)[0], without(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_auxiliary_logits_can_be_negative_and_are_nearest_upsampled(dims):
    """The original heads ended in ReLU (sigmoid always >= 0.5); ours are plain 1x1 convolutions."""
    torch.manual_seed(0)
    model = UNetMSS(dims, 1, 1, channels=TINY).train()
    for head in (model.head_half, model.head_quarter):
        assert type(head) is (nn.Conv2d, nn.Conv3d)[dims - 2] and head.kernel_size == (1,) * dims
    _, half, quarter = model(torch.randn(2, 1, *SIZE[dims]))
    for out, factor in ((half, 2), (quarter, 4)):
        assert (out < 0).any()  # a ReLU head could never give a negative logit
        coarse = out[(..., *[slice(None, None, factor)] * dims)]
        torch.testing.assert_close(F.interpolate(coarse, scale_factor=factor, mode="nearest"), out, rtol=0, atol=0)


def test_mss_loss_trains_every_head():
    torch.manual_seed(0)
    model = UNetMSS(3, 1, 1, channels=TINY).train()
    x = torch.randn(2, 1, *SIZE[3])
    y = (torch.rand(2, 1, *SIZE[3]) < 0.2).float()
    mss_loss(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.head_half.weight.grad.abs().sum() > 0 and model.head_quarter.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_parameter_counts(dims):
    """Paper widths: about 100 M parameters in 3D (counted on the meta device: nothing allocated, no forward)."""
    with torch.device("meta"):
        paper = UNetMSS.paper(dims, 1, 1)
        default = UNetMSS(dims, 1, 1)
        plain = UNetMSS.paper(dims, 1, 1, deep_supervision=False)
    assert paper.channels == PAPER_CHANNELS and default.channels == DEFAULT_CHANNELS == (16, 32, 64, 128, 256)
    assert n_params(paper) == expected_params(dims, 1, 1, PAPER_CHANNELS)
    assert n_params(plain) == expected_params(dims, 1, 1, PAPER_CHANNELS, deep_supervision=False)
    assert n_params(default) == expected_params(dims, 1, 1, DEFAULT_CHANNELS)
    if dims == 3:
        assert n_params(paper) == 103_536_835 and 80e6 < n_params(paper) < 120e6
    else:
        assert n_params(paper) == 34_526_275
    assert n_params(default) < n_params(paper) / 10
    assert n_params(UNetMSS(dims, 3, 2, channels=TINY)) == expected_params(dims, 3, 2, TINY)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial_dims": 1}, r"spatial_dims: expected 2 or 3, got 1"),
        ({"in_channels": 0}, r"in_channels: expected a positive int, got 0"),
        ({"out_channels": 1.5}, r"out_channels: expected a positive int, got 1.5"),
        ({"channels": (4, 8, 16, 32)}, r"channels: expected 5 widths \(one per level\), got \(4, 8, 16, 32\)"),
        ({"channels": "paper"}, r"channels: expected 5 widths"),
        ({"channels": (4, 8, 0, 8, 8)}, r"channels\[2\]: expected a positive int, got 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": TINY, **kwargs}
    with pytest.raises(ConfigError, match=match):
        UNetMSS(**args)


def test_bad_input_shapes():
    model = UNetMSS(3, 2, 1, channels=TINY)
    with pytest.raises(DataError, match=r"divisible by 16 .* got shape \(1, 2, 16, 24, 16\)"):
        model(torch.randn(1, 2, 16, 24, 16))
    with pytest.raises(DataError, match=r"expected shape \(B, 2, \*, \*, \*\), got \(1, 1, 16, 16, 16\)"):
        model(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(DataError, match=r"expected shape \(B, 2, \*, \*, \*\), got \(1, 2, 16, 16\)"):
        model(torch.randn(1, 2, 16, 16))
