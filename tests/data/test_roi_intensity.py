"""Colour pictures with a region of interest (a fundus-like field of view): the intensity schemes with training
statistics, and scores inside the region, from training through predict and evaluate segmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke_cli
from PIL import Image

from labelwise.data import load_data
from labelwise.data.config import DataConfig
from labelwise.data.volumes import read_volume
from labelwise.errors import DataError

SPLITS = ("train", "train", "train", "val", "test", "test")


def fundus_set(folder, n_splits=SPLITS, size=(48, 56)):
    """Colour PNG images with dark lines (label 1, GIF masks 0/255) on a bright disc, and the disc as the roi."""
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.indices(size)
    disc = ((yy - h / 2) ** 2 / (h / 2.2) ** 2 + (xx - w / 2) ** 2 / (w / 2.2) ** 2) <= 1
    rows = ["id,image,label,split,roi"]
    for k in ("images", "labels", "roi"):
        (folder / k).mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(n_splits):
        lines = ((np.abs(yy - (10 + 3 * i)) <= 1) | (np.abs(xx - (15 + 2 * i)) <= 1)) & disc
        lines |= (np.abs(yy - 40) <= 1) & ~disc  # "vessels" outside the field of view: never scored
        base = np.stack([0.8 * disc, 0.4 * disc, 0.2 * disc], -1) + rng.normal(0, 0.03, (h, w, 3))
        base[lines] *= 0.4
        Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(folder / "images" / f"c{i}.png")
        Image.fromarray(lines.astype(np.uint8) * 255).save(folder / "labels" / f"c{i}.gif")
        Image.fromarray(disc.astype(np.uint8) * 255).save(folder / "roi" / f"c{i}.png")
        rows.append(f"c{i},images/c{i}.png,labels/c{i}.gif,{split},roi/c{i}.png")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def raw_images(folder, ids):
    return [read_volume(folder / "images" / f"c{i}.png").array for i in ids]


def test_channel_intensity_uses_the_training_split_statistics(tmp_path):
    data = load_data(DataConfig(manifest=fundus_set(tmp_path), task="segmentation", intensity="channel"))
    train = np.stack(raw_images(tmp_path, (0, 1, 2)))
    mean, std = train.mean(axis=(0, 2, 3)), train.std(axis=(0, 2, 3))
    np.testing.assert_allclose(data.preprocessing["channel_mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(data.preprocessing["channel_std"], std, rtol=1e-5)
    val = raw_images(tmp_path, (3,))[0]  # normalised with the training statistics, not its own
    np.testing.assert_allclose(
        data.split("val").image[0].numpy(), (val - mean[:, None, None]) / std[:, None, None], rtol=1e-4, atol=1e-5
    )
    assert data.split("val").rois[0].dtype.is_floating_point is False and data.split("val").rois[0].any()


def test_percentile_intensity_clips_to_the_training_foreground(tmp_path):
    path = fundus_set(tmp_path)
    data = load_data(DataConfig(manifest=path, task="segmentation", intensity="percentile"))
    images = raw_images(tmp_path, (0, 1, 2))
    masks = [read_volume(tmp_path / "labels" / f"c{i}.gif", mask=True).array > 0 for i in (0, 1, 2)]
    voxels = np.concatenate([im[:, m] for im, m in zip(images, masks)], axis=1)  # (3, foreground voxels)
    low, high = np.percentile(voxels, [0.5, 99.5], axis=1)
    clipped = np.clip(voxels, low[:, None], high[:, None])
    np.testing.assert_allclose(data.preprocessing["clip"], [low, high], rtol=1e-6)
    np.testing.assert_allclose(data.preprocessing["channel_mean"], clipped.mean(1), rtol=1e-6)
    test = raw_images(tmp_path, (4,))[0]
    expected = (np.clip(test, low[:, None, None], high[:, None, None]) - clipped.mean(1)[:, None, None]) / clipped.std(
        1
    )[:, None, None]
    np.testing.assert_allclose(data.split("test").image[0].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_a_roi_of_another_shape_is_refused_with_its_name(tmp_path):
    path = fundus_set(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "roi" / "c1.png")
    with pytest.raises(DataError, match=r"c1.png: mask shape \(10, 10\) differs"):
        load_data(DataConfig(manifest=path, task="segmentation"))


def dice_inside(prediction: np.ndarray, truth: np.ndarray, roi: np.ndarray) -> float:
    p, t = (prediction > 0) & roi, (truth > 0) & roi
    return 2 * (p & t).sum() / (p.sum() + t.sum())


def test_train_predict_and_evaluate_score_inside_the_roi_alike(tmp_path):
    """The run's own test scores, predict --reference --roi and evaluate segmentation --roi give the same Dice,
    each equal to a hand computation inside the field of view; masks are background outside it."""
    path = fundus_set(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
name: roi
seed: 0
method: {{name: supervised, loss: dice_ce}}
data: {{manifest: {path}, task: segmentation, intensity: channel, batch_size: 4, eval_batch_size: 1,
       patch_size: [32, 32], patches_per_volume: 8}}
model: {{name: unet, channels: [8, 16, 32]}}
trainer: {{max_steps: 30, checkpoint_every: 30, val_every: 0}}
augment: {{}}
""")
    run = tmp_path / "run"
    code, text = invoke_cli("train", str(config), "--run-dir", str(run))
    assert code == 0, text
    scores = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    assert scores["roi"] == 2
    by_id = {case["id"]: case["dice"] for case in scores["references"]["label"]["cases"]}
    for i in (4, 5):
        mask = read_volume(run / "predictions" / "test" / "masks" / f"c{i}.png", mask=True).array
        roi = read_volume(tmp_path / "roi" / f"c{i}.png", mask=True).array > 0
        truth = read_volume(tmp_path / "labels" / f"c{i}.gif", mask=True).array
        assert not mask[~roi].any()
        assert by_id[f"c{i}"] == pytest.approx(dice_inside(mask, truth, roi), abs=1e-9)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["dice"] == pytest.approx(np.mean(list(by_id.values())), abs=1e-6)
    assert "Scored inside the region of interest" in (run / "report.html").read_text()

    out = tmp_path / "predicted"
    code, text = invoke_cli(
        "predict",
        str(run),
        "--input",
        str(tmp_path / "images" / "c4.png"),
        "--input",
        str(tmp_path / "images" / "c5.png"),
        "--out",
        str(out),
        "--reference",
        str(tmp_path / "labels"),
        "--roi",
        str(tmp_path / "roi"),
    )
    assert code == 0, text
    entries = {e["id"]: e for e in json.loads((out / "predictions.json").read_text())["cases"]}
    for cid, value in by_id.items():
        assert entries[cid]["dice"] == pytest.approx(value, abs=1e-6)
        assert entries[cid]["roi"].endswith(f"{cid}.png")

    code, text = invoke_cli(
        "evaluate",
        "segmentation",
        "--pred",
        str(out),
        "--truth",
        str(tmp_path / "labels"),
        "--roi",
        str(tmp_path / "roi"),
        "--json",
        str(tmp_path / "scores.json"),
        "--allow-missing",
    )
    assert code == 0, text
    evaluated = json.loads((tmp_path / "scores.json").read_text())
    assert {c["id"]: c["dice"] for c in evaluated["cases"]} == pytest.approx(by_id, abs=1e-6)
    # without --roi, the "vessel" outside the field of view counts as missed
    code, text = invoke_cli(
        "evaluate",
        "segmentation",
        "--pred",
        str(out),
        "--truth",
        str(tmp_path / "labels"),
        "--json",
        str(tmp_path / "whole.json"),
        "--allow-missing",
    )
    assert code == 0, text
    whole = json.loads((tmp_path / "whole.json").read_text())
    assert all(c["sensitivity"] < evaluated["cases"][k]["sensitivity"] for k, c in enumerate(whole["cases"]))
