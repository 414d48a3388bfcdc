"""MedMNIST files read as they are downloaded: the layout conversion checked by hand, a run trained on such a file
at another image size through the CLI and predicted after its folder moved, pretraining's stride check on the
resized size, and the real development files' published counts (skipped without ../shared/data/medmnist)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_cli as cli
from sklearn.metrics import roc_auc_score

from labelwise.config import load_config
from labelwise.data.datasets import load_data
from labelwise.data.npz import from_medmnist, load_npz, save_npz
from labelwise.errors import ConfigError, DataError
from labelwise.training import train

MEDMNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "medmnist"


def _medmnist(n=(12, 4, 6), size=28, colour=False, seed=0) -> dict[str, np.ndarray]:
    """Arrays in MedMNIST's layout: uint8 images (N, H, W[, 3]), labels (N, 1); class 1 images are brighter."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        label = np.arange(count) % 2
        image = rng.integers(0, 100, (count, size, size, *((3,) if colour else ())), dtype=np.uint8)
        image[label == 1] += 120
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = image, label[:, None]
    return arrays


def test_layout_by_hand():
    arrays = _medmnist(n=(3, 1, 2), size=4, colour=True)
    out = from_medmnist(arrays)
    assert out["image"].shape == (6, 3, 4, 4) and out["image"].dtype == np.float32
    # channels first, values / 255, the splits in order
    np.testing.assert_allclose(out["image"][4, 2, 1, 3], arrays["test_images"][0, 1, 3, 2] / 255.0)
    assert out["split"].tolist() == ["train"] * 3 + ["val"] + ["test"] * 2
    assert out["label"].tolist() == [0, 1, 0, 0, 0, 1] and out["label"].shape == (6,)
    assert out["ids"].tolist()[:4] == ["train-00000", "train-00001", "train-00002", "val-00000"]
    grey = from_medmnist({"train_images": np.zeros((2, 5, 5), np.uint8), "train_labels": np.ones((2, 3))})
    assert grey["image"].shape == (2, 1, 5, 5) and grey["label"].shape == (2, 3)  # ChestMNIST's tags stay (N, K)
    volumes = from_medmnist({"train_images": np.zeros((2, 6, 6, 6), np.uint8), "train_labels": np.zeros((2, 1))})
    assert volumes["image"].shape == (2, 1, 6, 6, 6)


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="val_images has no val_labels"):
        from_medmnist(
            {
                "train_images": np.zeros((2, 4, 4), np.uint8),
                "train_labels": np.zeros(2),
                "val_images": np.zeros((1, 4, 4), np.uint8),
            }
        )
    with pytest.raises(DataError, match="train_labels must be"):
        from_medmnist({"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.zeros(3)})
    with pytest.raises(DataError, match="differ in shape"):
        from_medmnist(
            {
                "train_images": np.zeros((2, 4, 4), np.uint8),
                "train_labels": np.zeros(2),
                "test_images": np.zeros((2, 5, 5), np.uint8),
                "test_labels": np.zeros(2),
            }
        )
    path = save_npz(tmp_path / "m.npz", _medmnist())
    assert load_npz(path, required=("image", "label", "split"))["image"].shape == (22, 1, 28, 28)


def test_trains_resized_and_predicts_after_moving(tmp_path):
    """The shipped configs/medmnist-supervised.yaml on a MedMNIST file (data.image_size [32, 32], augment: {}):
    trained at 32 x 32 with the classification preset, the size recorded, and predict on the same file (28 x 28,
    split test) after the run moved gives the run's own test probabilities."""
    data = tmp_path / "data"
    save_npz(data / "pneumoniamnist.npz", _medmnist())
    kept = shutil.copy(data / "pneumoniamnist.npz", tmp_path / "kept.npz")
    shipped = Path(__file__).resolve().parents[2] / "configs" / "medmnist-supervised.yaml"
    overrides = [
        f"data.path={data / 'pneumoniamnist.npz'}",
        "data.batch_size=6",
        "model.channels=[4,4,8,8]",
        "trainer.max_steps=2",
        "trainer.checkpoint_every=2",
        "trainer.val_every=0",
    ]
    cfg = load_config(shipped, overrides)
    assert cfg.data.image_size == [32, 32] and cfg.augment is not None and cfg.augment.preset == "classification"
    bundle = load_data(cfg.data)
    assert bundle.image_size == (32, 32) and bundle.preprocessing["image_size"] == [32, 32]
    run = train(cfg, tmp_path / "runs" / "medmnist").run_dir
    spec = json.loads((run / "inference.json").read_text())
    assert spec["preprocessing"]["image_size"] == [32, 32] and spec["network"]["image_size"] == [32, 32]
    assert load_config(run / "config.yaml", check_files=False).augment.preset == "classification"
    moved = shutil.move(str(run), str(tmp_path / "elsewhere"))
    shutil.rmtree(data)
    code, output = cli("predict", moved, "--input", str(kept), "--split", "test", "--out", str(tmp_path / "p"))
    assert code == 0, output
    got, own = load_npz(tmp_path / "p" / "predictions.npz"), load_npz(Path(moved) / "predictions" / "test.npz")
    np.testing.assert_allclose(got["probability"], own["probability"], atol=1e-6)
    assert (tmp_path / "p" / "predictions.csv").read_text().splitlines()[1].startswith("test-00000,")
    # scored against the same file: its test split is the one whose size matches the predictions
    scores = tmp_path / "scores.json"
    code, output = cli(
        "evaluate", "classification", "--predictions", str(tmp_path / "p" / "predictions.npz"), "--labels", str(kept),
        "--json", str(scores), "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, output
    truth = _medmnist()["test_labels"].reshape(-1)
    accuracy = float((got["probability"].argmax(1) == truth).mean())
    scored = json.loads(scores.read_text())
    assert scored["n"] == 6 and scored["accuracy"] == pytest.approx(accuracy)
    assert scored["auc"] == pytest.approx(roc_auc_score(truth, got["probability"][:, 1]))


def test_image_size_refused_for_segmentation(tmp_path):
    from labelwise.data.synth import make_shapes

    path = save_npz(tmp_path / "s.npz", make_shapes(n=8, size=16))
    cfg = load_config(
        {
            "seed": 0,
            "method": "supervised",
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
            "data": {"path": str(path), "task": "segmentation", "image_size": [32, 32]},
        }
    )
    with pytest.raises(DataError, match="resizes classification images"):
        load_data(cfg.data)


def test_pretrain_checks_the_resized_size(tmp_path):
    """Masked image modelling needs a multiple of the output stride (8): 28 x 28 images train at 32 x 32."""
    path = save_npz(tmp_path / "m.npz", _medmnist())
    cfg = {
        "seed": 0,
        "method": {"name": "pretrain", "tasks": {"mim": 1.0}},
        "data": {"path": str(path), "batch_size": 4, "image_size": [32, 32]},
        "model": {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"},
        "trainer": {"max_steps": 1, "checkpoint_every": 1},
    }
    assert train(load_config(cfg), tmp_path / "run").status == "completed"
    cfg["data"]["image_size"] = [28, 28]
    with pytest.raises(ConfigError, match="multiple of"):
        train(load_config(cfg), tmp_path / "run28")


@pytest.mark.parametrize(
    "name, counts, classes",
    [("breastmnist.npz", (546, 78, 156), [147, 399]), ("retinamnist.npz", (1080, 120, 400), [486, 128, 206, 194, 66])],
)
def test_real_files_as_published(name, counts, classes):
    """The development files read as labelwise reads them give SOURCES.md's split sizes and class counts."""
    if not (MEDMNIST / name).is_file():
        pytest.skip(f"{MEDMNIST / name} is not here (development data, not shipped)")
    arrays = load_npz(MEDMNIST / name)
    split = arrays["split"]
    assert tuple(int((split == s).sum()) for s in ("train", "val", "test")) == counts
    assert np.bincount(arrays["label"][split == "train"]).tolist() == classes
    assert arrays["image"].shape[2:] == (28, 28) and 0 <= arrays["image"].min() and arrays["image"].max() <= 1
