"""labelwise's sliding windows against MONAI's ``sliding_window_inference``, which they reproduce without importing
MONAI: the same numbers, bit for bit."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from labelwise.models.windows import blend_windows, sliding_window_predict, window_starts


class Net(nn.Module):
    """A network whose output depends on a window's edges (zero-padded convolutions), so blending shows."""

    def __init__(self, dims: int, out_channels: int = 3):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        torch.manual_seed(0)
        self.net = nn.Sequential(conv(2, 4, 3, padding=1), nn.Tanh(), conv(4, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


CASES = [
    # spatial, roi, overlap, mode, sw_batch_size, batch, padding_mode
    ((50, 37), (32, 32), 0.5, "gaussian", 4, 1, "constant"),  # several windows, the last moved back
    ((50, 37), (32, 16), 0.25, "constant", 1, 2, "constant"),  # one window per call, two images
    ((9, 7), (16, 16), 0.5, "gaussian", 4, 1, "constant"),  # smaller than the window: padded, cropped back
    ((9, 40), (16, 16), 0.5, "gaussian", 3, 2, "reflect"),  # padded on one axis, windows on the other
    ((33, 33), (32, 32), 0.0, "gaussian", 2, 1, "replicate"),  # no overlap
    ((40, 40), (16, 16), 0.9, "constant", 5, 1, "constant"),  # stride int(16 * 0.1) = 1
    ((20, 9, 33), (16, 16, 16), 0.5, "gaussian", 4, 1, "constant"),  # 3D, padded on one axis
    ((24, 24, 24), (24, 24, 24), 0.5, "gaussian", 1, 2, "constant"),  # one window per image
]


@pytest.mark.parametrize("spatial, roi, overlap, mode, sw_batch_size, batch, padding_mode", CASES)
def test_blend_windows_equals_monai(spatial, roi, overlap, mode, sw_batch_size, batch, padding_mode):
    model = Net(len(spatial)).eval()
    image = torch.randn(batch, 2, *spatial, generator=torch.Generator().manual_seed(1))
    cpu = torch.device("cpu")
    with torch.no_grad():
        ours = blend_windows(image, roi, sw_batch_size, model, overlap, mode, padding_mode, cpu, cpu)
        theirs = sliding_window_inference(
            image, roi, sw_batch_size, model, overlap=overlap, mode=mode, padding_mode=padding_mode
        )
    assert ours is not None
    theirs = theirs.as_tensor() if hasattr(theirs, "as_tensor") else theirs
    assert ours.shape == theirs.shape == (batch, 3, *spatial) and ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


def test_window_starts():
    assert window_starts((50,), (32,), 0.5) == [(0,), (16,), (18,)]  # the last window ends at the edge
    assert window_starts((32, 40), (32, 16), 0.5) == [(0, s) for s in (0, 8, 16, 24)]
    assert window_starts((33,), (32,), 0.0) == [(0,), (1,)]


def test_outputs_of_another_size_go_through_monai():
    """A network whose outputs are half its windows' size: labelwise's blending declines, MONAI's scales."""
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2), nn.Upsample(scale_factor=1.0))
    image = torch.randn(1, 1, 40, 40)
    cpu = torch.device("cpu")
    with torch.no_grad():
        assert blend_windows(image, (16, 16), 4, model, 0.5, "gaussian", "constant", cpu, cpu) is None
    logits = sliding_window_predict(model, image, 16, overlap=0.5, divisible_by=1)
    assert logits.shape == (1, 1, 20, 20) and type(logits) is torch.Tensor
