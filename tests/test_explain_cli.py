"""``labelwise explain`` end to end: a trained run, real files in, overlays / NIfTI / index / report gallery out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from labelwise.config import load_config
from labelwise.explain import GradCAM, GradCAMPlusPlus
from labelwise.inference import load_run
from labelwise.training import train


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    cfg = {
        "name": "explain-2d",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 120, "size": 16, "num_classes": 3}, "task": "classification", "batch_size": 8},
        "model": {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "batch"},
        "trainer": {"max_steps": 4, "checkpoint_every": 4, "log_every": 2},
    }
    run_dir = tmp_path_factory.mktemp("explain") / "run-2d"
    train(load_config(cfg), run_dir)
    return run_dir


def test_explain_2d_writes_overlays_index_and_gallery(run_2d, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((rng.random((20, 24)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    result = run_cli(
        "explain",
        "--run",
        str(run_2d),
        "--input",
        str(folder),
        "--method",
        "gradcam",
        "--method",
        "gradcam++",
        "--target",
        "1",
        "--target",
        "2",
    )
    assert result.returncode == 0, result.stderr
    out = run_2d / "explanations"
    index = json.loads((out / "explanations.json").read_text())
    assert len(index["entries"]) == 2 * 2 * 2  # inputs x methods x targets
    assert {e["method"] for e in index["entries"]} == {"gradcam", "gradcam++"}
    entry = next(
        e
        for e in index["entries"]
        if e["method"] == "gradcam++" and e["target"] == 2 and e["input"].endswith("img1.png")
    )
    assert (out / entry["files"]["overlay"]).is_file()
    # The saved map is what the library gives for the same network and input.
    trained = load_run(run_2d)
    x = torch.from_numpy(trained.read(folder / "img1.png").array)
    expected = GradCAMPlusPlus(trained.model)(x[None], [[1, 2]])[0, 1].numpy()
    np.testing.assert_allclose(np.load(out / entry["files"]["map"]), expected, rtol=1e-5, atol=1e-6)
    report = (run_2d / "report.html").read_text()
    assert "Explanations" in report and "img1.png" in report


def test_explain_checkpoint_default_target_and_own_out(run_2d, tmp_path):
    checkpoint = max((run_2d / "checkpoints").glob("step-*"))
    image = tmp_path / "one.npy"
    np.save(image, np.random.default_rng(1).standard_normal((1, 16, 16)).astype(np.float32))
    out = tmp_path / "maps"
    result = run_cli("explain", "--checkpoint", str(checkpoint), "--input", str(image), "--out", str(out))
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((out / "explanations.json").read_text())["entries"]
    trained = load_run(checkpoint)
    x = torch.from_numpy(np.load(image))[None]
    assert entry["target"] == int(trained.model(x).argmax()) == entry["predicted"]
    np.testing.assert_allclose(
        np.load(out / entry["files"]["map"]), GradCAM(trained.model)(x)[0, 0].numpy(), rtol=1e-5, atol=1e-6
    )


def test_explain_3d_nifti(tmp_path):
    cfg = {
        "name": "explain-3d",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 60, "size": 12, "dim": 3, "num_classes": 2}, "task": "classification", "batch_size": 4},
        "model": {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"},
        "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
    }
    run_dir = tmp_path / "run-3d"
    train(load_config(cfg), run_dir)
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    volume = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((12, 14, 10)).astype(np.float32), affine), volume)
    result = run_cli("explain", "--run", str(run_dir), "--input", str(volume), "--method", "layercam")
    assert result.returncode == 0, result.stderr
    out = run_dir / "explanations"
    (entry,) = json.loads((out / "explanations.json").read_text())["entries"]
    saved = nib.load(str(out / entry["files"]["map"]))
    assert saved.shape == (12, 14, 10)
    np.testing.assert_allclose(saved.affine, affine)
    assert (out / entry["files"]["montage"]).is_file() and (out / entry["files"]["overlay"]).is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "x.png"], "give one of --run"),
        (["--run", "RUN", "--input", "missing.png"], "no such file"),
        (["--run", "RUN", "--input", "IMG", "--method", "gradcam+++"], "unknown"),
        (["--run", "RUN", "--input", "IMG", "--target", "9"], r"\[0, 3\)"),
        (["--run", "RUN", "--input", "IMG", "--target", "circle"], "no such class; this run's classes are 0 "),
        (["--run", "RUN", "--input", "IMG", "--layer", "layer9"], "no such submodule"),
        (["--run", "NOTARUN", "--input", "IMG"], "neither a run directory"),
    ],
)
def test_explain_bad_input_exits_2_with_one_message(run_2d, tmp_path, args, message):
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(image)
    args = [{"RUN": str(run_2d), "IMG": str(image), "NOTARUN": str(tmp_path)}.get(a, a) for a in args]
    result = run_cli("explain", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert __import__("re").search(message, result.stderr), result.stderr
