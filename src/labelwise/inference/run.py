"""A run directory as a model: rebuilt from the folder alone (``config.yaml``, ``inference.json``, the weights), and
new inputs read and preprocessed exactly as training read its data.

``inference.json`` (written when training starts, see docs/run-directory.md) holds the network and its arguments,
the output activation and class names, the preprocessing with the statistics measured on the training split, and the
inference settings (threshold, window, overlap). The training data is never read: it may be gone or moved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelwise.config import load_config
from labelwise.data.datasets import DataBundle
from labelwise.data.intensity import preprocess_image
from labelwise.data.volumes import IMAGE_SUFFIXES, Volume, read_image, suffix_of, to_grid
from labelwise.engine.checkpoint import WEIGHTS, latest_checkpoint, load_weights
from labelwise.engine.rundir import RunDir
from labelwise.errors import DataError, LabelwiseError
from labelwise.methods import METHODS, Method
from labelwise.models.outputs import Threshold, activate, parse_threshold, remove_small_components, segment

__all__ = ["RunModel", "fit_channels", "input_files", "load_run", "reporter", "require_finite"]


@dataclass
class RunModel:
    """A trained run ready to predict: its Method (networks in eval mode on the CPU, the run's threshold, window and
    overlap), ``spec`` (``inference.json``) and where it came from."""

    method: Method
    spec: dict[str, Any]
    run_dir: Path
    checkpoint: Path
    threshold_override: tuple[Threshold] | None = None  # set by configure(threshold=...)
    device: torch.device = torch.device("cpu")  # where the networks run (load_run's device)

    # --- what the run is ------------------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return self.spec["task"]

    @property
    def spatial_dims(self) -> int:
        return int(self.spec["network"]["spatial_dims"])

    @property
    def in_channels(self) -> int:
        return int(self.spec["network"]["in_channels"])

    @property
    def num_classes(self) -> int:
        return int(self.spec["output"]["num_classes"])

    @property
    def ignore(self) -> list[int]:
        """The mask values that carry no label (``data.ignore``): a reference's voxels of those are scored nowhere."""
        return [int(v) for v in self.spec["preprocessing"].get("ignore", [])]

    @property
    def class_names(self) -> list[str]:
        """One name per output class: class or label names; segmentation: ``background`` first."""
        return list(self.spec["output"]["class_names"])

    @property
    def activation(self) -> str | None:
        return self.spec["output"]["activation"]

    @property
    def multilabel(self) -> bool:
        return bool(self.spec["output"].get("multilabel"))

    @property
    def model(self) -> nn.Module:
        """The predicting network (a pretraining run has none: :func:`require_head` says what to do instead)."""
        self.require_head()
        assert self.method.predictor is not None  # require_head raised otherwise
        return self.method.networks[self.method.predictor]

    def class_name(self, k: int) -> str:
        names = self.class_names
        return names[k] if 0 <= k < len(names) else str(k)

    def class_index(self, target: str | int) -> int:
        """A class given by index or name (``vessel``, ``glaucoma``): its index, or a DataError naming the choices."""
        names = self.class_names
        text = str(target).strip()
        if text.lstrip("-").isdigit():
            k = int(text)
        elif text in names:
            k = names.index(text)
        else:
            raise DataError(
                f"--target {text!r}: no such class; this run's classes are "
                f"{', '.join(f'{i} {n}' for i, n in enumerate(names))}"
            )
        low = 1 if self.task == "segmentation" else 0
        if not low <= k < len(names):
            what = "a foreground class" if self.task == "segmentation" else "a class"
            raise DataError(
                f"--target {text}: {what} lies in [{low}, {len(names)}) for this run "
                f"({', '.join(f'{i} {n}' for i, n in enumerate(names) if i >= low)})"
            )
        return k

    def require_head(self) -> None:
        if self.method.predictor is None:
            raise LabelwiseError(
                f"{self.run_dir}: a {self.spec['method']} run has a backbone but no classifier head "
                "to predict or explain; train a classifier or segmenter from it (model.init_from, "
                "with model.freeze_backbone for a linear probe) and use that run"
            )

    # --- inputs -------------------------------------------------------------------------------------------------

    def read(self, path: str | Path) -> Volume:
        """One input file as training saw its data: :meth:`read_raw`, then :meth:`preprocess`."""
        return self.preprocess(self.read_raw(path))

    def read_raw(self, path: str | Path) -> Volume:
        """One input file read by the package's one reader (:func:`labelwise.data.volumes.read_image`, with the run's
        Harvard-GDP modalities), its channels fitted to the network (:func:`fit_channels`); not yet preprocessed.
        An input holding NaN or infinite values is refused (:func:`require_finite`)."""
        path = Path(path)
        volume = read_image(path, self.spec["preprocessing"].get("modalities") or ("rnflt",))
        array, spacing = require_finite(volume.array, path), volume.spacing
        if suffix_of(path) == ".npy" and len(spacing) == self.spatial_dims - 1:  # an (X, Y, Z) array read as (C, H, W)
            array, spacing = array[None], (1.0,) * self.spatial_dims
        return Volume(fit_channels(array, path, self.in_channels, self.spatial_dims), tuple(spacing), volume.affine)

    def preprocess(self, volume: Volume) -> Volume:
        """The run's preprocessing, as training's data loading applied it: the training grid
        (:func:`labelwise.data.volumes.to_grid`: ``reorient`` to RAS+ and resampling to the target ``spacing``, when
        the run recorded them; runs from before them: neither), then
        :func:`labelwise.data.intensity.preprocess_image` (resize, intensity and the training split's statistics).
        The result's ``grid`` is set when reorientation or resampling was asked
        (:func:`labelwise.data.volumes.from_grid` puts outputs back on the input's own grid)."""
        preprocessing = self.spec["preprocessing"]
        reorient, spacing = bool(preprocessing.get("reorient", False)), preprocessing.get("spacing")
        if reorient or spacing is not None:
            volume, _ = to_grid(volume, reorient, spacing)
        array = preprocess_image(volume.array, preprocessing)
        return Volume(np.ascontiguousarray(array, dtype=np.float32), volume.spacing, volume.affine, volume.grid)

    # --- outputs ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, image: torch.Tensor, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
        """Logits of a batch ``(B, C, *spatial)``: the run's own ``predict`` (segmenters: sliding windows of the
        run's window and overlap, or those set by :meth:`configure`)."""
        self.require_head()
        return self.method.predict(image.to(self.device), spacing=spacing).float().cpu()

    @torch.no_grad()
    def flip_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(F, B, K, *spatial)`` of a batch under every combination of flips of its axes, each flipped back
        (:meth:`labelwise.methods.base.Method.flip_logits`, with the run's windows): what ``predict
        --uncertainty`` measures. Refused for a method with a predict of its own (Frangi's filter)."""
        self.require_head()
        if self.task != "segmentation" or type(self.method).predict is not Method.predict:
            raise LabelwiseError(
                f"{self.run_dir}: --uncertainty measures how a segmentation network's output varies over flips; "
                f"this run's method ({type(self.method).__name__}) predicts by its own rule"
            )
        return self.method.flip_logits(image.to(self.device)).float().cpu()

    def segment(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Foreground probability (through the run's isotonic map, if it has one), label map and the threshold used
        per case, from segmentation logits ``(B, K, *spatial)``: the run's threshold (one channel) or argmax
        (several), unless :meth:`configure` set one (:func:`labelwise.models.outputs.segment`, the function
        training's evaluation uses), components smaller than the run's ``min_size`` removed."""
        if self.threshold_override is not None:
            probability, labels, used = segment(logits, self.threshold_override[0])
        else:
            probability, labels, used = segment(logits, self.method.segment_threshold(logits.shape[1]))
        probability = self.method.recalibrated(probability)  # the run's isotonic map, if it has one
        return probability, remove_small_components(labels, self.method.min_size), used

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The run's output activation of ``logits`` (softmax over classes, sigmoid per label or of one channel)."""
        return activate(logits, self.activation)

    def configure(
        self,
        threshold: Threshold | str = None,
        overlap: float | None = None,
        window: Sequence[int] | None = None,
        tta: bool | None = None,
        min_size: int | None = None,
        batch_size: int | None = None,
    ) -> RunModel:
        """Set the inference settings of the next predictions: each one given overrides the run's, each None is the
        run's own (``inference.json``), whatever an earlier call set; ``threshold="argmax"``: the argmax of several
        output channels; ``tta``: flip test-time augmentation; ``min_size``: smallest connected component kept;
        ``batch_size``: sliding windows per forward pass (default 4)."""
        settings = self.spec["inference"]
        self.method.tta = bool(settings.get("tta", False) if tta is None else tta)
        self.method.min_size = int(settings.get("min_size", 0) if min_size is None else min_size)
        self.method.scales = tuple(float(x) for x in settings.get("scales") or [1.0])
        self.method.window_batch = 4 if batch_size is None else int(batch_size)
        if self.method.min_size < 0 or self.method.window_batch < 1:
            raise LabelwiseError(f"min_size must be >= 0 and batch_size >= 1, got {min_size} and {batch_size}")
        self.threshold_override = None if threshold is None else (parse_threshold(threshold),)
        overlap = settings["overlap"] if overlap is None else float(overlap)
        if not 0.0 <= overlap < 1.0:
            raise LabelwiseError(f"overlap: expected a value in [0, 1), got {overlap}")
        self.method.threshold, self.method.overlap = settings["threshold"], overlap
        self.method.calibrated = settings.get("calibrated_threshold")  # threshold: calibrate, chosen on validation
        self.method.temperature = float(settings.get("temperature") or 1.0)  # temperature: fit, chosen on validation
        isotonic = settings.get("isotonic")  # the foreground probability's map (isotonic: true, labelwise calibrate)
        self.method.isotonic = (list(isotonic["x"]), list(isotonic["y"])) if isotonic else None
        window = settings.get("window") if window is None else window
        self.method.window = list(window) if window else None
        return self


def load_run(path: str | Path, device: str | torch.device | None = None) -> RunModel:
    """A run directory (its latest checkpoint; with ``trainer.select_best``, the best validation weights it tested)
    or one checkpoint folder ``RUN/checkpoints/step-XXXXXX`` (or ``RUN/checkpoints/best``), rebuilt from the folder
    alone: the training data is not read, and its paths are not checked. ``device``: where the networks run
    (``cpu``, ``cuda``, ``cuda:1``; default the CPU); inputs go there and outputs come back to the CPU."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        checkpoint, run_dir = path, path.parent.parent
    elif (path / "config.yaml").is_file() and RunDir(path).summary().get("tested_step") is not None:
        run_dir, checkpoint = path, path / "checkpoints" / "best"  # trainer.select_best: the weights it tested
    elif (path / "config.yaml").is_file():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise LabelwiseError(f"{path}: the run has no complete checkpoint yet (checkpoints/latest.json)")
        run_dir, checkpoint = path, latest
    else:
        raise LabelwiseError(f"{path}: neither a run directory (config.yaml) nor a checkpoint folder ({WEIGHTS})")
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise LabelwiseError(f"{checkpoint}: its run directory {run_dir} has no config.yaml")
    cfg = load_config(run.config, check_files=False)
    spec = _read_spec(run, cfg)
    data = _bundle(spec)
    method = METHODS[cfg.method.name](cfg, data)
    load_weights(checkpoint, method.networks)
    target = torch.device("cpu")
    if device is not None:
        try:
            target = torch.device(device)
            torch.empty(0, device=target)  # refuses an unavailable device here, with its own message
        except (RuntimeError, AssertionError) as err:
            raise LabelwiseError(f"--device {device}: {err}") from None
    for net in method.networks.values():
        net.to(target).eval()
    # the run's threshold, window, overlap, tta and min_size
    return RunModel(method, spec, run_dir, checkpoint, device=target).configure()


def _read_spec(run: RunDir, cfg: Any) -> dict[str, Any]:
    """``inference.json``; a run from before it was written: rebuilt from summary.json's data sizes (per-image
    intensity normalisation only: such runs saved no training statistics)."""
    if run.inference.is_file():
        try:
            return json.loads(run.inference.read_text())
        except ValueError as err:
            raise LabelwiseError(f"{run.inference}: not valid JSON: {err}") from None
    info = run.summary().get("data")
    if not info:
        raise LabelwiseError(
            f"{run.path}: neither inference.json nor the data's sizes in summary.json; retrain it "
            "with this version of labelwise"
        )
    data = DataBundle(
        splits={},
        task=info["task"],
        num_classes=info["num_classes"],
        in_channels=info["in_channels"],
        spatial_dims=info["spatial_dims"],
        class_names=list(info.get("class_names") or []),
        image_size=tuple(info["image_size"]) if info.get("image_size") else None,
        preprocessing={"intensity": cfg.data.intensity if cfg.data.manifest is not None else "none"},
    )
    return METHODS[cfg.method.name](cfg, data).inference_spec()


def _bundle(spec: dict[str, Any]) -> DataBundle:
    """The data description a Method is built from, without data (no splits)."""
    out, net = spec["output"], spec["network"]
    names = list(out["class_names"])
    if spec["task"] == "segmentation":
        names = [] if names[1:] == ["foreground"] else names[1:]
    return DataBundle(
        splits={},
        task=spec["task"],
        num_classes=int(out["num_classes"]),
        in_channels=int(net["in_channels"]),
        spatial_dims=int(net["spatial_dims"]),
        class_names=names,
        multilabel=bool(out.get("multilabel")),
        image_size=tuple(net["image_size"]) if net.get("image_size") else None,
        preprocessing=dict(spec["preprocessing"]),
    )


def input_files(paths: Sequence[str | Path], suffixes: Sequence[str] | None = None) -> list[Path]:
    """Files given, and the readable files inside folders given (sorted); a clear error for anything else.
    ``suffixes``: the accepted file types (default: pictures, ``.npy``, NIfTI and Harvard-GDP ``.npz``)."""
    suffixes = tuple(suffixes or IMAGE_SUFFIXES)
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and suffix_of(p) in suffixes)
            if not found:
                raise DataError(f"{path}: no images or volumes ({', '.join(suffixes)})")
            files += found
        elif path.is_file():
            if suffix_of(path) not in suffixes:
                raise DataError(f"{path}: unsupported file type; expected one of {', '.join(suffixes)}")
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def require_finite(array: np.ndarray, source: str | Path) -> np.ndarray:
    """``array``, or a DataError naming ``source`` (the input file, or a dataset's sample) when it holds NaN or
    infinite values: a network maps them to NaN outputs, which would be written as if they were predictions."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise DataError(f"{source}: holds NaN or infinite values ({bad} of {array.size}); an input must be finite")
    return array


def fit_channels(array: np.ndarray, path: Path, in_channels: int, spatial_dims: int) -> np.ndarray:
    """``array`` ``(C, *spatial)`` checked against the network's input: a grey input given to a colour model is
    repeated over its channels, a colour one given to a grey model averaged; anything else is a DataError."""
    if array.ndim != spatial_dims + 1:
        raise DataError(
            f"{path}: shape {array.shape}; the model takes {spatial_dims}D inputs "
            f"({in_channels}, {', '.join(['size'] * spatial_dims)})"
        )
    channels = array.shape[0]
    if channels != in_channels:
        if channels == 1:
            array = np.repeat(array, in_channels, axis=0)
        elif in_channels == 1 and channels == 3:
            array = array.mean(0, keepdims=True)
        else:
            raise DataError(f"{path}: {channels} channels; the model takes {in_channels}")
    return array


def reporter(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    """Where a predict command's progress lines go: ``progress`` itself when callable, stderr when True, nowhere
    when False."""
    if callable(progress):
        return progress
    if progress:
        import typer

        return lambda line: typer.echo(line, err=True)
    return lambda line: None
