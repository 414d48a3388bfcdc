"""DRIVE retinal vessels (real data): labelwise's U-Net MSS recipe against its plain version, Frangi and nnU-Net v2.

DRIVE (``../shared/data/drive``, see its SOURCES.md; development and benchmarks only, never shipped): 20 training
photographs (18 train + 2 validation: ``--val``) and 20 test photographs, scored inside each test image's field of
view (the manifest's ``roi`` column) against the first observer, threshold 0.5 on the probability. The manifest is
built from the folders by ``labelwise data manifest`` as a user would.

Variants (``--variants``; each seed trains each one from scratch):

  unet-mss    configs/drive-unet-mss.yaml as shipped: augmentation, per-channel intensity, Dice + cross-entropy
  plain       the same network, steps and optimiser without the augment section and with per-image max scaling
              (what labelwise did before issue 16)
  frangi      configs/frangi-synthetic-3d.yaml's method on the 2D images (vesselness, threshold tuned on the
              training masks)
  nnunet      nnU-Net v2's 2d configuration through benchmarks/nnunet_drive.py in its own environment
              (``make nnunet-env``), CPU, epochs cut to the same training budget, scored by labelwise's evaluation

Printed and written to ``OUT/results.json``: Dice (= F1), clDice, sensitivity and precision (mean ± std over seeds
of the mean over the 20 test images), training minutes per seed, and the second observer's Dice for reference::

    python benchmarks/drive.py [--seeds 0 1 2] [--variants unet-mss plain frangi nnunet] [--minutes 30]
                               [--drive ../shared/data/drive] [--out runs/bench-drive] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCORES = ("dice", "cldice", "sensitivity", "precision")
VAL_IDS = ("39", "40")  # the two training photographs kept for validation (the same for every variant)


def build_manifest(drive: Path, out: Path) -> Path:
    """The DRIVE manifest from its folders, through the CLI as a user builds it (val: :data:`VAL_IDS`)."""
    manifest = out / "drive.csv"
    split_from = out / "splits.csv"
    split_from.write_text("id,split\n" + "".join(f"{i},{'val' if str(i) in VAL_IDS else 'train'}\n"
                                                 for i in range(21, 41)))
    commands = [
        ["data", "manifest", "--images", str(drive / "training" / "images"), "--labels",
         str(drive / "training" / "1st_manual"), "--roi", str(drive / "training" / "mask"), "--split-from",
         str(split_from), "--out", str(manifest)],
        ["data", "manifest", "--images", str(drive / "test" / "images"), "--labels",
         str(drive / "test" / "1st_manual"), "--roi", str(drive / "test" / "mask"), "--split", "test", "--append",
         "--out", str(manifest)],
    ]
    for command in commands:
        subprocess.run([sys.executable, "-m", "labelwise", *command], check=True, cwd=REPO)
    return manifest


def second_observer(drive: Path) -> dict[str, float]:
    """The second observer's scores against the first, inside the field of view (the human reference)."""
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.surface import segmentation_scores

    rows = []
    for i in range(1, 21):
        first = read_volume(drive / "test" / "1st_manual" / f"{i:02d}_manual1.gif", mask=True).array
        second = read_volume(drive / "test" / "2nd_manual" / f"{i:02d}_manual2.gif", mask=True).array
        roi = read_volume(drive / "test" / "mask" / f"{i:02d}_test_mask.gif", mask=True).array
        rows.append(segmentation_scores(second, first, None, roi))
    return {k: float(np.mean([r[k] for r in rows])) for k in SCORES}


def run_labelwise(variant: str, manifest: Path, run_dir: Path, seed: int, extra: list[str]) -> dict:
    from labelwise.config import load_config

    overrides = [f"data.manifest={manifest}", f"seed={seed}", *extra]
    if variant == "plain":
        overrides += ["augment=null", "data.intensity=max"]
    if variant == "frangi":
        config = load_config(REPO / "configs" / "frangi-synthetic-3d.yaml",
                             [f"data.manifest={manifest}", f"seed={seed}", "data.patch_size=null",
                              "data.batch_size=1", "name=drive-frangi", "method.ridges=dark",
                              "method.sigmas=[1.0,1.5,2.0,3.0]", "data.intensity=max"])
    else:
        config = load_config(REPO / "configs" / "drive-unet-mss.yaml", overrides)
    return train_and_score(config, run_dir)


