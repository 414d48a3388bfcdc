"""Temperature scaling of segmentation probabilities (``method.temperature: fit``): the fit against known logits,
and a run that fits it on its validation cases, keeps its masks, and carries it to predict and export after moving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_2D

from labelwise.config import load_config
from labelwise.metrics.fairness import expected_calibration_error
from labelwise.metrics.segmentation import calibration_nll, fit_temperature, foreground_probability, labelled_voxels

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("channels", [1, 2])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_with(channels):
    """Labels drawn from sigmoid(d / 2.5) for logit differences d: the fitted temperature is 2.5, the NLL and the ECE
    fall, and no voxel changes side of 0.5."""
    generator = torch.Generator().manual_seed(channels)
    d = 4 * torch.randn(3, 40, 50, generator=generator)  # three cases, over-confident logits
    labels = (torch.rand(d.shape, generator=generator) < torch.sigmoid(d / 2.5)).long()
    logits = d[:, None] if channels == 1 else torch.stack([-d / 2, d / 2], dim=1)
    region = torch.ones(3, 40, 50, dtype=torch.bool)
    region[:, :, :5] = False  # outside the roi: left out
    labels[:, :2] = -1  # no label: left out
    t = fit_temperature(list(logits), list(labels), list(region))
    assert t == pytest.approx(2.5, rel=0.06)
    z, y = labelled_voxels(list(logits), list(labels), list(region))
    assert len(y) == 3 * 38 * 45
    assert calibration_nll(z, y, t) < calibration_nll(z, y, 1.0)
    before, after = (expected_calibration_error(foreground_probability(z, s).numpy(), y.numpy()) for s in (1.0, t))
    assert after < before / 2
    assert torch.equal(foreground_probability(z, t) > 0.5, foreground_probability(z) > 0.5)


def test_a_run_fits_its_temperature_and_predict_and_export_apply_it_after_moving(tmp_path):
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.inference.run import load_run
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v2d", 2, 6, [48, 48], seed=1)
    overrides = [f"data.manifest={manifest}", *TINY_2D, "method.temperature=fit"]
    config = load_config(REPO / "configs" / "drive-noisy.yaml", overrides)
    assert train(config, tmp_path / "run").status == "completed"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    fitted = summary["calibration"]
    spec = json.loads((tmp_path / "run" / "inference.json").read_text())
    assert spec["inference"]["temperature"] == pytest.approx(fitted["temperature"]) and fitted["temperature"] != 1.0
    assert fitted["val_nll_after"] <= fitted["val_nll_before"] + 1e-9
    assert 0 < fitted["threshold"] < 1  # the threshold is then calibrated on the tempered probabilities
    # the test voxels' calibration, against a hand computation from the saved probabilities and masks
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume

    tested = tmp_path / "run" / "predictions" / "test"
    found = json.loads((tested / "segmentation.json").read_text())["references"]["label"]["calibration"]
    p, y = [], []
    for case in (c for c in read_manifest(manifest) if c.split == "test"):
        p.append(np.load(tested / "probabilities" / f"{case.id}.npy").reshape(-1))
        y.append(read_volume(case.label, mask=True).array.reshape(-1) > 0)
    p, y = np.concatenate(p).astype(np.float64), np.concatenate(y)
    bins = np.minimum((p * 15).astype(int), 14)
    ece = sum(abs(p[bins == b].sum() - y[bins == b].sum()) for b in range(15)) / p.size
    assert found["ece"] == pytest.approx(ece, abs=1e-6) and sum(found["voxels"]) == p.size
    from conftest import invoke_cli

    code, text = invoke_cli("report", str(tmp_path / "run"))
    assert code == 0, text
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="segmentation-reliability"' in html and "Expected\n    calibration error vs label" in html
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(tmp_path / "run", moved)
    run = load_run(moved)
    image = torch.from_numpy(run.preprocess(run.read_raw(tmp_path / "v2d" / "images" / "vessel_005.png")).array)[None]
    tempered = run.logits(image)
    run.method.temperature = 1.0
    raw = run.logits(image)
    np.testing.assert_allclose(tempered.numpy(), raw.numpy() / fitted["temperature"], rtol=1e-5, atol=1e-6)
    run.configure()  # the run's own settings again: its temperature
    assert run.method.temperature == pytest.approx(fitted["temperature"])
    from labelwise.inference.export import export_run

    sidecar = json.loads(Path(str(export_run(run, "onnx", tmp_path / "m.onnx")[0]) + ".json").read_text())
    assert sidecar["inference"]["temperature"] == pytest.approx(fitted["temperature"])
    assert "divide them by inference.temperature" in sidecar["output"]["note"]
