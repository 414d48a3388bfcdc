"""A cold process imports only what it uses (issue 28, "Cold start"): ``labelwise --help`` no torch, and what a
segmentation ``labelwise predict`` of labelwise's own network runs no MONAI (whose import loads all of it, seconds),
scipy, matplotlib, scikit-learn, pandas or Lightning. Checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("monai", "scipy", "matplotlib", "sklearn", "pandas", "lightning", "skimage", "captum", "onnx")


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    loaded = f"sorted({{m.split('.')[0] for m in sys.modules}} & set({names!r}))"
    script = f"{code}\nimport json, sys\nprint(json.dumps({loaded}))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_cli_module_imports_no_torch():
    assert _loaded("import labelwise.cli", ("torch", "numpy", *HEAVY)) == []


def test_a_segmentation_predict_imports_nothing_heavy(tmp_path):
    code = f"""
import numpy as np
import torch
import labelwise.cli
from labelwise.inference import load_run, predict_classes, predict_files
from labelwise.inference.figures import mask_overlay_rgb, project
from labelwise.data.volumes import write_volume
from labelwise.models import build_model, UNetMSS
from labelwise.models.windows import sliding_window_predict
from labelwise.methods import METHODS

sliding_window_predict(UNetMSS(2, 1, 1, (2, 2, 2, 2, 2)), torch.randn(1, 1, 40, 23), 32)
labels = np.zeros((8, 8), dtype=np.int64)
labels[2:5, 3:6] = 1
mask_overlay_rgb(np.random.rand(8, 8), labels)
write_volume({str(tmp_path / "mask.png")!r}, labels)
"""
    assert _loaded(code, HEAVY) == []
