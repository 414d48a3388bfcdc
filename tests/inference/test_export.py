"""``labelwise export``: a run's network as ONNX or TorchScript gives the torch model's logits (ONNX Runtime, a loaded
TorchScript module), on a second spatial size too where the axes are dynamic; the sidecar holds the run's activation,
class names and preprocessing; runs that cannot be exported are refused with exit code 2 and one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke_cli as cli
from conftest import run_cli

from labelwise.config import load_config
from labelwise.data.npz import save_npz
from labelwise.data.synth import make_shapes
from labelwise.inference import load_run
from labelwise.training import train

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

TRAINER = {"max_steps": 2, "checkpoint_every": 2, "log_every": 1}
SMALL_RESNET = {"name": "resnet10", "channels": [4, 4, 8, 8], "norm": "group"}
TINY_VIT = {"name": "vit", "channels": [16], "layers": [2], "heads": [2], "patch_size": 4}
MSS = {"name": "unet_mss", "channels": [4, 8, 8, 16, 16]}
UNET = {"name": "unet", "channels": [4, 8, 16]}


def _train(tmp: Path, name: str, data: dict, model: dict, method: str | dict = "supervised") -> Path:
    cfg = {"name": name, "seed": 0, "method": method, "data": data, "model": model, "trainer": TRAINER}
    return train(load_config(cfg), tmp / "runs" / name).run_dir


@pytest.fixture(scope="module")
def shapes_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shapes") / "set.npz"
    save_npz(path, make_shapes(n=36, size=16, dim=2, num_classes=3, seed=0))
    return path


def _classifier(tmp: Path, shapes: Path, name: str, model: dict, method: str | dict = "supervised") -> Path:
    data = {"path": str(shapes), "task": "classification", "batch_size": 6}
    return _train(tmp, name, data, model, method)


def _segmenter(
    tmp: Path,
    dim: int,
    shape: list[int],
    patch: list[int] | None,
    model: dict,
    name: str,
    method: str | dict = "supervised",
) -> Path:
    from labelwise.data.synth.vessels import write_vessels

    manifest = write_vessels(tmp / f"v{dim}d", dim, 5, shape, seed=0)
    data = {
        "manifest": str(manifest),
        "task": "segmentation",
        "batch_size": 2,
        "patches_per_volume": 2,
        **({"patch_size": patch} if patch else {}),
    }
    return _train(tmp, name, data, model, method)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shapes_npz) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("export")
    return {
        "resnet": _classifier(tmp, shapes_npz, "resnet", SMALL_RESNET),
        "mss2d": _segmenter(tmp, 2, [48, 48], [32, 32], MSS, "mss2d"),
        "unet3d": _segmenter(tmp, 3, [24, 24, 24], [16, 16, 16], UNET, "unet3d"),
    }


def _export(run: Path, fmt: str, out: Path) -> dict:
    code, output = cli("export", str(run), "--format", fmt, "--out", str(out))
    assert code == 0, output
    assert out.is_file()
    return json.loads(out.with_name(out.name + ".json").read_text())


def _outputs(fmt: str, file: Path, x: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": x.numpy()})[0]
    module = torch.jit.load(str(file)).eval()
    with torch.no_grad():
        return module(x).numpy()


def _same_as_torch(run_dir: Path, fmt: str, tmp_path: Path, spatial_sizes: list[tuple[int, ...]]) -> dict:
    """Export ``run_dir`` as ``fmt``; its outputs equal the torch model's on a batch of 2 of each spatial size."""
    file = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    sidecar = _export(run_dir, fmt, file)
    run = load_run(run_dir)
    spec = run.spec
    assert sidecar["format"] == fmt and sidecar["file"] == file.name
    assert sidecar["output"]["activation"] == spec["output"]["activation"] == run.activation
    assert sidecar["output"]["class_names"] == spec["output"]["class_names"]
    assert sidecar["preprocessing"] == spec["preprocessing"]
    assert sidecar["inference"] == {
        k: spec["inference"][k]
        for k in ("threshold", "calibrated_threshold", "temperature", "isotonic", "window", "overlap", "scales")
    }
    assert sidecar["source"]["run"] == str(run_dir.resolve())
    assert Path(sidecar["source"]["checkpoint"]) == run.checkpoint.resolve()
    assert sidecar["input"]["channels"] == run.in_channels and sidecar["input"]["shape"][0] == "batch"
    if fmt == "onnx":
        assert sidecar["onnx"]["opset"] == 17
    generator = torch.Generator().manual_seed(3)
    for size in spatial_sizes:
        x = torch.randn(2, run.in_channels, *size, generator=generator)
        with torch.no_grad():
            expected = run.model(x).numpy()
        got = _outputs(fmt, file, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    return sidecar


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_classifier(runs, tmp_path, fmt):
    sidecar = _same_as_torch(runs["resnet"], fmt, tmp_path, [(16, 16)])
    assert sidecar["input"]["shape"] == ["batch", 1, 16, 16] and not sidecar["input"]["dynamic_spatial"]
    assert sidecar["output"]["shape"] == ["batch", 3] and sidecar["output"]["activation"] == "softmax"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_2d_unet_mss(runs, tmp_path, fmt):
    # dynamic spatial axes: the patch size it was trained on and another multiple of 16, non-square
    sidecar = _same_as_torch(runs["mss2d"], fmt, tmp_path, [(32, 32), (48, 80)])
    assert sidecar["input"]["shape"] == ["batch", 1, "height", "width"]
    assert sidecar["input"]["divisible_by"] == 16 and sidecar["input"]["dynamic_spatial"]
    assert sidecar["output"]["activation"] == "sigmoid" and sidecar["output"]["shape"] == [
        "batch",
        1,
        "height",
        "width",
    ]
    assert sidecar["inference"]["window"] == [32, 32]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_3d_unet(runs, tmp_path, fmt):
    sidecar = _same_as_torch(runs["unet3d"], fmt, tmp_path, [(16, 16, 16), (24, 32, 20)])
    assert sidecar["input"]["shape"] == ["batch", 1, "depth", "height", "width"]
    assert sidecar["input"]["divisible_by"] == 4


def test_vit_classifier(tmp_path, shapes_npz):
    run = _classifier(tmp_path, shapes_npz, "vit", TINY_VIT)
    for fmt in ("onnx", "torchscript"):
        sidecar = _same_as_torch(run, fmt, tmp_path, [(16, 16)])
        assert sidecar["input"]["shape"] == ["batch", 1, 16, 16] and not sidecar["input"]["dynamic_spatial"]


def _refused(*args: str) -> str:
    """``labelwise ARGS`` in a fresh process exits 2 with one line on stderr and no traceback; returns that line."""
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_refusals(tmp_path, shapes_npz, runs):
    code, message = cli("export", str(runs["resnet"]), "--format", "tflite", "--out", str(tmp_path / "m.tflite"))
    assert code == 2 and "\n" not in message
    assert "--format 'tflite'" in message and "onnx, torchscript" in message
    pretrain = _classifier(
        tmp_path,
        shapes_npz,
        "pretrain",
        SMALL_RESNET,
        {"name": "pretrain", "tasks": {"mim": 1.0, "contrastive": 1.0}, "mask_patch": 4},
    )
    line = _refused("export", str(pretrain), "--out", str(tmp_path / "pretrain.onnx"))
    assert "no classifier head" in line
    assert not (tmp_path / "pretrain.onnx").exists()


def test_frangi_refused(tmp_path):
    run = _segmenter(tmp_path, 2, [32, 32], None, MSS, "frangi", {"name": "frangi", "threshold": "otsu"})
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"frangi.{fmt}"
        code, message = cli("export", str(run), "--format", fmt, "--out", str(out))
        assert code == 2 and "\n" not in message
        assert "Vesselness" in message and "NumPy" in message
        assert not out.exists() and not out.with_name(out.name + ".json").exists()


def test_checkpoint_folder_and_out_folder(runs, tmp_path):
    """A checkpoint folder exports too (the sidecar names it); a folder as --out is refused."""
    checkpoint = sorted((runs["resnet"] / "checkpoints").glob("step-*"))[-1]
    sidecar = _export(checkpoint, "torchscript", tmp_path / "deep" / "model.pt")
    assert Path(sidecar["source"]["checkpoint"]) == checkpoint.resolve()
    code, message = cli("export", str(runs["resnet"]), "--out", str(tmp_path))
    assert code == 2 and "a folder" in message
