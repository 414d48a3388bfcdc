"""evaluate_explanations: one row per method, equal to the metric functions called directly; reference maps."""

from __future__ import annotations

import pytest
import torch
from monai.networks import nets

from labelwise.explain import GradCAM
from labelwise.explain import metrics as m
from labelwise.explain.evaluate import COLUMNS, baseline_maps, evaluate_explanations


def test_rows_equal_the_metrics_called_directly():
    torch.manual_seed(0)
    model = nets.ResNet(
        "basic",
        [1, 1, 1, 1],
        [4, 8, 8, 8],
        spatial_dims=2,
        n_input_channels=1,
        num_classes=3,
        conv1_t_stride=1,
        no_max_pool=True,
    ).eval()
    x = torch.randn(5, 1, 16, 16)
    targets = torch.tensor([0, 1, 2, 1, 0])
    masks = torch.zeros(5, 16, 16, dtype=torch.bool)
    masks[:, 2:9, 3:12] = True
    rows = evaluate_explanations(model, x, targets, masks, methods=["gradcam", "center"], batch_size=2, steps=4)
    assert [r["method"] for r in rows] == ["gradcam", "center"]
    assert all(set(COLUMNS) <= set(r) and r["n"] == 5 for r in rows)
    maps = GradCAM(model)(x, targets)[:, 0]
    assert rows[0]["pointing_game"] == pytest.approx(float(m.pointing_game(maps, masks).nanmean()))
    assert rows[0]["tolerance"] == 15.0 and rows[0]["activation"] == "softmax"  # Zhang et al.'s 15 pixels, said
    assert rows[0]["deletion_auc"] == pytest.approx(float(m.deletion_auc(model, x, maps, targets, steps=4).mean()))
    assert rows[0]["insertion_auc"] == pytest.approx(float(m.insertion_auc(model, x, maps, targets, steps=4).mean()))


def test_multilabel_models_are_scored_with_their_sigmoid():
    torch.manual_seed(0)
    model = nets.ResNet(
        "basic",
        [1, 1, 1, 1],
        [4, 8, 8, 8],
        spatial_dims=2,
        n_input_channels=1,
        num_classes=3,
        conv1_t_stride=1,
        no_max_pool=True,
    ).eval()
    x = torch.randn(4, 1, 16, 16)
    targets = torch.tensor([0, 1, 2, 1])
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[:, 1, 1] = True  # far from most maxima: only a tolerance reaches it
    rows = evaluate_explanations(
        model, x, targets, masks, methods=["gradcam"], steps=4, activation="sigmoid", tolerance=0.0
    )
    maps = GradCAM(model)(x, targets)[:, 0]
    sigmoid = float(m.deletion_auc(model, x, maps, targets, steps=4, activation="sigmoid").mean())
    softmax = float(m.deletion_auc(model, x, maps, targets, steps=4).mean())
    assert rows[0]["deletion_auc"] == pytest.approx(sigmoid) and sigmoid != pytest.approx(softmax)
    assert rows[0]["pointing_game"] == pytest.approx(float(m.pointing_game(maps, masks, 0.0).nanmean()))
    assert rows[0]["tolerance"] == 0.0 and rows[0]["activation"] == "sigmoid"


def test_pointing_game_defaults_to_fifteen_pixels():
    maps = torch.zeros(1, 40, 40)
    maps[0, 30, 30] = 1.0
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[0, 30, 16] = True  # 14 pixels from the maximum
    assert float(m.pointing_game(maps, mask)) == 1.0
    assert float(m.pointing_game(maps, mask, 0.0)) == 0.0
    mask[0, 30, 16], mask[0, 30, 14] = False, True  # 16 pixels
    assert float(m.pointing_game(maps, mask)) == 0.0


def test_center_baseline_points_at_the_middle():
    images = torch.zeros(2, 1, 9, 11)
    center = baseline_maps("center", images)
    assert center.shape == (2, 1, 9, 11)
    assert divmod(int(center[0, 0].argmax()), 11) == (4, 5)
    noise = baseline_maps("random", images, seed=3)
    torch.testing.assert_close(noise, baseline_maps("random", images, seed=3))
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_maps("corner", images)
