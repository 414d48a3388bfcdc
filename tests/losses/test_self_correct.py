"""Label self-correction towards the foreground, away from the labelled structures (``method.self_correct``):
the corrected targets against hand-made cases, and a run that corrects its masks while it trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from labelwise.config import load_config
from labelwise.errors import ConfigError
from labelwise.losses import self_corrected_target

REPO = Path(__file__).resolve().parents[2]


def test_far_confident_background_becomes_foreground_borders_do_not():
    target = torch.zeros(1, 12, 12, dtype=torch.int64)
    target[0, 2:10, 2:4] = 1  # a labelled vessel, columns 2-3
    foreground = torch.zeros(1, 12, 12)
    foreground[0, 2:10, 4] = 0.95  # its border, one pixel wider: within the band
    foreground[0, 2:10, 9] = 0.95  # a vessel the mask left out, 6 columns away
    foreground[0, 2:10, 10] = 0.6  # beside it, not confident enough
    corrected, changed = self_corrected_target(foreground, target, threshold=0.8, band=3)
    expected = target.clone()
    expected[0, 2:10, 9] = 1
    assert torch.equal(corrected, expected)
    assert torch.equal(changed, (expected != target))
    # no band: the border is taken too (the dilation that a calibrated threshold would have to undo)
    corrected, _ = self_corrected_target(foreground, target, threshold=0.8, band=0)
    assert corrected[0, 2:10, 4].eq(1).all() and corrected[0, 2:10, 9].eq(1).all()
    # a band as wide as the distance: the left-out vessel is near enough to stay
    corrected, changed = self_corrected_target(foreground, target, threshold=0.8, band=6)
    assert torch.equal(corrected, target) and not changed.any()


def test_in_3d_the_band_is_a_cube_and_foreground_is_never_removed():
    target = torch.zeros(2, 9, 9, 9, dtype=torch.int64)
    target[0, 4, 4, 4] = 1
    foreground = torch.full((2, 9, 9, 9), 0.9)
    foreground[0, 4, 4, 4] = 0.0  # the network disagrees with a labelled voxel: it stays labelled
    corrected, changed = self_corrected_target(foreground, target, threshold=0.8, band=2)
    near = torch.zeros(9, 9, 9, dtype=torch.bool)
    near[2:7, 2:7, 2:7] = True
    assert torch.equal(corrected[0].bool(), ~near | (target[0] > 0))
    assert corrected[1].eq(1).all() and int(changed[0].sum()) == 9**3 - 5**3


def test_a_run_corrects_its_masks_from_its_share_of_the_steps(tmp_path):
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v2d", 2, 5, [48, 48], seed=1)
    overrides = [
        f"data.manifest={manifest}",
        "data.patch_size=[32,32]",
        "data.patches_per_volume=4",
        "data.batch_size=2",
        "model.channels=[4,8,8,16,16]",
        "trainer.max_steps=4",
        "trainer.log_every=1",
        "trainer.val_every=0",
        "trainer.checkpoint_every=4",
        "method.tta=false",
        "method.self_correct=0.6",
        "method.self_correct_from=0.5",
    ]
    result = train(load_config(REPO / "configs" / "drive-noisy.yaml", overrides), tmp_path / "run")
    assert result.status == "completed"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_steps = {r["step"]: r for r in records if r.get("split") == "train"}
    assert "loss/corrected" not in train_steps[1] and "loss/corrected" not in train_steps[2]  # steps 0 and 1 of 4
    assert all(0 <= train_steps[s]["loss/corrected"] <= 1 for s in (3, 4))
    with pytest.raises(ConfigError, match="self_correct"):
        load_config(REPO / "configs" / "drive-noisy.yaml", [*overrides, "method.self_correct=1.5"])
    ds6 = load_config(REPO / "configs" / "drive-ds6.yaml", [*overrides, "method.baseline_steps=2"])
    with pytest.raises(ConfigError, match="ds6 does not"):  # a key DS6 inherits but would not use: refused
        train(ds6, tmp_path / "ds6")
