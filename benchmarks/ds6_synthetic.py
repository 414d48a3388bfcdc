"""Frangi vs U-Net MSS vs DS6 on the synthetic 3D vessel volumes, trained on the noisy masks, scored against the
clean and the noisy masks of the test cases.

For every seed: a fresh synthetic set (``labelwise data synth vessels``: 11 volumes, 6 train / 2 val / 3 test, its
noisy "semi-automatic" masks made by Frangi vesselness + Otsu), then three runs from the shipped configs:

  frangi     configs/frangi-synthetic-3d.yaml   vesselness threshold tuned on the training cases' noisy masks
  unet-mss   configs/unet-mss-synthetic-3d.yaml U-Net MSS, Focal Tversky on three outputs
  ds6        configs/ds6-synthetic-3d.yaml      the same network; baseline for the first half of the steps, then
                                                + deformed supervision + consistency (same number of steps)

Both networks get the same steps, patches, widths and optimiser; nothing is tuned on the test cases (the threshold
is 0.5, the configs' default). Variants (``--methods``): ``ds6-detached`` (no gradient through the consistency
target), ``ds6-finetune`` (the paper's recipe: ``--steps`` of U-Net MSS, then ``--steps`` more with deformation)
and its control ``unet-mss-long`` (U-Net MSS for 2 x ``--steps``). Printed: Dice and clDice against the clean and the noisy masks (mean ± std over
seeds of the per-seed mean over the 3 test cases), recall of clean vessel voxels by vessel radius, and training
time per step. Everything is also written to ``OUT/results.json``.

    python benchmarks/ds6_synthetic.py [--seeds 0 1 2] [--steps 600] [--patch 48] [--shape 96]
                                       [--channels 8,16,32,64,128] [--out runs/bench-ds6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = {"frangi": "frangi-synthetic-3d", "unet-mss": "unet-mss-synthetic-3d", "ds6": "ds6-synthetic-3d",
           "ds6-detached": "ds6-synthetic-3d",  # ablation: no gradient through the consistency target
           "ds6-finetune": "ds6-synthetic-3d",  # the paper's recipe: the whole U-Net MSS run, then as many DS6 steps
           "unet-mss-long": "unet-mss-synthetic-3d"}  # its control: U-Net MSS alone for as many steps
BINS = ((0.0, 0.75), (0.75, 1.5), (1.5, 2.5), (2.5, float("inf")))


def run_method(method: str, manifest: Path, run_dir: Path, seed: int, args) -> dict:
    from labelwise.config import load_config
    from labelwise.training import train

    overrides = [f"data.manifest={manifest}", f"seed={seed}", "trainer.val_every=0"]
    steps = 2 * args.steps if method in ("ds6-finetune", "unet-mss-long") else args.steps
    if method != "frangi":
        overrides += [f"trainer.max_steps={steps}", f"trainer.checkpoint_every={steps}",
                      f"data.patch_size=[{args.patch},{args.patch},{args.patch}]",
                      f"model.channels=[{args.channels}]", "trainer.log_every=50"]
    if method.startswith("ds6"):
        overrides.append(f"method.baseline_steps={args.steps if method == 'ds6-finetune' else args.steps // 2}")
    if method == "ds6-detached":
        overrides.append("method.detach_consistency_target=true")
    config = load_config(REPO / "configs" / f"{METHODS[method]}.yaml", overrides)
    shutil.rmtree(run_dir, ignore_errors=True)  # not recorded: whatever is there is a stale or killed attempt
    started = time.perf_counter()
    result = train(config, run_dir)
    wall = time.perf_counter() - started
    if result.status != "completed":
        raise RuntimeError(f"{method} seed {seed}: {result.status}: {result.message}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_times = [r["time"] for r in records if r.get("split") == "train"]
    steps = [r["step"] for r in records if r.get("split") == "train"]
    per_step = ((train_times[-1] - train_times[0]) / (steps[-1] - steps[0])) if len(steps) > 1 else float("nan")
    return {"wall_s": wall, "s_per_step": per_step}


def score(run_dir: Path, data: Path) -> dict:
    """Per test case: scores against the clean and the noisy masks, and recall of clean voxels per radius bin."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.surface import segmentation_scores

    cases = [c for c in read_manifest(data / "manifest.csv") if c.split == "test"]
    rows = []
    for case in cases:
        pred = read_volume(run_dir / "predictions" / "test" / "masks" / f"{case.id}.nii.gz", mask=True).array > 0
        truth = read_volume(case.truth, mask=True).array > 0
        noisy = read_volume(case.label, mask=True).array > 0
        radius = read_volume(data / "radius" / f"{case.id}.nii.gz").array[0]
        clean, against_noisy = segmentation_scores(pred, truth), segmentation_scores(pred, noisy)
        row = {"id": case.id, "dice_clean": clean["dice"], "cldice_clean": clean["cldice"],
               "dice_noisy": against_noisy["dice"], "cldice_noisy": against_noisy["cldice"],
               "hd95_clean": clean["hd95"]}
        for low, high in BINS:
            voxels = truth & (radius >= low) & (radius < high)
            row[f"recall_{low:g}-{high:g}"] = float((pred & voxels).sum() / voxels.sum()) if voxels.any() else None
        rows.append(row)
    return {"cases": rows}


