"""`labelwise predict --reference` and `labelwise evaluate segmentation --truth` pair predictions with reference
masks by one rule (:func:`labelwise.data.pairing.match_references`), through the CLI on real NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import invoke_cli

from labelwise.config import load_config
from labelwise.data.volumes import write_volume
from labelwise.training import train

SPACING = (0.5, 0.6, 0.8)


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    cfg = {
        "name": "matching-3d",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 40, "size": 16, "dim": 3, "num_classes": 2}, "task": "segmentation", "batch_size": 4},
        "model": {"name": "unet", "channels": [4, 8], "norm": "instance"},
        "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
    }
    path = tmp_path_factory.mktemp("matching") / "run"
    train(load_config(cfg), path)
    return path


def _image_and_reference(folder):
    rng = np.random.default_rng(0)
    image = (rng.standard_normal((20, 18, 14)) * 0.3).astype(np.float32)
    image[5:12, 6:12, 4:10] += 1.0
    reference = np.zeros(image.shape, np.uint8)
    reference[6:12, 6:11, 4:9] = 1
    write_volume(folder / "inputs" / "case1.nii.gz", image, SPACING)
    write_volume(folder / "refs" / "case1_mask.nii.gz", reference, SPACING)
    return folder / "inputs", folder / "refs"


def test_a_lone_suffixed_reference_pairs_the_same_way_in_predict_and_evaluate(run_3d, tmp_path):
    """``case1_mask.nii.gz`` beside the prediction ``case1.nii.gz``: predict pairs it, and so does evaluate (it
    refused the pair before the two shared a matcher), with the same Dice."""
    inputs, refs = _image_and_reference(tmp_path)
    out = tmp_path / "out"
    code, text = invoke_cli(
        "predict",
        str(run_3d),
        "--input",
        str(inputs),
        "--out",
        str(out),
        "--reference",
        str(refs),
        "--threshold",
        "0.3",
    )
    assert code == 0, text
    (entry,) = json.loads((out / "predictions.json").read_text())["cases"]
    assert entry["reference"] == str(refs / "case1_mask.nii.gz")

    code, text = invoke_cli(
        "evaluate", "segmentation", "--pred", str(out), "--truth", str(refs), "--json", str(tmp_path / "scores.json")
    )
    assert code == 0, text
    (case,) = json.loads((tmp_path / "scores.json").read_text())["cases"]
    assert case["id"] == "case1" and case["truth"] == str(refs / "case1_mask.nii.gz")
    assert case["pred"] == str(out / "masks" / "case1.nii.gz")
    mask = np.asarray(nib.load(out / "masks" / "case1.nii.gz").dataobj) > 0
    reference = np.asarray(nib.load(refs / "case1_mask.nii.gz").dataobj) > 0
    expected = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
    assert entry["dice"] == pytest.approx(expected) and case["dice"] == pytest.approx(expected)
