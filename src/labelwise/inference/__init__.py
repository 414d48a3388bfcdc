"""A finished run as a model: load it from its folder alone, read and preprocess inputs as training did, forward or
sliding windows, activation, threshold, outputs (``labelwise predict``, ``labelwise explain``, ``labelwise export``).

    run = load_run("runs/ds6-synthetic-3d")          # config.yaml + inference.json + weights; no training data
    predict_files(run, ["new/case01.nii.gz"], "out")  # segmentation: probabilities, masks, figures
    predict_classes(run, ["table.csv"], "out")        # classification: predictions.csv and .npz

Modules: ``run`` (:class:`RunModel`, :func:`load_run`), ``segmentation`` (``predict_files`` and the per-case files),
``classification`` (``predict_classes``), ``figures`` (projections, overlays, difference maps), ``run_outputs`` (what
a training run writes at its end: the engine's output hook), ``explain``, ``export``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelwise.inference.classification import predict_classes
    from labelwise.inference.explain import explain_files
    from labelwise.inference.export import export_run
    from labelwise.inference.run import RunModel, input_files, load_run
    from labelwise.inference.segmentation import predict_files

__all__ = ["RunModel", "explain_files", "export_run", "input_files", "load_run", "predict_classes", "predict_files"]

# Each name's module, imported on first use: ``labelwise predict`` needs neither the explainers nor the export, and
# a cold process pays for every module it imports.
_MODULES = {
    "RunModel": "run",
    "explain_files": "explain",
    "export_run": "export",
    "input_files": "run",
    "load_run": "run",
    "predict_classes": "classification",
    "predict_files": "segmentation",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value
