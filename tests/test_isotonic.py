"""Isotonic recalibration of segmentation probabilities (``method.isotonic: true``): the fit against scikit-learn's
``IsotonicRegression``, the map against ``numpy.interp``, and a run that fits it on its validation cases, keeps its
masks, and carries it to its test outputs, predict and export after moving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_2D
from sklearn.isotonic import IsotonicRegression

from labelwise.config import load_config
from labelwise.errors import ConfigError
from labelwise.metrics.fairness import expected_calibration_error
from labelwise.metrics.segmentation import fit_isotonic, interpolate

REPO = Path(__file__).resolve().parents[1]


def test_the_map_is_the_isotonic_regression_of_the_labels_and_calibrates_them():
    """Over-confident probabilities (labels drawn from a flatter, slightly wavy function of them): the map through
    the knots equals scikit-learn's isotonic regression of every voxel at every voxel; it is non-decreasing, it
    is the least-squares fit (no other non-decreasing map tried has a smaller squared error), and the in-sample
    ECE falls to about 0. Voxels of equal probability are pooled, as ties are."""
    rng = np.random.default_rng(0)
    p = np.round(rng.beta(0.5, 0.5, size=60_000), 3)  # ties
    truth = 0.15 + 0.7 * p**2 + 0.05 * np.sin(40 * p)
    y = rng.random(p.size) < truth
    xs, ys = fit_isotonic(torch.from_numpy(p), torch.from_numpy(y))
    assert np.all(np.diff(xs) >= 0) and np.all(np.diff(ys) >= -1e-12)
    oracle = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y.astype(float))
    mapped = interpolate(torch.from_numpy(p), xs, ys).numpy()
    np.testing.assert_allclose(mapped, oracle.predict(p), atol=1e-9)
    error = ((mapped - y) ** 2).sum()
    order = np.argsort(p)
    running_max = np.empty_like(truth)
    running_max[order] = np.maximum.accumulate(truth[order])  # a non-decreasing map near the truth
    for other in (p, 0.15 + 0.7 * p**2, running_max):
        assert error <= ((other - y) ** 2).sum()
    assert expected_calibration_error(p, y) > 0.05 and expected_calibration_error(mapped, y) < 0.005
    # a probability held by no voxel maps between its neighbours' values
    assert interpolate(torch.tensor([0.5]), xs, ys).item() == pytest.approx(float(oracle.predict([0.5])[0]))


def test_the_map_is_numpys_interp_inside_outside_and_with_one_knot():
    rng = np.random.default_rng(1)
    xs = np.sort(rng.random(12)) * 0.8 + 0.1
    ys = np.sort(rng.random(12))
    values = rng.random((3, 40)) * 1.2 - 0.1  # below the first knot, between, beyond the last
    for dtype in (torch.float32, torch.float64):
        got = interpolate(torch.tensor(values, dtype=dtype), list(xs), list(ys))
        assert got.dtype == dtype and got.shape == (3, 40)
        np.testing.assert_allclose(got.numpy(), np.interp(values, xs, ys), atol=1e-6)
    assert torch.equal(interpolate(torch.tensor([0.1, 0.9]), [0.3], [0.25]), torch.tensor([0.25, 0.25]))
    xs, ys = fit_isotonic(torch.empty(0), torch.empty(0))  # no voxels: the identity
    assert interpolate(torch.tensor([0.2, 0.7]), xs, ys).tolist() == pytest.approx([0.2, 0.7])


def _config(manifest: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "drive-noisy.yaml",
        [f"data.manifest={manifest}", *TINY_2D, *overrides],
    )


def test_a_run_fits_its_map_keeps_its_masks_and_predict_and_export_apply_it_after_moving(tmp_path):
    from conftest import invoke_cli

    from labelwise.data.manifest import read_manifest
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.data.volumes import read_volume
    from labelwise.inference.export import export_run
    from labelwise.inference.run import load_run
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v2d", 2, 6, [48, 48], seed=1)
    config = _config(manifest, "method.temperature=fit", "method.isotonic=true")
    assert train(config, tmp_path / "run").status == "completed"
    fitted = json.loads((tmp_path / "run" / "summary.json").read_text())["calibration"]
    spec = json.loads((tmp_path / "run" / "inference.json").read_text())["inference"]
    xs, ys = spec["isotonic"]["x"], spec["isotonic"]["y"]
    assert fitted["isotonic_knots"] == len(xs) == len(ys) >= 2 and fitted["temperature"] != 1.0
    assert np.all(np.diff(ys) >= 0) and 0 <= ys[0] <= ys[-1] <= 1
    assert fitted["val_ece_after_isotonic"] <= fitted["val_ece_before_isotonic"] + 1e-9
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(tmp_path / "run", moved)
    run = load_run(moved)
    assert run.method.isotonic == (xs, ys) and run.method.temperature == pytest.approx(fitted["temperature"])
    tested = moved / "predictions" / "test"
    for case in (c for c in read_manifest(manifest) if c.split == "test"):
        image = torch.from_numpy(run.preprocess(run.read_raw(case.image)).array)[None]
        logits = run.logits(image)
        mapped, mask, _ = run.segment(logits)
        run.method.isotonic = None
        raw, raw_mask, _ = run.segment(logits)
        run.configure()  # the run's own settings again: its map
        # the probability is the network's (tempered) one through the knots, the mask the network's own
        np.testing.assert_allclose(mapped[0].numpy(), np.interp(raw[0].numpy(), xs, ys), atol=1e-5)
        assert torch.equal(mask, raw_mask) and not torch.allclose(mapped, raw)
        # the run's own test outputs went through the same map
        saved = np.load(tested / "probabilities" / f"{case.id}.npy")
        np.testing.assert_allclose(saved, mapped[0].numpy(), atol=1e-4)
        # and so does predict's, from the moved folder
        out = tmp_path / "pred" / case.id
        code, text = invoke_cli("predict", str(moved), "--input", str(case.image), "--out", str(out))
        assert code == 0, text
        entry = json.loads((out / "predictions.json").read_text())["cases"][0]
        np.testing.assert_allclose(np.load(out / entry["probability_npy"]), saved, atol=1e-4)
        written = read_volume(out / entry["mask"], mask=True).array
        assert np.array_equal(written > 0, mask[0].numpy() > 0)
    sidecar = json.loads(Path(str(export_run(run, "onnx", tmp_path / "m.onnx")[0]) + ".json").read_text())
    assert sidecar["inference"]["isotonic"] == {"x": xs, "y": ys}
    assert "inference.isotonic" in sidecar["output"]["note"]
    code, text = invoke_cli("report", str(moved))
    assert code == 0, text
    assert "isotonic map" in (moved / "report.html").read_text()


@pytest.mark.parametrize(
    ("config", "task"),
    [("supervised-shapes-segmentation.yaml", "segmentation"), ("smoke.yaml", "classification")],
)
def test_isotonic_is_refused_for_several_classes_and_classification(config, task):
    from labelwise.data.datasets import load_data
    from labelwise.methods import METHODS

    cfg = load_config(REPO / "configs" / config, ["method.isotonic=true", "data.synth.n=40"])
    with pytest.raises(ConfigError, match=rf"isotonic: true recalibrates .* binary masks .* \d+ classes \({task}\)"):
        METHODS[cfg.method.name](cfg, load_data(cfg.data))
