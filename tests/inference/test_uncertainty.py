"""``labelwise predict --uncertainty``: the predictive entropy and the flip variance of a segmenter, against scipy
and numpy, and through the CLI on NIfTI volumes (maps on the input's grid, the mask unchanged, refusals)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke_cli
from scipy.special import expit, softmax
from scipy.stats import entropy

from labelwise.config import load_config
from labelwise.data.datasets import DataBundle
from labelwise.methods import METHODS
from labelwise.models.outputs import flip_uncertainty


@pytest.mark.parametrize("classes", [1, 2, 3])
def test_flip_uncertainty_matches_scipy_and_numpy(classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(0, 2, size=(4, 2, classes, 5, 6)).astype(np.float32)  # 4 flips, 2 cases
    entropy_map, variance = (m.numpy() for m in flip_uncertainty(torch.from_numpy(logits)))
    if classes == 1:
        fg = expit(logits[:, :, 0])
        mean = fg.mean(0)
        expected = entropy(np.stack([mean, 1 - mean]), axis=0) / np.log(2)
    else:
        soft = softmax(logits, axis=2)
        fg = 1 - soft[:, :, 0]
        expected = entropy(soft.mean(0), axis=1) / np.log(classes)
    np.testing.assert_allclose(entropy_map, expected, atol=1e-5)
    np.testing.assert_allclose(variance, fg.var(0), atol=1e-6)
    assert entropy_map.shape == variance.shape == (2, 5, 6)
    same = flip_uncertainty(torch.from_numpy(np.repeat(logits[:1], 4, axis=0)))[1]
    assert float(same.abs().max()) < 1e-10  # the flips agree: no variance


def test_flip_logits_are_what_tta_averages():
    cfg = load_config(
        {
            "seed": 0,
            "method": {"name": "supervised", "loss": "dice_ce", "tta": True},
            "data": {"synth": {"n": 8}, "task": "segmentation"},
            "model": {"name": "unet", "channels": [4, 8]},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    data = DataBundle(splits={}, task="segmentation", num_classes=2, in_channels=1, spatial_dims=2, image_size=(16, 16))
    torch.manual_seed(0)
    method = METHODS["supervised"](cfg, data)
    method.networks["model"].eval()
    method.window, method.temperature = [16, 16], 2.0
    image = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        samples = method.flip_logits(image)
        assert samples.shape == (4, 1, 2, 20, 20)
        torch.testing.assert_close(samples.mean(0), method.predict(image), rtol=1e-5, atol=1e-6)
        method.tta = False
        torch.testing.assert_close(samples[0], method.predict(image), rtol=1e-5, atol=1e-6)
        flipped = method.predict(image.flip([3])).flip([3])  # the flip along the last axis, back
        assert any(torch.allclose(s, flipped, atol=1e-5) for s in samples[1:])


def _vessels_run(tmp_path, tta: bool):
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.training import train

    manifest = write_vessels(tmp_path / "v", 3, 5, [24, 24, 24], seed=0)
    cfg = load_config(
        {
            "seed": 0,
            "method": {"name": "supervised", "tta": tta},
            "data": {"manifest": str(manifest), "task": "segmentation", "batch_size": 2, "patches_per_volume": 2},
            "model": {"name": "unet", "channels": [4, 8]},
            "trainer": {"max_steps": 2, "checkpoint_every": 2},
        }
    )
    return train(cfg, tmp_path / "run").run_dir


@pytest.mark.parametrize("tta", [True, False])
def test_predict_uncertainty_cli_writes_maps_on_the_input_grid(tmp_path, tta):
    run = _vessels_run(tmp_path, tta)
    image = sorted((tmp_path / "v" / "images").iterdir())[0]
    code, text = invoke_cli("predict", str(run), "--input", str(image), "--out", str(tmp_path / "plain"))
    assert code == 0, text
    code, text = invoke_cli("predict", str(run), "--input", str(image), "--out", str(tmp_path / "out"), "--uncertainty")
    assert code == 0, text
    entry = json.loads((tmp_path / "out" / "predictions.json").read_text())["cases"][0]
    source = nib.load(image)
    maps = {name: nib.load(tmp_path / "out" / entry[name]) for name in ("entropy", "variance")}
    for name, written in maps.items():
        assert written.shape == source.shape and entry[name] == f"uncertainty/{entry['id']}_{name}.nii.gz"
        np.testing.assert_allclose(written.affine, source.affine)
        values = written.get_fdata()
        assert entry[f"mean_{name}"] == pytest.approx(values.mean(), rel=1e-5)
    assert 0 <= maps["entropy"].get_fdata().min() and maps["entropy"].get_fdata().max() <= 1
    assert 0 <= maps["variance"].get_fdata().min() and maps["variance"].get_fdata().max() <= 0.25
    assert entry["mean_variance"] > 0  # an untrained network does not answer the same to every flip
    # the mask and probability are those of a plain predict with the run's own tta
    plain = json.loads((tmp_path / "plain" / "predictions.json").read_text())["cases"][0]
    assert "entropy" not in plain and plain["tta"] == entry["tta"] == tta
    np.testing.assert_allclose(
        nib.load(tmp_path / "out" / entry["probability"]).get_fdata(),
        nib.load(tmp_path / "plain" / plain["probability"]).get_fdata(),
        atol=1e-5,
    )
    # where the flips disagree most, the entropy is high too: the two maps rank voxels alike
    entropy_values, variance_values = (m.get_fdata().ravel() for m in maps.values())
    top = variance_values > np.quantile(variance_values, 0.99)
    assert entropy_values[top].mean() > entropy_values.mean()


def test_an_ensemble_averages_the_runs_probabilities(tmp_path):
    """labelwise predict RUN1 RUN2: the probability is the mean of each run's own (a hand computation from the two
    single-run predictions), the mask its argmax (two softmax classes: the mean above 0.5), and --uncertainty pools
    both runs' flips."""
    runs = [_vessels_run(tmp_path / f"r{i}", tta=bool(i)) for i in range(2)]
    image = sorted((tmp_path / "r0" / "v" / "images").iterdir())[0]
    single = []
    for i, run in enumerate(runs):
        code, text = invoke_cli("predict", str(run), "--input", str(image), "--out", str(tmp_path / f"o{i}"))
        assert code == 0, text
        entry = json.loads((tmp_path / f"o{i}" / "predictions.json").read_text())["cases"][0]
        single.append(nib.load(tmp_path / f"o{i}" / entry["probability"]).get_fdata())
    assert not np.allclose(single[0], single[1], atol=1e-3)
    out = tmp_path / "ens"
    code, text = invoke_cli("predict", str(runs[0]), str(runs[1]), "--input", str(image), "--out", str(out),
                            "--uncertainty")  # fmt: skip
    assert code == 0, text
    index = json.loads((out / "predictions.json").read_text())
    assert index["ensemble"] == [str(r) for r in runs] and index["run"] == str(runs[0])
    entry = index["cases"][0]
    mean = (single[0] + single[1]) / 2
    np.testing.assert_allclose(nib.load(out / entry["probability"]).get_fdata(), mean, atol=1e-5)
    mask = np.asarray(nib.load(out / entry["mask"]).dataobj)
    clear = np.abs(mean - 0.5) > 1e-4
    np.testing.assert_array_equal(mask[clear], (mean > 0.5)[clear])
    assert nib.load(out / entry["entropy"]).shape == mask.shape and entry["mean_variance"] > 0


def test_an_ensemble_with_other_classes_is_refused(tmp_path):
    from labelwise.training import train

    first = _vessels_run(tmp_path / "a", tta=False)
    cfg = load_config(
        {
            "seed": 0,
            "method": "supervised",
            "data": {"synth": {"n": 12, "size": 16, "dim": 3, "num_classes": 3}, "task": "segmentation",
                     "batch_size": 4},
            "model": {"name": "unet", "channels": [4, 8]},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )  # fmt: skip
    other = train(cfg, tmp_path / "three").run_dir
    image = sorted((tmp_path / "a" / "v" / "images").iterdir())[0]
    code, text = invoke_cli("predict", str(first), str(other), "--input", str(image), "--out", str(tmp_path / "o"))
    assert code == 2 and "an ensemble averages the probabilities of the same classes" in text
    assert not (tmp_path / "o").exists()
