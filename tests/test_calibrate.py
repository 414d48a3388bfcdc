"""``labelwise calibrate RUN --folds K``: cross-fitted isotonic calibration of a moved binary segmentation run, from
files on disk through the CLI: the fold runs' out-of-fold probabilities, the map against scikit-learn's isotonic
regression of the same voxels, the run's inference state and test outputs rewritten (masks unchanged), the test ECE
by hand, predict applying the map, a second call reusing the folds, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_2D, invoke_cli
from sklearn.isotonic import IsotonicRegression

from labelwise.config import load_config
from labelwise.data.manifest import read_manifest
from labelwise.data.volumes import read_volume
from labelwise.metrics.fairness import expected_calibration_error


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.training import train

    root = tmp_path_factory.mktemp("calibrate")
    manifest = write_vessels(root / "v2d", 2, 9, [40, 40], seed=3, splits=[5, 2, 2])
    config = load_config(
        REPO / "configs" / "drive-unet-mss.yaml", [f"data.manifest={manifest}", *TINY_2D, "method.temperature=fit"]
    )
    assert train(config, root / "run").status == "completed"
    moved = root / "elsewhere" / "run"
    shutil.move(root / "run", moved)
    return root, manifest, moved


def _voxels(case, foreground):
    label = read_volume(case.label, mask=True).array
    return foreground.reshape(-1), (label > 0).reshape(-1)


def test_a_moved_run_is_calibrated_on_out_of_fold_probabilities_through_the_cli(moved_run):
    from labelwise.audit.segmentation import case_probabilities
    from labelwise.inference.run import load_run

    root, manifest, run = moved_run
    cases = read_manifest(manifest)
    masks_before = {p.name: read_volume(p, mask=True).array for p in (run / "predictions" / "test" / "masks").iterdir()}
    code, text = invoke_cli("calibrate", str(run), "--folds", "2", "--out", str(root / "cal"))
    assert code == 0, text
    assert "[fold 1/2] training" in text and "[fold 2/2] training" in text
    assert not list((root / "cal" / "folds").rglob(".labelwise-cache"))  # the folds read the run's case cache
    record = json.loads((root / "cal" / "calibration.json").read_text())
    assert record["fitted_on"] == {"training cases (out of fold)": 5, "validation cases": 2}
    xs, ys = record["isotonic"]["x"], record["isotonic"]["y"]
    spec = json.loads((run / "inference.json").read_text())["inference"]
    assert spec["isotonic"] == {"x": xs, "y": ys} and record["knots"] == len(xs)
    assert json.loads((run / "summary.json").read_text())["calibration"]["crossfit"]["knots"] == len(xs)
    # every training case's probabilities are those of the fold run that did not train on it
    folds = json.loads((root / "cal" / "folds" / "folds.json").read_text())["folds"]
    assert sorted(folds) == sorted(c.id for c in cases if c.split == "train") and set(folds.values()) == {0, 1}
    case = next(c for c in cases if c.split == "train")
    held_out = load_run(root / "cal" / "folds" / f"fold-{folds[case.id]}" / "run")
    fold_manifest = read_manifest(root / "cal" / "folds" / f"fold-{folds[case.id]}" / "manifest.csv")
    assert case.id not in {c.id for c in fold_manifest}
    saved = np.load(root / "cal" / "probabilities" / f"{case.id}.npy").astype(np.float32)
    np.testing.assert_allclose(saved, case_probabilities(held_out, case)[0], atol=2e-3)
    # the map: scikit-learn's isotonic regression of the fitted cases' voxels (no roi, every voxel labelled)
    pooled = [
        _voxels(c, 1 - np.load(root / "cal" / "probabilities" / f"{c.id}.npy").astype(np.float64)[0])
        for c in cases
        if c.split in ("train", "val")
    ]
    p, y = np.concatenate([v[0] for v in pooled]), np.concatenate([v[1] for v in pooled])
    oracle = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y.astype(float))
    np.testing.assert_allclose(np.interp(p, xs, ys), oracle.predict(p), atol=1e-9)
    assert record["ece_before"] == pytest.approx(expected_calibration_error(p, y))
    # the run's test outputs were rewritten through the map: the same masks, the mapped probabilities
    model = load_run(run)
    assert model.method.isotonic == (xs, ys)
    test = [c for c in cases if c.split == "test"]
    unmapped, mapped, labels = [], [], []
    for c in test:
        image = torch.from_numpy(model.preprocess(model.read_raw(c.image)).array)[None]
        foreground = model.segment(model.logits(image))[0][0].numpy()
        model.method.isotonic = None
        raw = model.segment(model.logits(image))[0][0].numpy()
        model.configure()
        written = np.load(run / "predictions" / "test" / "probabilities" / f"{c.id}.npy")
        np.testing.assert_allclose(written, foreground, atol=1e-5)
        np.testing.assert_allclose(foreground, np.interp(raw, xs, ys), atol=1e-5)
        for values, into in ((raw, unmapped), (foreground, mapped)):
            into.append(values.reshape(-1))
        labels.append(_voxels(c, raw)[1])
    after = {p.name: read_volume(p, mask=True).array for p in (run / "predictions" / "test" / "masks").iterdir()}
    assert after.keys() == masks_before.keys() and all(np.array_equal(after[k], masks_before[k]) for k in after)
    y_test = np.concatenate(labels)
    assert record["test_ece_before"] == pytest.approx(expected_calibration_error(np.concatenate(unmapped), y_test))
    assert record["test_ece_after"] == pytest.approx(
        expected_calibration_error(np.concatenate(mapped), y_test), abs=1e-6
    )
    scored = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    assert scored["references"]["label"]["calibration"]["ece"] == pytest.approx(record["test_ece_after"], abs=1e-6)
    # predict from the moved run writes the mapped probability
    code, text = invoke_cli("predict", str(run), "--input", str(test[0].image), "--out", str(root / "pred"))
    assert code == 0, text
    entry = json.loads((root / "pred" / "predictions.json").read_text())["cases"][0]
    np.testing.assert_allclose(
        np.load(root / "pred" / entry["probability_npy"]),
        np.load(run / "predictions" / "test" / "probabilities" / f"{test[0].id}.npy"),
        atol=1e-4,
    )
    # the report says where the map came from
    code, text = invoke_cli("report", str(run))
    assert code == 0, text
    assert "probabilities through an isotonic map (cross-fitted on 2 folds)" in (run / "report.html").read_text()
    # a second call reuses the fold runs and the saved probabilities, and fits the same map
    code, text = invoke_cli("calibrate", str(run), "--folds", "2", "--out", str(root / "cal"))
    assert code == 0, text
    assert "[fold 1/2] done earlier" in text and "[fold 2/2] done earlier" in text
    assert json.loads((root / "cal" / "calibration.json").read_text())["isotonic"] == {"x": xs, "y": ys}


def test_calibrate_refuses_a_run_that_is_not_binary_segmentation(tmp_path):
    from labelwise.training import train

    config = load_config(REPO / "configs" / "smoke.yaml", ["trainer.max_steps=2", "trainer.checkpoint_every=2"])
    assert train(config, tmp_path / "run").status == "completed"
    code, text = invoke_cli("calibrate", str(tmp_path / "run"), "--out", str(tmp_path / "cal"))
    assert code == 2 and "binary segmentation run" in text
    code, text = invoke_cli("calibrate", str(tmp_path / "run"), "--out", str(tmp_path / "cal"), "--folds", "1")
    assert code != 0 and "greater than or equal to 2" in text
