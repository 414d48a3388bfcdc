"""A finished run as a model: load it from its folder alone, read and preprocess inputs as training did, forward or
sliding windows, activation, threshold, outputs (``labelwise predict``, ``labelwise explain``, ``labelwise export``).

    run = load_run("runs/ds6-synthetic-3d")          # config.yaml + inference.json + weights; no training data
    predict_files(run, ["new/case01.nii.gz"], "out")  # segmentation: probabilities, masks, figures
    predict_classes(run, ["table.csv"], "out")        # classification: predictions.csv and .npz

Modules: ``run`` (:class:`RunModel`, :func:`load_run`), ``segmentation`` (``predict_files`` and the per-case files),
``classification`` (``predict_classes``), ``figures`` (projections, overlays, difference maps), ``run_outputs`` (what
a training run writes at its end: the engine's output hook), ``explain``, ``export``.
"""

from labelwise.inference.classification import predict_classes
from labelwise.inference.explain import explain_files
from labelwise.inference.export import export_run
from labelwise.inference.run import RunModel, input_files, load_run
from labelwise.inference.segmentation import predict_files

__all__ = ["RunModel", "explain_files", "export_run", "input_files", "load_run", "predict_classes", "predict_files"]
