"""Temperature scaling on DRIVE (issue 30, ``method.temperature: fit``): expected calibration error of the test
voxels' vessel probability before and after, and the Dice (unchanged by construction at the argmax / 0.5).

One training per seed of ``configs/drive-unet-mss.yaml`` (``--steps`` steps) with ``method.temperature=fit``; the
"before" figures are the same network's at temperature 1, recovered from the saved test probabilities (``p_T =
sigmoid(d / T)`` for the logit difference ``d``, so ``p_1 = sigmoid(T logit(p_T))``), inside the field of view,
against the first observer's masks; the validation figures are the run's own (``summary.json``'s calibration).
Goal (issue 30): the test ECE at least halved, Dice unchanged (± 0.002). Then the ensemble of the seeds' runs
(``labelwise predict RUN1 RUN2 RUN3``: their probabilities averaged; seeds on the same training images, not folds)
against each run alone, the same test images, Dice and ECE. And a bound: the temperatures chosen on the test images
themselves (by NLL, and by least ECE), and their test ECE: what no validation set could beat. ``--folds K``: K
more runs (the first seed), each leaving out every K-th training image from the K-th, and their ensemble (a fold
ensemble).

Isotonic recalibration (``method.isotonic: true``): for each seed's run, the map fitted on its validation images as
the run would fit it (the network's tempered probabilities), its test ECE. ``--val K`` trains runs of their own with
K validation images (the 2 of the shipped split, then training images spread over the ids) and ``method.isotonic:
true``: a map wants more validation images than a temperature does. Their Dice against the shipped split's::

Cross-fitted (``--crossfit K``): each seed's run copied, then ``labelwise calibrate COPY --folds K`` (K runs of its
config, each without a fold of the training images; the map fitted on every training image's out-of-fold
probabilities and the 2 validation images'), and the copy's test ECE through its map::

    python benchmarks/temperature.py --seeds 0 1 2 --steps 1000 --out runs/bench-temperature [--folds 3] [--val 6]
        [--crossfit 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive  # noqa: E402  (benchmarks/drive.py: the DRIVE manifest, train_and_score)

REPO = drive.REPO


def test_ece(run_dir: Path, manifest: Path, temperature: float) -> dict[str, float]:
    """ECE (15 bins) of the test voxels inside their roi at the fitted temperature and at 1."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.fairness import calibration_counts, ece_from_counts

    counts = {"after": np.zeros((3, 15)), "before": np.zeros((3, 15))}
    folder = run_dir / "predictions" / "test" / "probabilities"
    for case in (c for c in read_manifest(manifest) if c.split == "test"):
        p = np.load(folder / f"{case.id}.npy").astype(np.float64)
        y = read_volume(case.label, mask=True).array > 0
        inside = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else np.ones(y.shape, bool)
        p, y = p.reshape(y.shape)[inside], y[inside]
        q = np.clip(p, 1e-7, 1 - 1e-7)
        before = 1 / (1 + np.exp(-temperature * np.log(q / (1 - q))))
        counts["after"] += calibration_counts(p, y)
        counts["before"] += calibration_counts(before, y)
    return {f"test_ece_{k}": ece_from_counts(v) for k, v in counts.items()}


def temperature_bound(run_dir: Path, manifest: Path, temperature: float) -> dict[str, float]:
    """What any temperature could reach on the test images: the temperature fitted on the test voxels themselves
    (``labelwise.metrics.segmentation.fit_temperature``, the NLL) and the one of least test ECE on a grid of 400 in
    [0.5, 4], each with its test ECE: a bound for temperature scaling fitted on any validation set."""
    import torch

    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.fairness import expected_calibration_error
    from labelwise.metrics.segmentation import fit_temperature

    logits, labels = [], []
    folder = run_dir / "predictions" / "test" / "probabilities"
    for case in (c for c in read_manifest(manifest) if c.split == "test"):
        q = np.clip(np.load(folder / f"{case.id}.npy").astype(np.float64), 1e-7, 1 - 1e-7)
        y = read_volume(case.label, mask=True).array > 0
        inside = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else np.ones(y.shape, bool)
        logits.append(temperature * np.log(q / (1 - q)).reshape(y.shape)[inside])  # the logits at temperature 1
        labels.append(y[inside])
    z, y = np.concatenate(logits), np.concatenate(labels)

    def ece(t: float) -> float:
        return expected_calibration_error(1 / (1 + np.exp(-z / t)), y)

    fitted = fit_temperature([torch.from_numpy(z)[None, None]], [torch.from_numpy(y.astype(np.int64))[None]])
    grid = np.exp(np.linspace(np.log(0.5), np.log(4.0), 400))
    eces = [ece(float(t)) for t in grid]
    best = int(np.argmin(eces))
    return {"test_fitted_temperature": fitted, "test_fitted_ece": ece(fitted),
            "least_ece_temperature": float(grid[best]), "least_ece": float(eces[best])}


