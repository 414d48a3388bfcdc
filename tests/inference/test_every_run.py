"""Every kind of run the engine produces is a portable model: trained a few steps on built-in data, its folder moved
and its data deleted, then ``labelwise predict`` gives the run's own test predictions and ``labelwise explain``
gives a finite map of the input's size for a named target, through the real CLI in fresh processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import invoke_cli as cli
from conftest import run_cli

from labelwise.config import load_config
from labelwise.data.npz import load_npz, save_npz
from labelwise.data.synth import make_patchml, make_shapes
from labelwise.data.volumes import read_image, read_volume
from labelwise.training import train

TRAINER = {"max_steps": 2, "checkpoint_every": 2, "log_every": 1}
SMALL_RESNET = {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"}


def _moved(run_dir: Path, data: Path, tmp_path: Path) -> Path:
    """The run folder moved elsewhere and its training data deleted."""
    target = tmp_path / "elsewhere" / run_dir.name
    target.parent.mkdir()
    shutil.move(str(run_dir), str(target))
    shutil.rmtree(data)
    return target


def _explain(run_dir: Path, image: Path, target: str, tmp_path: Path) -> dict:
    """``labelwise explain`` of ``image`` for ``target`` (a name): the one entry, its map checked finite, in [0, 1] and
    of the input's spatial size."""
    out = tmp_path / "maps"
    code, output = cli("explain", "--run", str(run_dir), "--input", str(image), "--target", target, "--out", str(out))
    assert code == 0, output
    entries = json.loads((out / "explanations.json").read_text())["entries"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["class_name"] == target
    saved = out / entry["files"]["map"]
    heat = nib.load(str(saved)).get_fdata() if saved.name.endswith(".nii.gz") else np.load(saved)
    size = read_image(image).spatial_shape if image.suffix != ".npy" else np.load(image).shape[1:]
    assert heat.shape == tuple(size)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert 0.0 <= entry["score"] <= 1.0
    return entry


def _classification_predict(run_dir: Path, inputs: list[str], tmp_path: Path, *extra: str) -> dict[str, np.ndarray]:
    out = tmp_path / "predicted"
    code, output = cli("predict", str(run_dir), *sum((["--input", i] for i in inputs), []), "--out", str(out), *extra)
    assert code == 0, output
    return load_npz(out / "predictions.npz")


def _own_test(run_dir: Path) -> dict[str, np.ndarray]:
    return load_npz(run_dir / "predictions" / "test.npz")


# --- classification ------------------------------------------------------------------------------------------------


def _npz_classification(
    tmp_path: Path,
    name: str,
    model: dict,
    method: str | dict = "supervised",
    arrays: dict | None = None,
    **data: object,
) -> tuple[Path, Path, Path]:
    """A run on a dataset .npz; returns (run, data folder, a copy of the data kept outside it)."""
    folder = tmp_path / "data"
    arrays = arrays if arrays is not None else make_shapes(n=60, size=16, dim=2, num_classes=3, seed=0)
    save_npz(folder / "set.npz", arrays)
    keep = tmp_path / "kept.npz"
    shutil.copy(folder / "set.npz", keep)
    cfg = {
        "name": name,
        "seed": 0,
        "method": method,
        "data": {"path": str(folder / "set.npz"), "task": "classification", "batch_size": 6, **data},
        "model": model,
        "trainer": TRAINER,
    }
    run = train(load_config(cfg), tmp_path / "runs" / name).run_dir
    return run, folder, keep


@pytest.mark.parametrize(
    "name, model, size",
    [
        ("supervised", SMALL_RESNET, 16),
        ("vit", {"name": "vit", "channels": [16], "layers": [2], "heads": [2], "patch_size": 4}, 16),
        ("swin", {"name": "swin", "channels": [12], "layers": [1, 1, 1, 1], "heads": [1, 1, 1, 1]}, 32),
    ],
)
def test_single_label_classifier(tmp_path, name, model, size):
    arrays = make_shapes(n=60, size=size, dim=2, num_classes=3, seed=0)
    run, data, kept = _npz_classification(tmp_path, name, model, arrays=arrays)
    run = _moved(run, data, tmp_path)
    got = _classification_predict(run, [str(kept)], tmp_path, "--split", "test")
    own = _own_test(run)
    np.testing.assert_allclose(got["probability"], own["probability"], atol=1e-6)
    np.testing.assert_array_equal(got["prediction"], own["prediction"])
    image = tmp_path / "sample.npy"
    np.save(image, load_npz(kept)["image"][0])
    entry = _explain(run, image, _names(run)[1], tmp_path)
    assert entry["activation"] == "softmax"
    if name == "vit":
        assert entry["layer"] == "vit.blocks.1"  # the last block's tokens on the patch grid, not a dropout module
    if name == "swin":  # a stage's channel-first output (2 x 2 at 32 pixels), not a channels-last patch merging
        assert entry["layer"] == "swinViT.layers3.0"


def _names(run: Path) -> list[str]:
    return json.loads((run / "inference.json").read_text())["output"]["class_names"]


def test_multilabel_classifier(tmp_path):
    arrays = make_patchml(n=60, seed=0)
    run, data, kept = _npz_classification(tmp_path, "multilabel", SMALL_RESNET, arrays=arrays, labels=["labels"])
    run = _moved(run, data, tmp_path)
    got = _classification_predict(run, [str(kept)], tmp_path, "--split", "test")
    np.testing.assert_allclose(got["probability"], _own_test(run)["probability"], atol=1e-6)
    image = tmp_path / "sample.npy"
    np.save(image, arrays["image"][0])
    names = _names(run)
    entry = _explain(run, image, names[3], tmp_path)
    assert entry["activation"] == "sigmoid" and entry["target"] == 3
    # the recorded score is the label's own sigmoid, not a softmax over the labels
    probability = _classification_predict(run, [str(image)], tmp_path)["probability"][0]
    assert entry["score"] == pytest.approx(float(probability[3]), abs=1e-6)


@pytest.fixture(scope="module")
def rnflt_table(tmp_path_factory):
    from labelwise.data.synth.rnflt import write_rnflt
    from labelwise.data.table import write_harvard_table

    folder = tmp_path_factory.mktemp("rnflt") / "maps"
    write_rnflt(folder, 24, seed=0)
    write_harvard_table(folder, labelled=0.5, seed=0)
    return folder


@pytest.mark.parametrize("method", [{"name": "pseudo_supervisor", "window": 2}, "fixmatch"])
def test_semi_supervised_on_harvard_files(tmp_path, rnflt_table, method):
    data = tmp_path / "maps"
    shutil.copytree(rnflt_table, data)
    kept = tmp_path / "kept"
    shutil.copytree(rnflt_table, kept)
    name = method if isinstance(method, str) else method["name"]
    cfg = {
        "name": name,
        "seed": 0,
        "method": method,
        "data": {
            "manifest": str(data / "table.csv"),
            "task": "classification",
            "labels": ["glaucoma"],
            "image_size": [32, 32],
            "intensity": "channel",
            "batch_size": 6,
            "labelled_per_batch": 3,
        },
        "model": SMALL_RESNET,
        "trainer": TRAINER,
    }
    run = train(load_config(cfg), tmp_path / "runs" / name).run_dir
    spec = json.loads((run / "inference.json").read_text())
    assert len(spec["preprocessing"]["channel_mean"]) == 1 and spec["preprocessing"]["channel_std"][0] > 0
    run = _moved(run, data, tmp_path)
    got = _classification_predict(run, [str(kept / "table.csv")], tmp_path, "--split", "test")
    own = _own_test(run)
    ids = (run / "predictions" / "test_ids.txt").read_text().split()
    assert [str(i) for i in got["id"]] == ids
    np.testing.assert_allclose(got["probability"], own["probability"], atol=1e-6)
    # the CSV is what evaluate classification reads as it is
    code, output = cli(
        "evaluate",
        "classification",
        "--predictions",
        str(tmp_path / "predicted" / "predictions.csv"),
        "--attributes",
        str(kept / "table.csv"),
        "--labels",
        str(kept / "table.csv"),
        "--label-column",
        "glaucoma",
        "--attribute",
        "race",
    )
    assert code == 0, output
    _explain(run, kept / "data_0001.npz", "1", tmp_path)


def test_pretrain_then_linear_probe(tmp_path):
    run, data, kept = _npz_classification(
        tmp_path,
        "pretrain",
        SMALL_RESNET,
        method={"name": "pretrain", "tasks": {"mim": 1.0, "contrastive": 1.0}, "mask_patch": 4},
    )
    probe_cfg = {
        "name": "probe",
        "seed": 0,
        "method": "supervised",
        "data": {"path": str(data / "set.npz"), "task": "classification", "batch_size": 6},
        "model": {**SMALL_RESNET, "init_from": str(run), "freeze_backbone": True},
        "trainer": TRAINER,
    }
    probe = train(load_config(probe_cfg), tmp_path / "runs" / "probe").run_dir
    image = tmp_path / "sample.npy"
    np.save(image, load_npz(kept)["image"][0])
    result = run_cli("explain", "--run", str(run), "--input", str(image))
    assert result.returncode == 2 and "no classifier head" in result.stderr and "model.init_from" in result.stderr
    assert "Traceback" not in result.stderr
    probe = _moved(probe, data, tmp_path)
    got = _classification_predict(probe, [str(kept)], tmp_path, "--split", "test")
    np.testing.assert_allclose(got["probability"], _own_test(probe)["probability"], atol=1e-6)
    _explain(probe, image, _names(probe)[0], tmp_path)


# --- segmentation --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vessels_2d(tmp_path_factory):
    from labelwise.data.synth.vessels import write_vessels

    return write_vessels(
        tmp_path_factory.mktemp("vessels") / "v2d", 2, 5, [50, 44], seed=0
    ).parent  # not multiples of 16


@pytest.fixture(scope="module")
def vessels_3d(tmp_path_factory):
    from labelwise.data.synth.vessels import write_vessels

    return write_vessels(tmp_path_factory.mktemp("vessels") / "v3d", 3, 5, [32, 32, 32], seed=0).parent


def _segmentation_run(
    tmp_path: Path, source: Path, name: str, method: str | dict, patch: list[int] | None, model: dict
) -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    shutil.copytree(source, data)
    kept = tmp_path / "kept"
    shutil.copytree(source, kept)
    cfg = {
        "name": name,
        "seed": 0,
        "method": method,
        "data": {
            "manifest": str(data / "manifest.csv"),
            "task": "segmentation",
            "batch_size": 2,
            "patches_per_volume": 4,
            **({"patch_size": patch} if patch else {}),
        },
        "model": model,
        "trainer": TRAINER,
    }
    run = train(load_config(cfg), tmp_path / "runs" / name).run_dir
    return _moved(run, data, tmp_path), kept


def _same_as_own_test(run: Path, kept: Path, tmp_path: Path, extension: str) -> None:
    """``labelwise predict`` on the test images writes the run's own test probabilities and masks."""
    own = run / "predictions" / "test"
    ids = sorted(p.name.removesuffix(extension) for p in (own / "masks").iterdir())
    assert ids
    out = tmp_path / "predicted"
    inputs = sum((["--input", str(next((kept / "images").glob(f"{i}.*")))] for i in ids), [])
    code, output = cli("predict", str(run), *inputs, "--out", str(out))
    assert code == 0, output
    for i in ids:
        if extension == ".png":
            mine, theirs = np.load(out / "probabilities" / f"{i}.npy"), np.load(own / "probabilities" / f"{i}.npy")
        else:
            mine = nib.load(str(out / "probabilities" / f"{i}.nii.gz")).get_fdata()
            theirs = nib.load(str(own / "probabilities" / f"{i}.nii.gz")).get_fdata()
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
        np.testing.assert_array_equal(
            read_volume(out / "masks" / f"{i}{extension}", mask=True).array,
            read_volume(own / "masks" / f"{i}{extension}", mask=True).array,
        )


def _uncertainty_and_ensemble(run: Path, kept: Path, tmp_path: Path, extension: str) -> None:
    """The moved run's ``predict --uncertainty`` writes both maps of the input's size beside the run's own test
    probability, and the run in an ensemble with itself gives that probability again (the mean of equals)."""
    own = run / "predictions" / "test"
    cid = sorted(p.name.removesuffix(extension) for p in (own / "masks").iterdir())[0]
    image = str(next((kept / "images").glob(f"{cid}.*")))
    theirs = read_volume(own / "probabilities" / (f"{cid}.npy" if extension == ".png" else f"{cid}.nii.gz")).array
    for name, runs, extra in (("uncertain", [str(run)], ["--uncertainty"]), ("ensemble", [str(run)] * 2, [])):
        out = tmp_path / name
        code, output = cli("predict", *runs, "--input", image, "--out", str(out), *extra)
        assert code == 0, output
        entry = json.loads((out / "predictions.json").read_text())["cases"][0]
        mine = read_volume(out / entry["probability_npy" if extension == ".png" else "probability"]).array
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
        for key in ("entropy", "variance") if extra else ():
            values = read_volume(out / entry[key]).array
            assert values.shape == theirs.shape and np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1


MSS = {"name": "unet_mss", "channels": [4, 8, 8, 16, 16]}


@pytest.mark.parametrize(
    "name, method",
    [
        ("unet-mss", {"name": "supervised", "threshold": "otsu", "overlap": 0.25}),  # predict keeps both
        ("unet-mss-tta", {"name": "supervised", "tta": True, "min_size": 4}),  # and these
        ("ds6", {"name": "ds6", "baseline_steps": 1}),
        ("frangi", {"name": "frangi", "threshold": "otsu"}),
    ],
)
def test_2d_vessel_segmenters(tmp_path, vessels_2d, name, method):
    run, kept = _segmentation_run(tmp_path, vessels_2d, name, method, [32, 32], MSS)
    _same_as_own_test(run, kept, tmp_path, ".png")
    image = next((kept / "images").iterdir())
    if name == "frangi":  # a filter: no network whose flips could disagree
        code, output = cli("predict", str(run), "--input", str(image), "--out", str(tmp_path / "u"), "--uncertainty")
        assert code == 2 and "predicts by its own rule" in output
    else:
        _uncertainty_and_ensemble(run, kept, tmp_path, ".png")
    entry = _explain(run, image, "foreground", tmp_path)
    assert entry["target"] == 1 and entry["activation"] == "sigmoid"


def test_class_named_manifest_run(tmp_path, vessels_2d):
    """``data.class_names: [vessel]``: after the run folder moves, predict names the mask's labels, explain takes
    ``--target vessel`` (and still refuses a name the run does not have), and the report lists the class by name."""
    method = {"name": "supervised"}
    data = tmp_path / "data"
    shutil.copytree(vessels_2d, data)
    cfg = {
        "name": "named",
        "seed": 0,
        "method": method,
        "model": MSS,
        "trainer": TRAINER,
        "data": {
            "manifest": str(data / "manifest.csv"),
            "task": "segmentation",
            "batch_size": 2,
            "patches_per_volume": 4,
            "patch_size": [32, 32],
            "class_names": ["vessel"],
        },
    }
    run = _moved(train(load_config(cfg), tmp_path / "runs" / "named").run_dir, data, tmp_path)
    assert _names(run) == ["background", "vessel"]
    image = next((vessels_2d / "images").iterdir())
    code, output = cli("predict", str(run), "--input", str(image), "--out", str(tmp_path / "p"))
    assert code == 0, output
    assert json.loads((tmp_path / "p" / "predictions.json").read_text())["class_names"] == ["background", "vessel"]
    entry = _explain(run, image, "vessel", tmp_path)
    assert entry["target"] == 1
    code, output = cli(
        "explain", "--run", str(run), "--input", str(image), "--target", "foreground", "--out", str(tmp_path / "maps2")
    )
    assert code != 0 and "vessel" in output
    code, output = cli("report", str(run))
    assert code == 0, output
    assert "0 background, 1 vessel" in (run / "report.html").read_text()


def test_class_names_refused_where_they_do_not_fit(tmp_path, vessels_2d):
    from labelwise.data.datasets import load_data
    from labelwise.errors import ConfigError, DataError

    base = {"seed": 0, "method": "supervised", "trainer": TRAINER}
    with pytest.raises(ConfigError, match="classification takes its class names"):
        load_config({**base, "data": {"synth": {}, "class_names": ["a", "b"]}})
    with pytest.raises(ConfigError, match="background is label 0"):
        load_config({**base, "data": {"synth": {}, "task": "segmentation", "class_names": ["background", "a"]}})
    arrays = make_shapes(n=12, size=16, dim=2, num_classes=3, seed=0)  # masks with labels 1, 2 and 3
    save_npz(tmp_path / "s.npz", arrays)
    cfg = load_config({**base, "data": {"path": str(tmp_path / "s.npz"), "task": "segmentation", "class_names": ["a"]}})
    with pytest.raises(DataError, match="masks hold labels up to 3"):
        load_data(cfg.data)
    cfg = load_config(
        {**base, "data": {"path": str(tmp_path / "s.npz"), "task": "segmentation", "class_names": ["a", "b", "c", "d"]}}
    )
    assert load_data(cfg.data).num_classes == 5  # a named class that no mask holds yet is still an output


@pytest.mark.parametrize("loss", ["dice_ce", "focal_tversky"])  # two softmax channels, one sigmoid channel
def test_calibrated_threshold_travels_with_the_run(tmp_path, vessels_2d, loss):
    """``threshold: calibrate``: the threshold written to inference.json is the validation case's best (oracle: its
    probabilities from ``labelwise predict`` and scikit-learn's F1 at every candidate), the run's own test masks are
    its probabilities above it, and predict and export on the moved run use it."""
    from sklearn.metrics import f1_score

    method = {"name": "supervised", "loss": loss, "threshold": "calibrate"}
    run, kept = _segmentation_run(tmp_path, vessels_2d, f"calibrated-{loss}", method, [32, 32], MSS)
    spec = json.loads((run / "inference.json").read_text())["inference"]
    calibrated = spec["calibrated_threshold"]
    assert spec["threshold"] == "calibrate" and 0.01 <= calibrated <= 0.99
    summary = json.loads((run / "summary.json").read_text())
    assert summary["calibration"]["threshold"] == calibrated

    out = tmp_path / "val-predicted"
    code, output = cli("predict", str(run), "--input", str(kept / "images" / "vessel_003.png"), "--out", str(out))
    assert code == 0, output
    probability = np.load(out / "probabilities" / "vessel_003.npy").ravel()
    label = read_volume(kept / "labels" / "vessel_003.png", mask=True).array.ravel() > 0
    candidates = np.arange(1, 100) / 100
    scores = np.array([f1_score(label, probability > t, zero_division=0.0) for t in candidates])
    near = scores >= scores.max() - 0.005  # the default calibration_tolerance
    best = candidates[near][np.argmin(np.abs(candidates[near] - 0.5))]
    assert calibrated == pytest.approx(best)
    assert summary["calibration"]["val_dice"] == pytest.approx(scores[candidates == best][0])
    mask = read_volume(out / "masks" / "vessel_003.png", mask=True).array.ravel() > 0
    np.testing.assert_array_equal(mask, probability > calibrated)  # predict applies it

    _same_as_own_test(run, kept, tmp_path, ".png")
    own = run / "predictions" / "test"
    np.testing.assert_array_equal(
        read_volume(own / "masks" / "vessel_004.png", mask=True).array > 0,
        np.load(own / "probabilities" / "vessel_004.npy") > calibrated,
    )
    code, output = cli("export", str(run), "--format", "onnx", "--out", str(tmp_path / "model.onnx"))
    assert code == 0, output
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["inference"]["calibrated_threshold"] == calibrated
    assert "calibrated_threshold" in sidecar["output"]["note"]
    code, output = cli("report", str(run))
    assert code == 0, output
    assert f"threshold {calibrated:g} (calibrated on the validation cases)" in (run / "report.html").read_text()


def test_3d_unet_mss(tmp_path, vessels_3d):
    run, kept = _segmentation_run(tmp_path, vessels_3d, "unet-mss-3d", "supervised", [16, 16, 16], MSS)
    _same_as_own_test(run, kept, tmp_path, ".nii.gz")
    _uncertainty_and_ensemble(run, kept, tmp_path, ".nii.gz")
    _explain(run, next((kept / "images").iterdir()), "foreground", tmp_path)


def test_swin_unetr_multiclass(tmp_path):
    arrays = make_shapes(n=12, size=32, dim=3, num_classes=3, seed=0)
    folder = tmp_path / "data"
    save_npz(folder / "set.npz", arrays)
    cfg = {
        "name": "swin",
        "seed": 0,
        "method": "supervised",
        "data": {"path": str(folder / "set.npz"), "task": "segmentation", "batch_size": 2, "eval_batch_size": 2},
        "model": {
            "name": "swin_unetr",
            "channels": [12],
            "layers": [1, 1, 1, 1],
            "heads": [1, 1, 1, 1],
            "norm": "group",
        },
        "trainer": TRAINER,
    }
    run = train(load_config(cfg), tmp_path / "runs" / "swin").run_dir
    test_rows = np.flatnonzero(arrays["split"] == "test")
    images = tmp_path / "inputs"
    images.mkdir()
    for i in test_rows:
        np.save(images / f"case{i:03d}.npy", arrays["image"][i])
    run = _moved(run, folder, tmp_path)
    out = tmp_path / "predicted"
    code, output = cli("predict", str(run), "--input", str(images), "--out", str(out))
    assert code == 0, output
    own = _own_test(run)["prediction"]
    for k, i in enumerate(test_rows):
        np.testing.assert_array_equal(nib.load(str(out / "masks" / f"case{i:03d}.nii.gz")).get_fdata(), own[k])
    names = _names(run)
    assert names == ["background", *arrays["class_names"]]
    entry = _explain(run, images / f"case{test_rows[0]:03d}.npy", names[2], tmp_path)
    assert entry["target"] == 2 and entry["activation"] == "softmax"
