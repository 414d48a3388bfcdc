"""The vessel workflow from the command line, as docs/vessels.md shows it: synthetic data, the shipped configs
(shortened), prediction with difference maps, and evaluation against the clean masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

from labelwise.config import load_config
from labelwise.data.volumes import read_volume

SHORT = [
    "--set",
    "trainer.max_steps=3",
    "--set",
    "trainer.checkpoint_every=3",
    "--set",
    "trainer.val_every=0",
    "--set",
    "model.channels=[2,4,4,4,4]",
    "--set",
    "data.patches_per_volume=2",
    "--set",
    "data.batch_size=2",
]


@pytest.fixture(scope="module")
def vessels_2d(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vessels") / "vessels-2d"
    result = run_cli("data", "synth", "vessels", "--dim", "2", "--n", "5", "--shape", "96", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "[5/5] vessel_004 (test)" in result.stdout
    return out


@pytest.mark.parametrize(
    "name",
    ["unet-mss-synthetic-3d", "ds6-synthetic-3d", "frangi-synthetic-3d", "unet-mss-synthetic-2d", "ds6-synthetic-2d"],
)
def test_shipped_configs_load(tmp_path, name):
    (tmp_path / "manifest.csv").write_text("id,image,label,split\n")
    cfg = load_config(REPO / "configs" / f"{name}.yaml", [f"data.manifest={tmp_path / 'manifest.csv'}"])
    assert cfg.data.manifest == tmp_path / "manifest.csv"
    if cfg.method.name != "frangi":
        assert cfg.model.name == "unet_mss" and len(cfg.data.patch_size) == (3 if name.endswith("3d") else 2)


def test_train_predict_evaluate_2d(vessels_2d, tmp_path):
    run = tmp_path / "ds6"
    result = run_cli(
        "train",
        str(REPO / "configs" / "ds6-synthetic-2d.yaml"),
        "--run-dir",
        str(run),
        "--set",
        f"data.manifest={vessels_2d / 'manifest.csv'}",
        "--set",
        "data.patch_size=[64,64]",
        "--set",
        "method.baseline_steps=1",
        *SHORT,
    )
    assert result.returncode == 0, result.stderr
    assert (run / "predictions" / "test" / "masks" / "vessel_004.png").is_file()
    out = tmp_path / "pred"
    result = run_cli(
        "predict",
        str(run),
        "--input",
        str(vessels_2d / "images" / "vessel_004.png"),
        "--out",
        str(out),
        "--reference",
        str(vessels_2d / "truth"),
        "--threshold",
        "otsu",
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 1 case(s)" in result.stdout and "mean Dice" in result.stdout
    assert (out / "figures" / "vessel_004_diff.png").is_file()
    mask = read_volume(out / "masks" / "vessel_004.png", mask=True).array
    assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 1}
    scores = tmp_path / "scores.json"
    result = run_cli(
        "evaluate",
        "segmentation",
        "--pred",
        str(out),
        "--truth",
        str(vessels_2d / "truth"),
        "--allow-missing",
        "--json",
        str(scores),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(scores.read_text())
    assert data["n"] == 1 and data["cases"][0]["id"] == "vessel_004"
    truth = read_volume(vessels_2d / "truth" / "vessel_004.png", mask=True).array > 0
    pred = mask > 0
    assert data["cases"][0]["dice"] == pytest.approx(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))


def test_evaluate_refuses_mismatched_shapes(vessels_2d, tmp_path):
    from labelwise.data.volumes import write_volume

    write_volume(tmp_path / "vessel_000.png", np.zeros((10, 10), np.int64))
    result = run_cli(
        "evaluate", "segmentation", "--pred", str(tmp_path), "--truth", str(vessels_2d / "truth"), "--allow-missing"
    )
    assert result.returncode == 2
    assert "vessel_000.png" in result.stderr and "shape" in result.stderr
