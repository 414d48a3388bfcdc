"""``labelwise demo``: each capability's short, complete run on built-in data, with its report.

Foundation part: generate the shapes dataset as a file, train a classifier on it (``runs/demo``) and a
segmenter on the same images (``runs/demo-segmentation``), evaluate both and write their reports.
Multi-label evaluation part: train a classifier on PatchML images with one label each (``runs/demo-multilabel``)
and score it against the images' full label sets (``evaluation.json``, ``evaluation.html``).
Explanations part: Grad-CAM family maps of that classifier for a few test images (``runs/demo-multilabel/explanations``)
and the pointing game, deletion and insertion AUC of several methods on test images whose digit boxes are known;
the run's report shows both.
Vessel part: synthetic 2D vessel pictures with noisy semi-automatic masks, DS6 (U-Net MSS, then deformation-aware
training) on them (``runs/demo-vessels``), scored against the noisy and the clean masks, with projections and
difference maps in its report.
Raters part: the same vessel pictures traced by three simulated raters (``labelwise data degrade`` of the clean masks:
thin vessels left out, vessels a pixel wider, a vesselness filter), U-Net MSS trained on their mean as a soft target
(``data.raters: mean``, ``runs/demo-raters``; its probabilities calibrated by ``method.temperature: fit`` and
``method.isotonic: true``); the test images carry two raters (the clean and the semi-automatic
mask), so its report sets the model's Dice to each beside the raters' agreement.
Semi-supervised part: synthetic RNFL thickness maps (Harvard-GDP layout) with 20% of the training patients labelled,
the pseudo supervisor trained on them (``runs/demo-semi``), its report showing AUC, ROC curves per group and ES-AUC
by race, sex, ethnicity and age band.
Pretraining part: a ResNet-10 pretrained on the PatchML images with their tags, masked image modelling and
contrastive views at once (``runs/demo-pretrain``, k-NN accuracy in its report), then a linear probe of that frozen
backbone on the single labels (``runs/demo-pretrain-probe``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from labelwise.config import load_config
from labelwise.data.npz import save_npz
from labelwise.data.synth import make_patchml, make_shapes, write_patchml
from labelwise.engine import RunDir
from labelwise.errors import LabelwiseError
from labelwise.evaluation.classification import evaluate_classification, write_outputs
from labelwise.report import build_report
from labelwise.training import train


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


def explain_demo(run_dir: Path, patchml_file: Path, quick: bool = False) -> None:
    """Maps of a few test images (written as PNG first, so ``labelwise explain``'s own path runs) and a metrics
    table of several methods on test images, explaining each image's label, masks from its digit boxes."""
    import numpy as np
    import torch
    from PIL import Image

    from labelwise.data.npz import load_npz
    from labelwise.explain.evaluate import evaluate_explanations
    from labelwise.explain.metrics import box_masks
    from labelwise.explain.outputs import read_index, write_index
    from labelwise.inference import explain_files, load_run

    arrays = load_npz(patchml_file)
    test = np.flatnonzero(arrays["split"] == "test")
    inputs = run_dir / "explanations" / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    files = []
    for i in test[:4]:
        files.append(inputs / f"{arrays['ids'][i]}.png")
        Image.fromarray(np.round(arrays["image"][i, 0] * 255).astype(np.uint8)).save(files[-1])
    trained = load_run(run_dir)
    out = run_dir / "explanations"
    explain_files(
        trained, files, out, methods=("gradcam",) if quick else ("gradcam", "gradcam++", "scorecam", "eigencam")
    )

    chosen = test[: 16 if quick else 200]
    label = torch.from_numpy(arrays["label"][chosen])
    boxes = torch.from_numpy(arrays["boxes"][chosen])
    own = boxes[..., 1:].clone()
    own[boxes[..., 0] != label[:, None]] = -1  # the boxes of the explained digit only
    x = torch.from_numpy(arrays["image"][chosen])
    rows = evaluate_explanations(
        trained.model,
        x,
        label,
        box_masks(own, tuple(x.shape[2:])),
        methods=("gradcam", "center")
        if quick
        else ("gradcam", "gradcam++", "layercam", "scorecam", "eigencam", "center", "random"),
        steps=8 if quick else 16,
        activation=trained.activation,
        tolerance=0.0,  # 16-pixel images: the paper's 15 pixels would reach every corner
        options={"scorecam": {"batch_size": 256}},
    )
    write_index(out, (read_index(out) or {}).get("entries", []), rows)


def run_demo(out: str | Path = "runs", quick: bool = False) -> list[Path]:
    """Run every demo part into ``out``; returns the report paths."""
    out = Path(out)
    data_file = out / "demo-data" / "shapes-2d.npz"
    save_npz(data_file, make_shapes(n=300 if quick else 6000, size=32, dim=2, num_classes=3, seed=0))
    patchml_dir = write_patchml(
        out / "demo-data" / "patchml", make_patchml(n=300 if quick else 6000, seed=0), images=False
    )
    reports = []
    for name, raw in demo_configs(data_file, quick, patchml_dir / "patchml.npz").items():
        config = load_config(raw)
        result = train(config, _fresh(out / name))
        if name == "demo-multilabel":
            predictions = result.run_dir / "predictions"
            scores = evaluate_classification(
                [predictions / "test.npz"],
                str(patchml_dir / "label_sets.json"),
                ids=predictions / "test_ids.txt",
                single_labels=predictions / "test.npz",
                bootstrap=1000,
            )
            write_outputs(scores, result.run_dir / "evaluation.json", None, result.run_dir / "evaluation.html")
            explain_demo(result.run_dir, patchml_dir / "patchml.npz", quick)
        reports.append(build_report(result.run_dir))
    reports.append(build_report(vessels_demo(out, quick)))
    reports.append(build_report(raters_demo(out, quick)))
    reports.append(build_report(semi_demo(out, quick)))
    reports += [build_report(run_dir) for run_dir in pretrain_demo(out, patchml_dir / "patchml.npz", quick)]
    return reports


def vessels_config(manifest: Path, quick: bool = False) -> dict[str, Any]:
    """DS6 on the 2D synthetic vessels: configs/ds6-synthetic-2d.yaml, narrower and shorter for a CPU."""
    steps = 4 if quick else 400
    return {
        "name": "demo-vessels",
        "seed": 0,
        "method": {"name": "ds6", "baseline_steps": steps // 2},
        "data": {
            "manifest": str(manifest),
            "task": "segmentation",
            "patch_size": [64, 64],
            "batch_size": 8,
            "eval_batch_size": 1,
            "patches_per_volume": 200,
            "foreground_ratio": 0.5,
        },
        "model": {"name": "unet_mss", "channels": [8, 16, 32, 64, 128]},
        "optimizer": {"name": "adam", "lr": 0.002},
        "trainer": {
            "max_steps": steps,
            "checkpoint_every": steps,
            "log_every": 10 if not quick else 2,
            "val_every": steps // 2,
        },
    }


def vessels_demo(out: Path, quick: bool = False) -> Path:
    """Write the 2D vessel set, train DS6 on it and audit its masks; returns the run directory."""
    from labelwise.audit import audit_run
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.data.volumes import case_id

    manifest = write_vessels(
        out / "demo-data" / "vessels-2d", 2, 5 if quick else 11, [64, 64] if quick else [128, 128], seed=0
    )
    run_dir = train(load_config(vessels_config(manifest, quick)), _fresh(out / "demo-vessels")).run_dir
    tested = sorted(case_id(p) for p in (run_dir / "predictions" / "test" / "masks").iterdir())[:2]
    explain_cases(run_dir, [next((manifest.parent / "images").glob(f"{i}.*")) for i in tested])
    audit_run(run_dir, run_dir / "audit", progress=False)  # its val and test masks; the report links the page
    return run_dir


def raters_demo(out: Path, quick: bool = False) -> Path:
    """Three simulated raters of the 2D vessel set's training masks, U-Net MSS trained on their mean; returns the run
    directory (see the module's description)."""
    from dataclasses import replace

    from labelwise.audit.folds import write_manifest_rows
    from labelwise.data.degrade import degrade_manifest
    from labelwise.data.manifest import read_manifest

    folder = out / "demo-data" / "vessels-2d"
    cases = read_manifest(folder / "manifest.csv")
    clean = write_manifest_rows(folder / "clean.csv", [replace(c, label=c.truth) for c in cases])
    degraded: list[dict[str, Path]] = [
        {
            c.id: c.label
            for c in read_manifest(degrade_manifest(clean, kind, folder / f"rater-{kind}", seed=k))
            if c.label
        }
        for k, kind in enumerate(("thin", "dilate", "semi-automatic"))
    ]
    rated = []
    for c in cases:
        assert c.truth is not None and c.label is not None  # the generator writes both for every case
        if c.split == "train":
            rated.append(replace(c, label=degraded[0][c.id], raters=tuple(r[c.id] for r in degraded)))
        elif c.split == "test":  # two raters: the clean mask and the semi-automatic one
            rated.append(replace(c, label=c.truth, raters=(c.truth, c.label)))
        else:
            rated.append(replace(c, label=c.truth))
    manifest = write_manifest_rows(folder / "raters.csv", rated)
    config = vessels_config(manifest, quick)
    # probabilities calibrated on the validation images: a temperature, then an isotonic map (the report's
    # reliability diagram and inference settings show them)
    config.update(name="demo-raters", method={"name": "supervised", "temperature": "fit", "isotonic": True})
    config["data"]["raters"] = "mean"
    return train(load_config(config), _fresh(out / "demo-raters")).run_dir


def explain_cases(run_dir: Path, files: list[Path]) -> None:
    """Grad-CAM of a few input files through the run as a model (``labelwise explain``'s path: the run's folder, its
    reader, preprocessing and activation), into the run's gallery."""
    from labelwise.inference import explain_files, load_run

    explain_files(load_run(run_dir), files, run_dir / "explanations", methods=("gradcam",))


def semi_config(table: Path, quick: bool = False) -> dict[str, Any]:
    """The pseudo supervisor on the synthetic maps: configs/pseudo-supervisor-detection.yaml, smaller for a CPU."""
    steps = 4 if quick else 300
    return {
        "name": "demo-semi",
        "seed": 0,
        "method": {"name": "pseudo_supervisor", "window": 2 if quick else 50},
        "data": {
            "manifest": str(table),
            "task": "classification",
            "labels": ["glaucoma"],
            "attributes": ["race", "male", "hispanic", "age_band"],
            "image_size": [32, 32],
            "intensity": "channel",
            "batch_size": 12,
            "labelled_per_batch": 6,
        },
        "model": {"name": "resnet10", "norm": "group"},
        "optimizer": {"name": "adamw", "lr": 4e-5, "weight_decay": 0.01},
        "trainer": {
            "max_steps": steps,
            "checkpoint_every": steps,
            "log_every": 2 if quick else 10,
            "val_every": steps // 2,
        },
    }


def semi_demo(out: Path, quick: bool = False) -> Path:
    """Write synthetic maps with a table (20% of the training patients labelled) and train the pseudo supervisor on
    them; returns the run directory."""
    from labelwise.data.synth.rnflt import write_rnflt
    from labelwise.data.table import write_harvard_table

    folder = out / "demo-data" / "rnflt"
    if folder.exists():
        shutil.rmtree(folder)
    write_rnflt(folder, 60 if quick else 300, seed=0)
    table = write_harvard_table(folder, labelled=0.2, seed=0)
    run_dir = train(load_config(semi_config(table, quick)), _fresh(out / "demo-semi")).run_dir
    tested = [folder / f"{i}.npz" for i in (run_dir / "predictions" / "test_ids.txt").read_text().split()[:2]]
    explain_cases(run_dir, tested)
    return run_dir


def pretrain_demo(out: Path, patchml_file: Path, quick: bool = False) -> list[Path]:
    """Pretrain on the PatchML images (tags, masked patches, two views), then a linear probe of the frozen backbone
    on their single labels (configs/pretrain-patchml.yaml, shorter); returns both run directories."""
    steps = 4 if quick else 300
    model = {"name": "resnet10", "channels": [16, 32, 64, 128], "norm": "batch"}
    trainer = {"max_steps": steps, "checkpoint_every": steps, "log_every": 2 if quick else 10, "val_every": steps // 2}
    pre = load_config(
        {
            "name": "demo-pretrain",
            "seed": 0,
            "method": {"name": "pretrain", "tasks": {"multilabel": 1.0, "mim": 1.0, "contrastive": 1.0}},
            "data": {
                "path": str(patchml_file),
                "task": "classification",
                "labels": ["labels"],
                "batch_size": 64,
                "eval_batch_size": 256,
            },
            "model": model,
            "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "scheduler": "cosine", "warmup_steps": 10},
            "trainer": trainer,
        }
    )
    pretrained = train(pre, _fresh(out / "demo-pretrain")).run_dir
    probe = load_config(
        {
            "name": "demo-pretrain-probe",
            "seed": 0,
            "method": "supervised",
            "data": {"path": str(patchml_file), "task": "classification", "batch_size": 64},
            "model": {**model, "init_from": str(pretrained), "freeze_backbone": True},
            "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-4},
            "trainer": trainer,
        }
    )
    return [pretrained, train(probe, _fresh(out / "demo-pretrain-probe")).run_dir]