def train_and_score(config, run_dir: Path) -> dict:
    """Train ``config`` into ``run_dir`` and return the mean test scores against each test case's label (the clean
    mask), the test and roi case counts, and the training and wall minutes. A run killed with the same config
    resumes from its last checkpoint; anything else there is a stale attempt and is cleared first."""
    from labelwise.config import load_config
    from labelwise.training import train

    summary_path, saved = run_dir / "summary.json", run_dir / "config.yaml"
    resume = False
    if summary_path.is_file() and saved.is_file() and json.loads(summary_path.read_text()).get("status") == "interrupted":
        before, now = load_config(saved, check_files=False).to_dict(), config.to_dict()
        for raw, base in ((before, run_dir), (now, Path.cwd())):  # the run saves its manifest relative to itself
            raw["data"]["manifest"] = str((base / raw["data"]["manifest"]).resolve())
        resume = before == now
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    result = train(config, run_dir, resume=resume)
    wall = time.perf_counter() - started
    if result.status != "completed":
        raise RuntimeError(f"{run_dir.name}: {result.status}: {result.message}")
    summary = json.loads((run_dir / "summary.json").read_text())
    scores = json.loads((run_dir / "predictions" / "test" / "segmentation.json").read_text())
    label = scores["references"]["label"]
    # a score is None where it is undefined (precision of an empty prediction)
    return {**{k: label["mean"][k] for k in SCORES}, "test_cases": len(label["cases"]), "roi_cases": scores.get("roi"),
            "train_minutes": summary.get("wall_time_s", wall) / 60, "wall_minutes": wall / 60}


def run_nnunet(drive: Path, work: Path, seed: int, minutes: float) -> dict:
    """nnU-Net v2 (its own environment) trained for ``minutes``, its test masks scored inside the field of view."""
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.surface import segmentation_scores

    python = REPO / ".venv-nnunet" / "bin" / "python"
    if not python.is_file():
        raise RuntimeError("nnU-Net's environment is missing: run `make nnunet-env` first")
    split = work / "val_ids.txt"
    work.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(VAL_IDS) + "\n")
    predictions = work / "predictions"
    subprocess.run([str(python), str(REPO / "benchmarks" / "nnunet_drive.py"), "--drive", str(drive), "--work",
                    str(work), "--fold-split", str(split), "--minutes", str(minutes), "--seed", str(seed),
                    "--out", str(predictions)], check=True, cwd=REPO)
    rows = []
    for i in range(1, 21):
        pred = read_volume(predictions / f"{i:02d}_test.png", mask=True).array
        first = read_volume(drive / "test" / "1st_manual" / f"{i:02d}_manual1.gif", mask=True).array
        roi = read_volume(drive / "test" / "mask" / f"{i:02d}_test_mask.gif", mask=True).array
        rows.append(segmentation_scores(pred, first, None, roi))
    timing = json.loads((predictions / "timing.json").read_text())
    return {**{k: float(np.mean([r[k] for r in rows])) for k in SCORES},
            "train_minutes": timing.get("train_wall_s", float("nan")) / 60, "epochs": timing.get("epochs_done"),
            "iterations": timing.get("iterations_done"), "s_per_iteration": timing.get("s_per_iteration")}


def table_cells(rows: list[dict]) -> list[str]:
    """Mean ± sample std over seeds of every score (the value alone for one seed, "-" for none), and the mean
    training minutes, of one variant's result rows."""
    cells = []
    for k in (*SCORES, "train_minutes"):
        values = [r[k] for r in rows]
        if not values:
            cells.append("-")
        elif k == "train_minutes":
            cells.append(f"{statistics.mean(values):.1f}")
        else:
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["unet-mss", "plain", "frangi", "nnunet"],
                        choices=["unet-mss", "plain", "frangi", "nnunet"])
    parser.add_argument("--minutes", type=float, default=30.0, help="nnU-Net's training budget per seed")
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-drive")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for the unet-mss and plain variants")
    args = parser.parse_args()
    if not (args.drive / "training" / "images").is_dir():
        raise SystemExit(f"{args.drive}: DRIVE not found (see ../shared/data/drive/SOURCES.md)")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(args.drive, args.out)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["second_observer"] = second_observer(args.drive)
    for seed in args.seeds:  # seeds outside, variants inside: a slow machine period hits every variant alike
        for variant in args.variants:
            key = f"{variant}/seed{seed}"
            print(f"== {key}", flush=True)
            if variant == "nnunet":
                results[key] = run_nnunet(args.drive, args.out / f"nnunet-seed{seed}", seed, args.minutes)
            else:
                results[key] = run_labelwise(variant, manifest, args.out / key.replace("/", "-"), seed,
                                             args.overrides)
            print(json.dumps(results[key]), flush=True)
            results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nDRIVE test (20 images, inside the field of view, first observer), seeds {args.seeds}")
    print("| variant | Dice | clDice | sensitivity | precision | training minutes |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants:
        rows = [results[f"{variant}/seed{s}"] for s in args.seeds if f"{variant}/seed{s}" in results]
        print(f"| {variant} | " + " | ".join(table_cells(rows)) + " |")
    human = results["second_observer"]
    print("| second observer | " + " | ".join(f"{human[k]:.3f}" for k in SCORES) + " | - |")


if __name__ == "__main__":
    main()
