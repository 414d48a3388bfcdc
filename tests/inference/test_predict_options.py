"""Inference options of segmentation runs: flip test-time augmentation, removal of small components, windows per
pass and the device, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.morphology import remove_small_objects

from labelwise.config import load_config
from labelwise.data.datasets import DataBundle
from labelwise.errors import ConfigError, LabelwiseError
from labelwise.methods import METHODS
from labelwise.models.outputs import most_foreground, remove_small_components
from labelwise.models.windows import sliding_window_predict


def test_small_components_are_removed_per_class_like_skimage():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.choice(3, size=(2, 40, 40), p=[0.7, 0.2, 0.1]))
    kept = remove_small_components(labels, 5).numpy()
    for case, out in zip(labels.numpy(), kept):
        expected = np.zeros_like(case)
        for k in (1, 2):
            expected[remove_small_objects(case == k, max_size=4, connectivity=1)] = k  # removes sizes <= 4
        np.testing.assert_array_equal(out, expected)
    assert torch.equal(remove_small_components(labels, 0), labels)


def _segmenter(options: dict, dims: int = 2, classes: int = 3) -> object:
    cfg = load_config(
        {
            "seed": 0,
            "method": {"name": "supervised", "loss": "dice_ce", **options},
            "data": {"synth": {"n": 8}, "task": "segmentation"},
            "model": {"name": "unet", "channels": [4, 8]},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    data = DataBundle(
        splits={}, task="segmentation", num_classes=classes, in_channels=1, spatial_dims=dims, image_size=(16,) * dims
    )
    torch.manual_seed(0)
    method = METHODS["supervised"](cfg, data)
    method.networks["model"].eval()
    return method


@pytest.mark.parametrize("dims", [2, 3])
def test_tta_is_the_mean_of_the_logits_over_every_flip(dims):
    method = _segmenter({"tta": True}, dims)
    method.window = [16] * dims
    image = torch.randn(1, 1, *([20] * dims))
    model = method.networks["model"]
    axes = list(range(2, 2 + dims))
    flips = [[a for k, a in enumerate(axes) if m >> k & 1] for m in range(2**dims)]
    expected = sum(sliding_window_predict(model, image.flip(f), [16] * dims).flip(f) for f in flips) / len(flips)
    torch.testing.assert_close(method.predict(image), expected, rtol=1e-5, atol=1e-6)
    method.tta = False
    assert not torch.allclose(method.predict(image), expected)


def test_most_foreground_keeps_per_voxel_the_view_likeliest_foreground():
    # two channels, two voxels: view a says foreground minus background 1 and -2, view b 0.5 and 1
    a = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]])
    b = torch.tensor([[[[1.0, -1.0]], [[1.5, 0.0]]]])
    expected = torch.tensor([[[[0.0, -1.0]], [[1.0, 0.0]]]])  # voxel 0 from a, voxel 1 from b, both channels
    assert torch.equal(most_foreground([a, b]), expected)
    assert torch.equal(most_foreground([b, a]), expected)
    one = torch.tensor([[[[0.3, -2.0, 5.0]]]])
    other = torch.tensor([[[[0.1, 1.0, -5.0]]]])
    assert torch.equal(most_foreground([one, other]), torch.tensor([[[[0.3, 1.0, 5.0]]]]))  # one channel: the max
    with pytest.raises(ConfigError, match="binary"):
        most_foreground([torch.zeros(1, 3, 2, 2)] * 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_scales_keep_per_voxel_the_magnified_view_surest_of_the_foreground(dims):
    method = _segmenter({"scales": [1.0, 1.5]}, dims, classes=2)
    method.window = [16] * dims
    image = torch.randn(1, 1, *([20] * dims))
    model = method.networks["model"]
    mode = "bilinear" if dims == 2 else "trilinear"
    native = sliding_window_predict(model, image, [16] * dims)
    big = F.interpolate(image, size=[30] * dims, mode=mode, align_corners=False)
    back = F.interpolate(
        sliding_window_predict(model, big, [16] * dims), size=[20] * dims, mode=mode, antialias=dims == 2
    )
    take = (back[:, 1] - back[:, 0] > native[:, 1] - native[:, 0]).unsqueeze(1)
    assert 0 < take.float().mean() < 1  # both views win somewhere
    predicted = method.predict(image)
    torch.testing.assert_close(predicted, torch.where(take, back, native), rtol=1e-5, atol=1e-6)
    foreground = predicted.softmax(1)[:, 1]
    assert bool((foreground >= native.softmax(1)[:, 1] - 1e-6).all())  # never less sure than the image as it is
    method.scales = (1.0,)
    torch.testing.assert_close(method.predict(image), native)


def test_scales_are_refused_for_more_than_two_classes():
    with pytest.raises(ConfigError, match=r"method.scales.*binary masks \(2 classes\); the data has 3 classes"):
        _segmenter({"scales": [1.0, 1.5]})
    with pytest.raises(ConfigError, match="method.scales.*must be positive") as refused:
        _segmenter({"scales": [1.0, 0.0]}, classes=2)
    assert "classes" not in str(refused.value)  # binary data: the class count is not the problem


def test_the_method_segments_with_its_min_size():
    method = _segmenter({"min_size": 6})
    logits = torch.randn(2, 3, 24, 24)
    _, labels = method.segment(logits)
    assert torch.equal(labels, remove_small_components(logits.argmax(1), 6))


def test_an_unavailable_device_is_refused_in_one_line(tmp_path):
    from labelwise.inference.run import load_run

    with pytest.raises(LabelwiseError, match="--device cuda:7"):
        load_run(_trained(tmp_path), device="cuda:7")


def _trained(tmp_path):
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v", 2, 5, [32, 32], seed=0)
    cfg = load_config(
        {
            "seed": 0,
            "method": "supervised",
            "data": {"manifest": str(manifest), "task": "segmentation", "batch_size": 2, "patches_per_volume": 2},
            "model": {"name": "unet", "channels": [4, 8]},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    return train(cfg, tmp_path / "run").run_dir


def test_predict_options_override_the_run_and_are_recorded(tmp_path):
    import json

    from conftest import invoke_cli

    run = _trained(tmp_path)
    image = sorted((tmp_path / "v" / "images").iterdir())[0]
    out = tmp_path / "out"
    code, text = invoke_cli(
        "predict",
        str(run),
        "--input",
        str(image),
        "--out",
        str(out),
        "--tta",
        "--min-size",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    )
    assert code == 0, text
    entry = json.loads((out / "predictions.json").read_text())["cases"][0]
    assert entry["tta"] is True and entry["min_size"] == 3
    code, text = invoke_cli("predict", str(run), "--input", str(image), "--out", str(tmp_path / "plain"))
    entry = json.loads((tmp_path / "plain" / "predictions.json").read_text())["cases"][0]
    assert entry["tta"] is False and entry["min_size"] == 0
