"""Model registry: sizes, norms and the batch-independence that multi-process training relies on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelwise.errors import ConfigError
from labelwise.models import build_model
from labelwise.models.config import ModelConfig


@pytest.mark.parametrize("norm", ["group", "instance"])
@pytest.mark.parametrize("dims", [2, 3])
def test_resnet_norm_is_per_sample(norm, dims):
    """MONAI's ResNet keeps BatchNorm in its stages whatever ``norm`` says; ours must not."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="resnet10", channels=[4, 8, 8, 12], norm=norm)
    net = build_model(cfg, dims, 1, 3, "classification").train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x = torch.randn(6, 1, *([12] * dims))
    whole = net(x)
    halves = torch.cat([net(x[:3]), net(x[3:])])
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-5)
    assert whole.shape == (6, 3)


def test_group_norm_groups_divide_odd_widths():
    cfg = ModelConfig(name="unet", channels=[4, 6, 10], norm="group")
    net = build_model(cfg, 2, 1, 2, "segmentation")
    groups = {m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}
    assert groups == {2}
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)


def test_sizes_must_agree_with_the_data():
    with pytest.raises(ConfigError, match="in_channels: config says 3 but the data has 1"):
        build_model(ModelConfig(name="resnet10", in_channels=3), 2, 1, 3, "classification")
    with pytest.raises(ConfigError, match="segmentation network but data.task is 'classification'"):
        build_model(ModelConfig(name="unet"), 2, 1, 3, "classification")
