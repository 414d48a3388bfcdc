"""Refusals through the CLI (issue 28, point 8): a corrupted or mismatched weights file, inputs holding NaN or
infinite values, and a resume whose config changes the network or ends before its checkpoint. Each exits 2 with
one line naming the file or the key, and writes nothing."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import yaml
from conftest import invoke_cli, run_cli

from labelwise.config import load_config
from labelwise.training import train

CLASSIFICATION = {
    "name": "refusals",
    "seed": 0,
    "method": "supervised",
    "data": {"synth": {"n": 40, "size": 16, "num_classes": 3}, "task": "classification", "batch_size": 8},
    "model": {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "group"},
    "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classification run of 2 steps (checkpoint at step 2), and a 2D segmentation run; tests work on copies."""
    root = tmp_path_factory.mktemp("refusals")
    segmentation = copy.deepcopy(CLASSIFICATION)
    segmentation["data"] = {"synth": {"n": 20, "size": 16, "num_classes": 2}, "task": "segmentation", "batch_size": 4}
    segmentation["model"] = {"name": "unet", "channels": [4, 8], "norm": "instance"}
    runs = {}
    for name, cfg in (("classification", CLASSIFICATION), ("segmentation", segmentation)):
        assert train(load_config(cfg), root / name).status == "completed"
        runs[name] = root / name
    return runs


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the classification run."""
    return shutil.copytree(trained["classification"], tmp_path / "run")


def _image(path, value=0.5):
    np.save(path, np.full((16, 16), value, dtype=np.float32))
    return path


def _one_line(code, text):
    assert code == 2, text
    assert "\n" not in text.strip(), text
    return text


# --- 1. weights ------------------------------------------------------------------------------------------------


def test_predict_refuses_corrupted_weights_naming_the_file(run, tmp_path):
    weights = run / "checkpoints" / "step-000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as a copy cut short
    text = _one_line(
        *invoke_cli("predict", str(run), "--input", str(_image(tmp_path / "a.npy")), "--out", str(tmp_path / "out"))
    )
    assert str(weights) in text and "corrupted" in text
    assert not (tmp_path / "out").exists()


def test_predict_with_corrupted_weights_prints_one_error_line(run, tmp_path):
    """As a user sees it: a fresh process, no traceback."""
    weights = run / "checkpoints" / "step-000002" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file at all")
    result = run_cli("predict", str(run), "--input", str(_image(tmp_path / "a.npy")), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(weights) in lines[0]


def test_weights_of_another_shape_are_refused_naming_the_file(run, tmp_path):
    """config.yaml edited after training: the network built from it no longer fits its weights."""
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["model"]["channels"] = [8, 8, 8, 8]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    text = _one_line(
        *invoke_cli("predict", str(run), "--input", str(_image(tmp_path / "a.npy")), "--out", str(tmp_path / "out"))
    )
    assert str(run / "checkpoints" / "step-000002" / "model.safetensors") in text and "shape" in text


# --- 2. inputs holding NaN or infinite values -------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_classification_predict_refuses_a_nan_input_naming_it(run, tmp_path, value):
    good, bad = _image(tmp_path / "good.npy"), _image(tmp_path / "bad.npy", value)
    out = tmp_path / "out"
    text = _one_line(*invoke_cli("predict", str(run), "--input", str(good), "--input", str(bad), "--out", str(out)))
    assert str(bad) in text and "NaN or infinite" in text
    assert not out.exists()


def test_classification_predict_refuses_a_nan_sample_of_a_dataset_npz(run, tmp_path):
    image = np.zeros((3, 1, 16, 16), dtype=np.float32)
    image[1, 0, 3, 4] = np.nan
    data = tmp_path / "set.npz"
    np.savez(data, image=image, ids=np.array(["a", "b", "c"]))
    text = _one_line(*invoke_cli("predict", str(run), "--input", str(data), "--out", str(tmp_path / "out")))
    assert str(data) in text and "sample b" in text and "NaN or infinite" in text


def test_segmentation_predict_and_explain_refuse_a_nan_input_naming_it(trained, tmp_path):
    from labelwise.data.volumes import write_volume

    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    image[2, 3] = np.nan
    bad = write_volume(tmp_path / "bad.nii.gz", image)
    seg = trained["segmentation"]
    text = _one_line(*invoke_cli("predict", str(seg), "--input", str(bad), "--out", str(tmp_path / "out")))
    assert str(bad) in text and "NaN or infinite" in text
    assert not (tmp_path / "out").exists()
    text = _one_line(*invoke_cli("explain", "--run", str(seg), "--input", str(bad), "--out", str(tmp_path / "maps")))
    assert str(bad) in text and "NaN or infinite" in text


# --- 3. and 4. resume -------------------------------------------------------------------------------------------


def _resume(run, *sets):
    before = (run / "config.yaml").read_text(), (run / "summary.json").read_text()
    args = [a for s in sets for a in ("--set", s)]
    code, text = invoke_cli("train", "--resume", str(run), "--no-report", *args)
    after = (run / "config.yaml").read_text(), (run / "summary.json").read_text()
    assert after == before  # refused before anything was written
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000002"]
    return _one_line(code, text)


def test_resume_refuses_a_change_of_the_network_naming_the_key(run):
    text = _resume(run, "model.channels=[8, 8, 8, 8]", "trainer.max_steps=4")
    assert "model.channels" in text and "[4, 8, 8, 8] -> [8, 8, 8, 8]" in text and str(run) in text


def test_resume_refuses_every_key_that_changes_the_network(run):
    text = _resume(run, "model.norm=batch", "data.synth.num_classes=2", "trainer.log_every=5")
    assert "model.norm" in text and "data.synth.num_classes" in text and "log_every" not in text


def test_resume_refuses_max_steps_below_the_checkpoint(run):
    text = _resume(run, "trainer.max_steps=1")
    assert "trainer.max_steps" in text and "1" in text and "step 2" in text and str(run) in text


def test_resume_may_change_keys_that_leave_the_network_as_it_was(run):
    code, text = invoke_cli(
        "train", "--resume", str(run), "--no-report", "--set", "trainer.max_steps=3", "--set", "trainer.log_every=5"
    )
    assert code in (0, None), text
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 3 and saved["trainer"]["log_every"] == 5


def test_predict_uncertainty_is_refused_for_a_classification_run(run, tmp_path):
    text = _one_line(
        *invoke_cli(
            "predict",
            str(run),
            "--input",
            str(_image(tmp_path / "a.npy")),
            "--out",
            str(tmp_path / "o"),
            "--uncertainty",
        )  # fmt: skip
    )
    assert "--uncertainty: only for segmentation runs" in text and not (tmp_path / "o").exists()


def test_an_ensemble_of_classification_runs_is_refused(run, tmp_path):
    text = _one_line(
        *invoke_cli(
            "predict",
            str(run),
            str(run),
            "--input",
            str(_image(tmp_path / "a.npy")),
            "--out",
            str(tmp_path / "o"),
        )  # fmt: skip
    )
    assert "2 runs given: ensembles are for segmentation runs" in text and not (tmp_path / "o").exists()