def calibration_scores(run_dir: Path, manifest: Path) -> dict[str, float]:
    """Test ECE (15 bins, inside the roi) of a run's network at temperature 1, at its fitted temperature, and through
    an isotonic map: the run's own (``method.isotonic: true``), else one fitted as the run would have fitted it, on
    its validation images' tempered probabilities (``Method.fit_isotonic``). The masks are the same in all three."""
    import torch

    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.inference import load_run
    from labelwise.metrics.fairness import calibration_counts, ece_from_counts
    from labelwise.metrics.segmentation import interpolate

    run = load_run(run_dir)
    own, temperature = run.method.isotonic, run.method.temperature
    run.method.isotonic = None

    def case_probability(case):  # tempered foreground probability and label inside the roi, on the image's grid
        image = torch.from_numpy(run.preprocess(run.read_raw(case.image)).array)[None]
        logits = run.logits(image)
        y = read_volume(case.label, mask=True).array > 0
        inside = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else np.ones(y.shape, bool)
        return logits[0][:, torch.from_numpy(inside)], y[inside]

    cases = read_manifest(manifest)
    if own is None:
        val = [case_probability(c) for c in cases if c.split == "val"]
        run.method.fit_isotonic([z for z, _ in val], [torch.from_numpy(y.astype(np.int64)) for _, y in val])
        own = run.method.isotonic
    counts = {k: np.zeros((3, 15)) for k in ("before", "after", "isotonic")}
    for case in (c for c in cases if c.split == "test"):
        z, y = case_probability(case)
        tempered = 1 - z.double().softmax(dim=0)[0] if z.shape[0] > 1 else torch.sigmoid(z[0].double())
        raw = 1 - (z.double() * temperature).softmax(dim=0)[0] if z.shape[0] > 1 else torch.sigmoid(z[0] * temperature)
        mapped = interpolate(tempered, *own)
        for key, p in (("before", raw), ("after", tempered), ("isotonic", mapped)):
            counts[key] += calibration_counts(p.numpy(), y)
    return {"isotonic_knots": len(own[0]), **{f"test_ece_{k}": ece_from_counts(v) for k, v in counts.items()}}


def val_manifest(manifest: Path, count: int) -> Path:
    """``manifest`` with ``count`` validation images: its own, then training images evenly spread over the sorted
    training ids."""
    import dataclasses

    from labelwise.audit.folds import write_manifest_rows
    from labelwise.data.manifest import read_manifest

    target = manifest.parent / f"val{count}.csv"
    if not target.is_file():
        cases = read_manifest(manifest)
        train = sorted(c.id for c in cases if c.split == "train")
        more = count - sum(c.split == "val" for c in cases)
        moved = {train[round(k * (len(train) - 1) / max(more - 1, 1))] for k in range(more)} if more > 0 else set()
        write_manifest_rows(target, [dataclasses.replace(c, split="val") if c.id in moved else c for c in cases])
    return target


def ensemble_scores(run_dirs: list[Path], manifest: Path, out: Path) -> dict[str, float]:
    """Dice and ECE (15 bins, inside the roi) of the runs' ensemble on the test cases (``predict_files`` with every
    run: the probabilities averaged)."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.inference import load_run, predict_files
    from labelwise.metrics.fairness import calibration_counts, ece_from_counts

    runs = [load_run(r) for r in run_dirs]
    counts, dice = np.zeros((3, 15)), []
    for case in (c for c in read_manifest(manifest) if c.split == "test"):
        (entry,) = predict_files(runs, [case.image], out, reference=case.label, roi=case.roi, progress=False)
        p = np.load(out / entry["probability_npy"]).astype(np.float64)
        y = read_volume(case.label, mask=True).array > 0
        inside = read_volume(case.roi, mask=True).array > 0
        counts += calibration_counts(p[inside], y[inside])
        dice.append(entry["dice"])
    return {"dice": float(np.mean(dice)), "test_ece": ece_from_counts(counts), "runs": len(runs)}


def fold_manifest(manifest: Path, folds: int, fold: int) -> Path:
    """``manifest`` with the training images of fold ``fold`` (every ``folds``-th in id order, from the ``fold``-th)
    left out: a fold run's training set; validation and test images unchanged."""
    from labelwise.audit.folds import write_manifest_rows
    from labelwise.data.manifest import read_manifest

    target = manifest.parent / f"fold{fold}of{folds}.csv"
    if not target.is_file():
        cases = read_manifest(manifest)
        train = sorted(c.id for c in cases if c.split == "train")
        out = {train[k] for k in range(fold, len(train), folds)}
        write_manifest_rows(target, [c for c in cases if c.id not in out])
    return target