def noisy_mask_scores(data: Path) -> dict:
    """The noisy training masks themselves scored against the clean ones (test cases): the ceiling a method that
    copies its labels would reach."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.surface import segmentation_scores

    rows = []
    for case in (c for c in read_manifest(data / "manifest.csv") if c.split == "test"):
        truth = read_volume(case.truth, mask=True).array > 0
        noisy = read_volume(case.label, mask=True).array > 0
        radius = read_volume(data / "radius" / f"{case.id}.nii.gz").array[0]
        s = segmentation_scores(noisy, truth)
        row = {"id": case.id, "dice_clean": s["dice"], "cldice_clean": s["cldice"], "dice_noisy": 1.0,
               "cldice_noisy": 1.0, "hd95_clean": s["hd95"]}
        for low, high in BINS:
            voxels = truth & (radius >= low) & (radius < high)
            row[f"recall_{low:g}-{high:g}"] = float((noisy & voxels).sum() / voxels.sum()) if voxels.any() else None
        rows.append(row)
    return {"cases": rows}


def summarise(per_seed: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean ± std over seeds of each seed's mean over its test cases."""
    keys = [k for k in per_seed[0]["cases"][0] if k != "id"]
    out = {}
    for key in keys:
        means = [float(np.nanmean([np.nan if c[key] is None else c[key] for c in s["cases"]])) for s in per_seed]
        out[key] = (statistics.mean(means), statistics.stdev(means) if len(means) > 1 else float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--patch", type=int, default=48, help="training patch size per axis (multiple of 16)")
    parser.add_argument("--shape", type=int, default=96, help="synthetic volume size per axis")
    parser.add_argument("--channels", default="8,16,32,64,128", help="U-Net MSS widths")
    parser.add_argument("--methods", nargs="+", default=["frangi", "unet-mss", "ds6"], choices=list(METHODS),
                        help="runs already in OUT/results.json for other methods are kept and reported too")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-ds6")
    args = parser.parse_args()
    from labelwise.data.synth.vessels import write_vessels

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "methods"}
    previous = args.out / "results.json"
    results: dict = {"settings": settings, "seeds": {}}
    if previous.is_file() and json.loads(previous.read_text()).get("settings") == settings:
        results = json.loads(previous.read_text())  # same settings: add to the earlier runs
    results["seeds"] = {int(k): v for k, v in results["seeds"].items()}
    for seed in args.seeds:
        data = args.out / f"data-seed{seed}"
        if not (data / "manifest.csv").is_file():
            write_vessels(data, 3, 11, [args.shape] * 3, seed=seed)
        results["seeds"].setdefault(seed, {})["noisy-mask"] = noisy_mask_scores(data)
        for method in args.methods:
            info = run_method(method, data / "manifest.csv", args.out / f"seed{seed}" / method, seed, args)
            results["seeds"][seed][method] = {**info, **score(args.out / f"seed{seed}" / method, data)}
            print(f"seed {seed} {method}: {info['wall_s']:.0f} s; " + ", ".join(
                f"{k} {np.nanmean([c[k] for c in results['seeds'][seed][method]['cases']]):.3f}"
                for k in ("dice_clean", "cldice_clean", "dice_noisy")), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = {}
    names = [m for m in ["noisy-mask", *METHODS] if all(m in results["seeds"][s] for s in args.seeds)]
    for name in names:
        table[name] = summarise([results["seeds"][s][name] for s in args.seeds])
        times = [results["seeds"][s][name].get("s_per_step") for s in args.seeds if name != "noisy-mask"]
        if times and name != "frangi":
            table[name]["s_per_step"] = (statistics.median(times), float("nan"))
    results["summary"] = table
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    columns = ["dice_clean", "cldice_clean", "dice_noisy", "cldice_noisy", "hd95_clean",
               *[f"recall_{low:g}-{high:g}" for low, high in BINS]]
    print(f"\n{len(args.seeds)} seeds, 3 test volumes each; mean ± std over seeds")
    print("| method | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c][0]:.3f} ± {row[c][1]:.3f}" for c in columns) + " |")
    for name in names:
        if name not in ("frangi", "noisy-mask"):
            print(f"{name}: {table[name]['s_per_step'][0]:.2f} s per training step (median over seeds)")


if __name__ == "__main__":
    main()
