"""A finished run as a model: load it from its folder alone, read and preprocess inputs as training did, forward or
sliding windows, activation, threshold, outputs (``labelwise predict``, ``labelwise explain``, ``labelwise export``).

    run = load_run("runs/ds6-synthetic-3d")          # config.yaml + inference.json + weights; no training data
    predict_files(run, ["new/case01.nii.gz"], "out")  # segmentation: probabilities, masks, figures
    predict_classes(run, ["table.csv"], "out")        # classification: predictions.csv and .npz
"""

from labelwise.inference.explain import explain_files
from labelwise.inference.export import export_run
from labelwise.inference.predict import predict_classes, predict_files
from labelwise.inference.run import RunModel, input_files, load_run

__all__ = ["RunModel", "explain_files", "export_run", "input_files", "load_run", "predict_classes", "predict_files"]
