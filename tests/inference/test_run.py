"""A run loaded as a model: the spec it writes, defaults that reload, inputs read as training read them, data paths
that move with the project."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from labelwise.config import load_config, save_config
from labelwise.data.intensity import preprocess_image
from labelwise.data.npz import load_npz, save_npz
from labelwise.data.synth import make_shapes
from labelwise.data.table import write_folder_table
from labelwise.data.volumes import read_volume
from labelwise.inference import load_run, predict_classes
from labelwise.training import train

TRAINER = {"max_steps": 2, "checkpoint_every": 2, "log_every": 1}


def test_a_config_without_a_model_section_names_a_real_network(tmp_path):
    save_npz(tmp_path / "set.npz", make_shapes(n=30, size=16, num_classes=2, seed=0))
    cfg = {
        "name": "nomodel",
        "seed": 0,
        "method": "supervised",
        "data": {"path": str(tmp_path / "set.npz"), "batch_size": 4},
        "trainer": TRAINER,
    }
    run = train(load_config(cfg), tmp_path / "run").run_dir
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == "resnet18"
    assert load_run(run).model.__class__.__name__ == "ResNet"
    segmentation = load_config({**cfg, "data": {**cfg["data"], "task": "segmentation"}})
    assert segmentation.model.name == "unet"
    from labelwise.report import build_report

    html = build_report(run).read_text()
    section = html[html.index('<section id="model">') :]
    section = section[: section.index("</section>")]
    assert "resnet18 (2D, 1 input channel(s), 2 output(s)" in section and "softmax (over classes)" in section
    assert "0 disc, 1 square" in section and f"labelwise predict runs/{run.name}" in section


def test_the_shipped_frangi_config_reloads_from_its_saved_copy(tmp_path):
    from conftest import REPO

    text = (REPO / "configs" / "frangi-synthetic-3d.yaml").read_text()
    raw = yaml.safe_load(text)
    raw["data"]["manifest"] = str(tmp_path / "manifest.csv")
    (tmp_path / "manifest.csv").write_text("id,image,label,split\n")
    config = load_config(raw)
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml", check_files=False)
    assert again.model.name == config.model.name == "unet"


def test_sixteen_bit_pictures_and_channel_statistics_as_training_saw_them(tmp_path):
    """A classification folder of 16-bit PNGs with ``intensity: channel``: the run stores the training split's
    statistics, reads a 16-bit file as training did (not as 8 bits) and predicts its own test probabilities."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pictures"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            picture = (rng.random((12, 12)) * 3000 + (20000 if label == "b" else 0)).astype(np.uint16)
            Image.fromarray(picture).save(root / label / f"{label}{i}.png")
    table = write_folder_table(root, val=0.2, test=0.3, seed=0)
    cfg = {
        "name": "png16",
        "seed": 0,
        "method": "supervised",
        "data": {"manifest": str(table), "task": "classification", "intensity": "channel", "batch_size": 4},
        "model": {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"},
        "trainer": TRAINER,
    }
    run_dir = train(load_config(cfg), tmp_path / "run").run_dir
    run = load_run(run_dir)
    pre = run.spec["preprocessing"]
    train_files = [root / row.split(",")[1] for row in table.read_text().splitlines()[1:] if ",train," in row]
    values = np.stack([read_volume(f).array for f in train_files])
    assert values.max() > 255  # 16-bit values kept, as training's reader keeps them
    assert pre["channel_mean"][0] == pytest.approx(values.mean(), rel=1e-5)
    assert pre["channel_std"][0] == pytest.approx(values.std(), rel=1e-5)
    one = train_files[0]
    expected = (read_volume(one).array - values.mean()) / values.std()
    np.testing.assert_allclose(run.read(one).array, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(preprocess_image(read_volume(one).array, pre), expected, rtol=1e-4, atol=1e-4)
    files = predict_classes(run, [table], tmp_path / "out", split="test", progress=False)
    np.testing.assert_allclose(
        load_npz(files["npz"])["probability"], load_npz(run_dir / "predictions" / "test.npz")["probability"], atol=1e-6
    )


def test_a_project_copied_elsewhere_resumes_from_relative_data_paths(tmp_path):
    project = tmp_path / "project"
    save_npz(project / "data" / "set.npz", make_shapes(n=30, size=16, num_classes=2, seed=0))
    (project / "configs").mkdir()
    (project / "configs" / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "rel",
                "seed": 0,
                "method": "supervised",
                "data": {"path": "../data/set.npz", "batch_size": 4},
                "model": {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"},
                "trainer": TRAINER,
            }
        )
    )
    run = train(load_config(project / "configs" / "c.yaml"), project / "runs" / "rel").run_dir
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == "../../data/set.npz"
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    shutil.rmtree(project)
    config = load_config(copy / "runs" / "rel" / "config.yaml", ["trainer.max_steps=3"])
    assert config.data.path == (copy / "data" / "set.npz").resolve()
    result = train(config, copy / "runs" / "rel", resume=True)
    assert result.status == "completed" and result.step == 3


def test_inference_json_is_written_when_training_starts(tmp_path, monkeypatch):
    """Before the first step: a run killed early is still loadable as a model from its first checkpoint."""
    import labelwise.engine.trainer as trainer

    seen = {}
    original = trainer.Trainer._train_loader

    def spy(self, start_step):
        seen["spec"] = json.loads(self.run.inference.read_text())
        return original(self, start_step)

    monkeypatch.setattr(trainer.Trainer, "_train_loader", spy)
    save_npz(tmp_path / "set.npz", make_shapes(n=30, size=16, num_classes=3, seed=0))
    cfg = {
        "name": "spec",
        "seed": 0,
        "method": "supervised",
        "data": {"path": str(tmp_path / "set.npz"), "batch_size": 4},
        "model": {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"},
        "trainer": TRAINER,
    }
    train(load_config(cfg), tmp_path / "run")
    spec = seen["spec"]
    assert spec["network"]["name"] == "resnet10" and spec["network"]["arguments"]["channels"] == [4, 4, 8, 8]
    assert spec["output"] == {
        "activation": "softmax",
        "multilabel": False,
        "num_classes": 3,
        "class_names": ["disc", "square", "cross"],
    }
    assert spec["network"]["in_channels"] == 1 and spec["network"]["spatial_dims"] == 2
