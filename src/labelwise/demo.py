"""``labelwise demo``: each capability's short, complete run on built-in data, with its report.

Foundation part: generate the shapes dataset as a file, train a classifier on it (``runs/demo``) and a
segmenter on the same images (``runs/demo-segmentation``), evaluate both and write their reports.
Multi-label evaluation part: train a classifier on PatchML images with one label each (``runs/demo-multilabel``)
and score it against the images' full label sets (``evaluation.json``, ``evaluation.html``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from labelwise.config import load_config
from labelwise.data.npz import save_npz
from labelwise.data.synth import make_patchml, make_shapes, write_patchml
from labelwise.engine import RunDir, train
from labelwise.errors import LabelwiseError
from labelwise.evaluate import evaluate_classification, write_outputs
from labelwise.report import build_report


def _fresh(path: Path) -> Path:
    """Remove an earlier demo run at ``path`` (only a labelwise run directory, never anything else)."""
    if path.exists():
        if not RunDir(path).summary_path.is_file():
            raise LabelwiseError(f"{path} exists and is not a labelwise run; move it or pick --out")
        shutil.rmtree(path)
    return path


def demo_configs(data_file: Path, quick: bool = False, patchml_file: Path | None = None) -> dict[str, dict[str, Any]]:
    """The demo's run configs, by run-directory name."""
    # Steps chosen so each model has converged on the test split (about 90 s for all on 2 CPU cores).
    full = {"demo": 600, "demo-segmentation": 2000, "demo-multilabel": 1000}
    steps = dict.fromkeys(full, 20) if quick else full
    common: dict[str, Any] = {
        "seed": 0,
        "method": "supervised",
        "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 1e-4, "scheduler": "cosine", "warmup_steps": 10},
    }

    def trainer(name: str) -> dict[str, int]:
        n = steps[name]
        return {"max_steps": n, "checkpoint_every": n // 2, "log_every": 5, "val_every": n // 4}

    return {
        "demo": {
            **common,
            "name": "demo",
            "data": {"path": str(data_file), "task": "classification", "batch_size": 32},
            "model": {"name": "resnet10", "channels": [16, 32, 64, 128], "norm": "batch"},
            "trainer": trainer("demo"),
        },
        "demo-segmentation": {
            **common,
            "name": "demo-segmentation",
            "data": {"path": str(data_file), "task": "segmentation", "batch_size": 16},
            "model": {"name": "unet", "channels": [16, 32, 64], "norm": "instance"},
            "trainer": trainer("demo-segmentation"),
        },
        # Single labels of multi-object images (PatchML), scored afterwards against the full label sets.
        "demo-multilabel": {
            **common,
            "name": "demo-multilabel",
            "data": {"path": str(patchml_file), "task": "classification", "batch_size": 32},
            "model": {"name": "resnet10", "channels": [16, 32, 64, 128], "norm": "batch"},
            "trainer": trainer("demo-multilabel"),
        },
    }


def run_demo(out: str | Path = "runs", quick: bool = False) -> list[Path]:
    """Run every demo part into ``out``; returns the report paths."""
    out = Path(out)
    data_file = out / "demo-data" / "shapes-2d.npz"
    save_npz(data_file, make_shapes(n=300 if quick else 6000, size=32, dim=2, num_classes=3, seed=0))
    patchml_dir = write_patchml(out / "demo-data" / "patchml", make_patchml(n=300 if quick else 6000, seed=0), images=False)
    reports = []
    for name, raw in demo_configs(data_file, quick, patchml_dir / "patchml.npz").items():
        config = load_config(raw)
        result = train(config, _fresh(out / name))
        if name == "demo-multilabel":
            predictions = result.run_dir / "predictions"
            scores = evaluate_classification(
                [predictions / "test.npz"], str(patchml_dir / "label_sets.json"), ids=predictions / "test_ids.txt",
                single_labels=predictions / "test.npz", bootstrap=1000,
            )
            write_outputs(scores, result.run_dir / "evaluation.json", None, result.run_dir / "evaluation.html")
        reports.append(build_report(result.run_dir))
    return reports
