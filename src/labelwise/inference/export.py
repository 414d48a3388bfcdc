"""A run's predicting network as a standalone file (ONNX or TorchScript) with a JSON sidecar ``FILE.json`` holding
what a user needs besides it: the input shape, the preprocessing with the training statistics, the output activation
and class names, the inference settings, and the run and checkpoint it came from (``labelwise export``).

    run = load_run("runs/unet-mss-synthetic-2d")
    export_run(run, "onnx", "model.onnx")   # -> [model.onnx, model.onnx.json]

The network is traced on an example input (the run's window or training size, batch 1) and the traced graph is
checked against the network on a second input (batch 2; fully convolutional segmenters also another spatial size)
before anything is written: a network whose forward leaves torch (the frangi method's NumPy vesselness filter) or
whose trace does not generalise is refused with a LabelwiseError. The batch axis is always dynamic; fully
convolutional segmenters (U-Nets) take any spatial size that is a multiple of their divisor; classifiers and
transformer segmenters take the size they were trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import labelwise
from labelwise.errors import LabelwiseError
from labelwise.inference.run import RunModel
from labelwise.io import atomic_write
from labelwise.models.windows import model_divisor, round_up

__all__ = ["EXPORT_FORMATS", "FULLY_CONVOLUTIONAL", "ONNX_OPSET", "export_format", "export_run"]

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
FULLY_CONVOLUTIONAL = {"unet", "basic_unet", "unet_mss"}  # segmenters exported with dynamic spatial axes
_AXES = {2: ("height", "width"), 3: ("depth", "height", "width")}


def export_format(name: str) -> str:
    """``name`` as one of :data:`EXPORT_FORMATS` (case-insensitive), or a LabelwiseError naming the choices."""
    text = str(name).strip().lower()
    if text not in EXPORT_FORMATS:
        raise LabelwiseError(f"--format {name!r}: unknown export format; choose from {', '.join(EXPORT_FORMATS)}")
    return text


class _Logits(nn.Module):
    """The predicting network with one tensor output: logits ``(B, K)`` or ``(B, K, *spatial)`` (a tuple's first)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_run(run: RunModel, format: str, out: str | Path) -> list[Path]:
    """Write ``run``'s predicting network to ``out`` as ONNX (opset :data:`ONNX_OPSET`, input ``image``, output
    ``logits``) or TorchScript (a traced module), and its sidecar ``out`` + ``.json``; returns both paths.
    A LabelwiseError (nothing written) for an unknown format, a run without a classifier head, or a network that
    cannot be traced."""
    format = export_format(format)
    out = Path(out)
    if out.is_dir():
        raise LabelwiseError(f"--out {out}: a folder; give a file name such as {out / ('model.' + _suffix(format))}")
    run.require_head()
    model = _Logits(run.model).eval()
    dims, channels = run.spatial_dims, run.in_channels
    dynamic = run.task == "segmentation" and run.spec["network"].get("name") in FULLY_CONVOLUTIONAL
    divisor = model_divisor(run.model) if dynamic else 1
    size = _example_size(run, divisor)
    example = torch.randn(1, channels, *size, generator=torch.Generator().manual_seed(0))
    check_size = tuple(s + divisor * (1 + (i % 2)) for i, s in enumerate(size)) if dynamic else size
    check = torch.randn(2, channels, *check_size, generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        reference = model(check)  # the network's output on the check input, computed once
    traced, difference = _trace(run, model, example, check, reference)
    checked = {"traced_graph": difference}
    onnx_model = None
    buffer = io.BytesIO()
    axes = {0: "batch", **({2 + i: name for i, name in enumerate(_AXES[dims])} if dynamic else {})}
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format asked
            torch.jit.save(traced, buffer)
    else:
        import onnx

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and the tracer's shape-check notes
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    buffer,  # type: ignore[arg-type]  # torch annotates f as a path; the legacy exporter takes a file
                    dynamo=False,
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={"image": axes, "logits": axes},
                    opset_version=ONNX_OPSET,
                    do_constant_folding=True,
                )
            except Exception as err:  # noqa: BLE001 - an operator ONNX lacks: a one-line refusal
                reason = " ".join(str(err).split())[:200]
                raise LabelwiseError(
                    f"{run.run_dir}: cannot export {_name(run)} as ONNX opset {ONNX_OPSET} "
                    f"({reason}); --format torchscript may work"
                ) from None
        onnx_model = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(onnx_model)
        runtime_difference = _onnxruntime_difference(buffer.getvalue(), check, reference)
        if runtime_difference is not None:
            checked["onnxruntime"] = runtime_difference
            if runtime_difference > _tolerance(reference):
                raise LabelwiseError(
                    f"{run.run_dir}: the ONNX graph of {_name(run)} differs from the network by "
                    f"{runtime_difference:.3g} on a check input; export it as torchscript instead"
                )
    sidecar = _sidecar(run, format, out, dynamic, divisor, size, check_size, checked, buffer.getvalue(), onnx_model)
    atomic_write(out, buffer.getvalue())
    side = out.with_name(out.name + ".json")
    atomic_write(side, json.dumps(sidecar, indent=2) + "\n")
    return [out, side]


def _suffix(format: str) -> str:
    return "onnx" if format == "onnx" else "pt"


def _name(run: RunModel) -> str:
    return f"the {run.spec['method']} run's network {type(run.model).__name__}"


def _example_size(run: RunModel, divisor: int) -> tuple[int, ...]:
    """The spatial size the network is traced on: classifiers the size training fed them (after the run's resize);
    segmenters the run's window, else its training image or patch size, rounded up to the network's divisor."""
    spec = run.spec
    if run.task == "classification":
        size = spec["preprocessing"].get("image_size") or spec["network"].get("image_size")
    else:
        size = spec["inference"].get("window") or spec["network"].get("image_size")
    if not size:
        raise LabelwiseError(
            f"{run.run_dir}: inference.json gives no input size (network.image_size) to export "
            "the network at; retrain it with this version of labelwise"
        )
    if len(size) != run.spatial_dims:
        raise LabelwiseError(f"{run.run_dir}: inference.json's input size {list(size)} is not {run.spatial_dims}D")
    return tuple(round_up(int(s), divisor) for s in size)


def _trace(
    run: RunModel, model: nn.Module, example: torch.Tensor, check: torch.Tensor, reference: torch.Tensor
) -> tuple[torch.jit.ScriptModule, float]:
    """``model`` traced on ``example`` and its largest difference on ``check`` from the network's output there
    (``reference``); a LabelwiseError
    saying why it cannot be exported (a forward that computes in NumPy, a trace that fails or does not generalise)."""
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as err:  # noqa: BLE001 - any tracing failure is reported as a refusal, in one line
            reason = " ".join(str(err).split())[:200]
            raise LabelwiseError(f"{run.run_dir}: cannot export {_name(run)}: tracing failed ({reason})") from None
    if any("numpy" in str(w.message).lower() for w in caught):
        kind = " (a parameter-free filter)" if next(model.parameters(), None) is None else ""
        raise LabelwiseError(
            f"{run.run_dir}: cannot export {_name(run)}: its forward computes in NumPy outside "
            f"torch{kind}, so a traced ONNX or TorchScript graph would only "
            "replay its output for the example input; use labelwise predict with the run instead"
        )
    try:
        with torch.no_grad():
            difference = float((traced(check) - reference).abs().max())
    except Exception as err:  # noqa: BLE001
        reason = " ".join(str(err).split())[:200]
        raise LabelwiseError(
            f"{run.run_dir}: cannot export {_name(run)}: the traced graph fails on a check input of "
            f"shape {list(check.shape)} ({reason})"
        ) from None
    if difference > _tolerance(reference):
        raise LabelwiseError(
            f"{run.run_dir}: cannot export {_name(run)}: the traced graph differs from the network "
            f"by {difference:.3g} on a check input of shape {list(check.shape)} (control flow or "
            "sizes that depend on the input, which tracing fixes to the example's)"
        )
    return traced, difference


def _tolerance(reference: torch.Tensor) -> float:
    """Largest difference accepted from the network's output ``reference``: 1e-4, relative for large logits."""
    return 1e-4 * max(1.0, float(reference.abs().max()))


def _onnxruntime_difference(data: bytes, x: torch.Tensor, reference: torch.Tensor) -> float | None:
    """Largest difference between ONNX Runtime's output on ``x`` and the network's (``reference``); None without
    onnxruntime (it is a test dependency, not a runtime one)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    return float((got - reference).abs().max())


def _output_note(run: RunModel, channels: int) -> str:
    temperature = float(run.spec["inference"].get("temperature") or 1.0)
    note = _activation_note(run, channels)
    if temperature != 1.0:  # the network's own logits: predict divides them by the fitted temperature
        note = f"logits; divide them by inference.temperature ({temperature:.4g}), then: " + note
    if run.method.scales != (1.0,):  # method.scales (as load_run configured it): predict's views, not the network's
        note += (
            "; predict also runs the network on the input magnified by each of inference.scales (linear "
            "resampling), resamples those logits back and keeps, per voxel, the view whose foreground is likeliest"
        )
    if run.spec["inference"].get("isotonic"):  # the mask is decided before the map; the probability goes through it
        note += (
            "; predict's foreground probability is then mapped through inference.isotonic (numpy.interp of the "
            "probability on its knots x, y; the mask is decided before)"
        )
    return note


def _activation_note(run: RunModel, channels: int) -> str:
    if run.activation == "softmax":
        calibrated = run.spec["inference"].get("calibrated_threshold")
        return "logits; softmax over axis 1 gives one probability per class_names entry" + (
            f"; foreground where 1 - p(background) exceeds inference.calibrated_threshold ({calibrated})"
            if calibrated is not None
            else ""
        )
    if run.task == "segmentation" and channels == 1:
        key = "calibrated_threshold" if run.spec["inference"].get("calibrated_threshold") is not None else "threshold"
        return (
            f"logits of {run.class_names[-1]}; its sigmoid is the probability, {run.class_names[-1]} where it "
            f"exceeds inference.{key}"
        )
    return "logits; sigmoid gives each label's own probability (class_names)"


def _sidecar(
    run: RunModel,
    format: str,
    out: Path,
    dynamic: bool,
    divisor: int,
    size: tuple[int, ...],
    check_size: tuple[int, ...],
    checked: dict[str, float],
    data: bytes,
    onnx_model: Any = None,
) -> dict[str, Any]:
    spec, dims = run.spec, run.spatial_dims
    spatial: list[int | str] = list(_AXES[dims]) if dynamic else list(size)
    classes = run.spec["output"].get("num_classes")
    out_channels = spec["network"].get("out_channels") or classes
    output_shape = ["batch", out_channels, *spatial] if run.task == "segmentation" else ["batch", out_channels]
    sidecar: dict[str, Any] = {
        "format": format,
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": {
            "name": "image",
            "dtype": "float32",
            "layout": "channel-first",
            "shape": ["batch", run.in_channels, *spatial],
            "channels": run.in_channels,
            "spatial_dims": dims,
            "dynamic_batch": True,
            "dynamic_spatial": dynamic,
            "divisible_by": divisor if dynamic else None,
            "example_shape": [1, run.in_channels, *size],
            "note": (
                f"any spatial size that is a multiple of {divisor}; larger images: sliding windows of "
                "inference.window with inference.overlap, as labelwise predict does"
            )
            if dynamic
            else f"exactly {list(size)}: the size the network was trained on (after preprocessing's resize)",
        },
        "output": {
            "name": "logits",
            "shape": output_shape,
            "activation": run.activation,
            "class_names": run.class_names,
            "multilabel": run.multilabel,
            "num_classes": classes,
            "note": _output_note(run, out_channels),
        },
        "task": run.task,
        "method": spec["method"],
        "network": {"name": spec["network"].get("name"), "arguments": spec["network"].get("arguments")},
        "preprocessing": spec["preprocessing"],
        "inference": {
            key: spec["inference"].get(key)
            for key in ("threshold", "calibrated_threshold", "temperature", "isotonic", "window", "overlap", "scales")
        },
        "source": {"run": str(Path(run.run_dir).resolve()), "checkpoint": str(Path(run.checkpoint).resolve())},
        "checked": {"input_shape": [2, run.in_channels, *check_size], "max_abs_difference": checked},
        "labelwise_version": labelwise.__version__,
        "torch_version": torch.__version__,
    }
    if onnx_model is not None:
        import onnx

        sidecar["onnx"] = {
            "opset": ONNX_OPSET,
            "ir_version": int(onnx_model.ir_version),
            "onnx_version": onnx.__version__,
            "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
        }
    else:
        sidecar["torchscript"] = {"load": "torch.jit.load(file).eval()", "method": "torch.jit.trace"}
    return sidecar