def main(argv: list[str] | None = None) -> None:
    from labelwise.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-temperature")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=0, help="also train one run per fold (seed: the first) and score "
                        "their ensemble: a fold ensemble")
    parser.add_argument("--crossfit", type=int, default=0, help="also calibrate a copy of each seed's run with "
                        "labelwise calibrate --folds K and score it")
    parser.add_argument("--val", type=int, default=0, help="also train runs with this many validation images and "
                        "method.isotonic: true (the shipped split keeps 2)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    folder = args.out / "data"
    folder.mkdir(exist_ok=True)
    manifest = folder / "drive.csv" if (folder / "drive.csv").is_file() else drive.build_manifest(args.drive, folder)
    for seed in args.seeds:
        key = f"steps{args.steps}/seed{seed}"
        if key not in results:
            run_dir = args.out / key.replace("/", "-")
            options = [f"data.manifest={manifest}", f"seed={seed}", f"trainer.max_steps={args.steps}",
                       f"trainer.checkpoint_every={args.steps}", "method.temperature=fit"]
            scores = drive.train_and_score(load_config(REPO / "configs" / "drive-unet-mss.yaml", options), run_dir)
            fitted = json.loads((run_dir / "summary.json").read_text())["calibration"]
            results[key] = {**scores, **fitted, **test_ece(run_dir, manifest, fitted["temperature"])}
            results_path.write_text(json.dumps(results, indent=1) + "\n")
        if "least_ece" not in results[key]:  # the bound: temperatures chosen on the test images themselves
            run_dir = args.out / key.replace("/", "-")
            results[key].update(temperature_bound(run_dir, manifest, results[key]["temperature"]))
            results_path.write_text(json.dumps(results, indent=1) + "\n")
        if "test_ece_isotonic" not in results[key]:  # a map fitted on the same 2 validation images
            results[key].update(calibration_scores(args.out / key.replace("/", "-"), manifest))
            results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(results[key]), flush=True)
    rows = [results[f"steps{args.steps}/seed{s}"] for s in args.seeds]

    def fmt(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    print("| seeds | temperature | val ECE before / after | test ECE before / after | test Dice (the same at T=1) |")
    print("|---|---|---|---|---|")
    print(f"| {len(rows)} | {fmt('temperature')} | {fmt('val_ece_before')} / {fmt('val_ece_after')} | "
          f"{fmt('test_ece_before')} / {fmt('test_ece_after')} | {fmt('dice')} |")
    print("\n| temperature chosen on | temperature | test ECE |\n|---|---|---|")
    print(f"| none (T = 1) | 1 | {fmt('test_ece_before')} |")
    print(f"| the 2 validation images (NLL; what the run does) | {fmt('temperature')} | {fmt('test_ece_after')} |")
    print(f"| the test images (NLL) | {fmt('test_fitted_temperature')} | {fmt('test_fitted_ece')} |")
    print(f"| the test images (least ECE of 400 in [0.5, 4]) | {fmt('least_ece_temperature')} | {fmt('least_ece')} |")
    print(f"| the 2 validation images, then an isotonic map fitted there | {fmt('temperature')} | "
          f"{fmt('test_ece_isotonic')} |")
    if args.val:
        shipped, rows = rows, []
        for seed in args.seeds:
            key = f"steps{args.steps}/val{args.val}/seed{seed}"
            if key not in results:
                run_dir = args.out / key.replace("/", "-")
                options = [f"data.manifest={val_manifest(manifest, args.val)}", f"seed={seed}",
                           f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}",
                           "method.temperature=fit", "method.isotonic=true"]
                scores = drive.train_and_score(load_config(REPO / "configs" / "drive-unet-mss.yaml", options), run_dir)
                fitted = json.loads((run_dir / "summary.json").read_text())["calibration"]
                results[key] = {**scores, **fitted, **calibration_scores(run_dir, manifest)}
                results_path.write_text(json.dumps(results, indent=1) + "\n")
            print(json.dumps(results[key]), flush=True)
            rows.append(results[key])
        print("\n| validation images | runs | Dice | test ECE at T = 1 | temperature | + isotonic map |")
        print("|---|---|---|---|---|---|")
        for count, group in ((2, shipped), (args.val, rows)):
            rows = group
            print(f"| {count} | {len(rows)} | {fmt('dice')} | {fmt('test_ece_before')} | {fmt('test_ece_after')} | "
                  f"{fmt('test_ece_isotonic')} |")
        rows = shipped
    if args.crossfit:
        import shutil
        import subprocess

        crossfit = []
        for seed in args.seeds:
            key = f"steps{args.steps}/crossfit{args.crossfit}/seed{seed}"
            if key not in results:
                source = args.out / f"steps{args.steps}-seed{seed}"
                copy = args.out / key.replace("/", "-")
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(source, copy, ignore=shutil.ignore_patterns("calibrate"))
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "labelwise", "calibrate", str(copy), "--folds",
                                str(args.crossfit), "--out", str(copy / "calibrate")], check=True, cwd=REPO)
                minutes = (time.perf_counter() - started) / 60
                record = json.loads((copy / "calibrate" / "calibration.json").read_text())
                results[key] = {"dice": results[f"steps{args.steps}/seed{seed}"]["dice"],
                                "calibrate_minutes": minutes, **calibration_scores(copy, manifest),
                                **{k: record[k] for k in ("knots", "ece_before", "ece_after_in_sample")}}
                results_path.write_text(json.dumps(results, indent=1) + "\n")
            print(json.dumps(results[key]), flush=True)
            crossfit.append(results[key])
        shipped, rows = rows, crossfit
        print(f"\n| calibration ({len(rows)} seeds) | test ECE | Dice |\n|---|---|---|")
        print(f"| none (T = 1) | {fmt('test_ece_before')} | {fmt('dice')} |")
        print(f"| temperature (2 validation images) | {fmt('test_ece_after')} | {fmt('dice')} |")
        print(f"| temperature, then an isotonic map cross-fitted on {args.crossfit} folds | "
              f"{fmt('test_ece_isotonic')} | {fmt('dice')} |")
        print(f"| labelwise calibrate's wall minutes | {fmt('calibrate_minutes')} | |")
        rows = shipped
    if len(args.seeds) > 1:
        key = f"steps{args.steps}/ensemble-" + "-".join(map(str, args.seeds))
        if key not in results:
            dirs = [args.out / f"steps{args.steps}-seed{s}" for s in args.seeds]
            results[key] = ensemble_scores(dirs, manifest, args.out / key.replace("/", "-"))
            results_path.write_text(json.dumps(results, indent=1) + "\n")
        ens = results[key]
        print(f"\n| {len(rows)} runs | Dice | test ECE (temperature fitted) |\n|---|---|---|")
        print(f"| each alone | {fmt('dice')} | {fmt('test_ece_after')} |")
        print(f"| their ensemble | {ens['dice']:.4f} | {ens['test_ece']:.4f} |")
    if args.folds:
        seed, dirs, fold_rows = args.seeds[0], [], []
        for fold in range(args.folds):
            key = f"steps{args.steps}/fold{fold}of{args.folds}/seed{seed}"
            run_dir = args.out / key.replace("/", "-")
            dirs.append(run_dir)
            if key not in results:
                options = [f"data.manifest={fold_manifest(manifest, args.folds, fold)}", f"seed={seed}",
                           f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}",
                           "method.temperature=fit"]
                scores = drive.train_and_score(load_config(REPO / "configs" / "drive-unet-mss.yaml", options), run_dir)
                fitted = json.loads((run_dir / "summary.json").read_text())["calibration"]
                results[key] = {**scores, **fitted, **test_ece(run_dir, manifest, fitted["temperature"])}
                results_path.write_text(json.dumps(results, indent=1) + "\n")
            fold_rows.append(results[key])
        key = f"steps{args.steps}/fold-ensemble-{args.folds}/seed{seed}"
        if key not in results:
            results[key] = ensemble_scores(dirs, manifest, args.out / key.replace("/", "-"))
            results_path.write_text(json.dumps(results, indent=1) + "\n")
        ens, rows = results[key], fold_rows
        print(f"\n| {args.folds}-fold runs (seed {seed}) | Dice | test ECE (temperature fitted) |\n|---|---|---|")
        print(f"| each fold run alone | {fmt('dice')} | {fmt('test_ece_after')} |")
        print(f"| their ensemble | {ens['dice']:.4f} | {ens['test_ece']:.4f} |")


if __name__ == "__main__":
    main()
