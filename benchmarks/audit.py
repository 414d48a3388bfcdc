"""The label audit (issue 29) on DRIVE's training masks, side by side with cleanlab on the same probabilities.

For each noise kind (``labelwise data degrade``, the masks of benchmarks/noise_matrix.py) and seed:

1. a run of configs/drive-noisy.yaml on the degraded manifest (the noise matrix's own run when it is there);
2. ``labelwise audit RUN --input MANIFEST --split train --folds K --fix FIXED`` through the CLI, as a user runs it:
   K cross-fitted runs give every training image out-of-sample probabilities;
3. on those probabilities (``OUT/.../audit/probabilities``) and the clean masks (the degraded manifest's ``truth``):
   - finding the corrupted pixels (label != clean mask, inside the field of view): average precision and AUROC of
     labelwise's suspicion (the posterior probability that the label is wrong under the noise estimated from the
     confident joint, ``labelwise.metrics.label_quality``; the audit's ``suspicion/`` maps) and of cleanlab's
     pixel score (``cleanlab.segmentation.rank.get_label_quality_scores``: one minus the self-confidence);
   - the Spearman correlation of the case scores (labelwise: ``cases.csv`` quality; cleanlab: its image score)
     with each case's true label Dice;
   - the precision and recall of the flagged pixels (labelwise's suspects; ``cleanlab.segmentation.filter.
     find_label_issues``);
   - time and peak memory (tracemalloc) of scoring and flagging the same arrays, the two sides interleaved,
     medians of ``--repeats``; cleanlab gets the whole images (it takes no region of interest);
4. a run on the ``--fix`` manifest, scored on the test images against the clean masks, beside the run on the
   degraded masks and the run on the clean ones: the share of the Dice that the noise cost and the fix recovered.

``--digits``: the class-label side, on scikit-learn's 1797 handwritten digits (16 x 16 PNGs and a table, split
70/10/20 stratified per seed, validation and test labels clean). 20% of the training labels are corrupted, either
``symmetric`` (a uniformly drawn other class) or ``pairflip`` (class-dependent: a digit c becomes c + 1 mod 10, the
pair flipping of Han et al.'s co-teaching). Per noise and seed: a supervised run on the noisy table;
``labelwise audit RUN --input TABLE --split train --folds K --fix FIXED``; on the audit's out-of-sample
probabilities, the precision and recall of the flagged samples and the average precision of the ranking
(labelwise's ``samples.csv`` against ``cleanlab.filter.find_label_issues`` and
``cleanlab.rank.get_label_quality_scores``), and their time, interleaved; then runs on the fixed table and on the
clean one: the share of the test accuracy the noise cost that the fix recovered.

cleanlab is a benchmark-only dependency: ``.venv/bin/pip install -c constraints.txt cleanlab``. Results merge into
``OUT/results.json`` (keyed kind/seed; a finished key is skipped)::

    python benchmarks/audit.py [--kinds erode thin ...] [--seeds 0 1 2] [--steps 1000] [--folds 2]
        [--out runs/bench-audit] [--limit-train N]
    python benchmarks/audit.py --digits [--seeds 0 1 2] [--digit-steps 300] [--digit-folds 5]
        [--fix-action relabel|unlabel]   (unlabel: flagged training labels left out; keyed .../unlabel)
    python benchmarks/audit.py --unseen [--kinds ...] [--seeds 1 2]

``--unseen``: a run of configs/drive-noisy.yaml trained on masks of one kind (the noise matrix's in
``runs/bench-noise-matrix`` where it is there, else trained once into OUT, where the default mode reuses it) audits
DRIVE's 20 test images whose masks were degraded with the same kind: out of sample without folds, so every kind is
measured with one training; the fix's worth is not (it needs the training masks).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive
import noise_matrix

REPO = drive.REPO
CONFIG = REPO / "configs" / "drive-noisy.yaml"


def labelwise_cli(*command: str) -> None:
    subprocess.run([sys.executable, "-m", "labelwise", *command], check=True, cwd=REPO)


def run_for(kind: str, manifest: Path, seed: int, args, tag: str) -> tuple[Path, dict]:
    """A run of configs/drive-noisy.yaml on ``manifest`` (the noise matrix's when it exists) and its test scores."""
    from labelwise.config import load_config

    matrix = REPO / "runs" / "bench-noise-matrix"
    key = f"drive/{kind}/noisy/steps{args.steps}/seed{seed}"
    known = json.loads((matrix / "results.json").read_text()) if (matrix / "results.json").is_file() else {}
    folder = matrix / f"drive-{kind}-noisy-steps{args.steps}-seed{seed}"
    if tag in ("degraded", "clean") and key in known and (folder / "summary.json").is_file() and not (
            args.limit_train or args.limit_test):
        return folder, known[key]
    folder = args.out / f"{kind}-seed{seed}-steps{args.steps}" / tag
    options = [f"data.manifest={manifest}", f"seed={seed}", f"trainer.max_steps={args.steps}",
               f"trainer.checkpoint_every={args.steps}"]
    scores_file = folder / "scores.json"
    if scores_file.is_file():
        return folder, json.loads(scores_file.read_text())
    scores = drive.train_and_score(load_config(CONFIG, options), folder)
    scores_file.write_text(json.dumps(scores) + "\n")
    return folder, scores


def limit_train(manifest: Path, n: int | None) -> Path:
    """A smoke test: the manifest with only its first ``n`` training cases."""
    if not n:
        return manifest
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept, seen = [], 0
    for row in rows:
        if row["split"] == "train":
            seen += 1
            if seen > n:
                continue
        kept.append({k: (str((manifest.parent / v).resolve()) if k in ("image", "label", "truth", "roi") and v
                         else v) for k, v in row.items()})
    target = manifest.parent / f"manifest-train{n}.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return target


def scored(cases):
    """labelwise's audit of the ``(probs, label, truth, roi)`` cases: its thresholds, noise estimate and audits."""
    from labelwise.metrics.label_quality import mask_noise, mask_suspects, mask_thresholds

    thresholds = mask_thresholds((p, y, roi) for p, y, _, roi in cases)
    noise = mask_noise(((p, y, roi) for p, y, _, roi in cases), thresholds)
    return thresholds, noise, [mask_suspects(p, y, thresholds, roi, noise) for p, y, _, roi in cases]


def flag_scores(flagged: np.ndarray, corrupted: np.ndarray) -> dict:
    """Precision and recall of the flagged labels (pixels or samples) against the truly corrupted ones."""
    hits = int((flagged & corrupted).sum())
    return {"precision": hits / max(int(flagged.sum()), 1), "recall": hits / max(int(corrupted.sum()), 1),
            "flagged": int(flagged.sum())}


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median seconds and the largest traced peak (MiB) of ``fn()`` over ``repeats`` calls, and its last result."""
    seconds, peaks, result = [], [], None
    for _ in range(repeats):
        tracemalloc.start()
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return statistics.median(seconds), max(peaks), result


def compare(audit_dir: Path, manifest: Path, repeats: int, split: str = "train") -> dict:
    """Labelwise against cleanlab on the audit's saved out-of-sample probabilities of the ``split`` cases."""
    from cleanlab.segmentation.filter import find_label_issues
    from cleanlab.segmentation.rank import get_label_quality_scores
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, roc_auc_score

    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.label_quality import recentred

    # the threshold each case's probabilities are recentred on: that of the run (or fold run) they came from
    decisions = json.loads((audit_dir / "audit.json").read_text()).get("decision_thresholds", {})
    with (audit_dir / "cases.csv").open(newline="") as handle:
        source = {row["id"]: row["probabilities"] for row in csv.DictReader(handle)}
    cases, raw, ids = [], [], []
    for case in read_manifest(manifest):
        saved = audit_dir / "probabilities" / f"{case.id}.npy"
        if case.split != split or not saved.is_file():
            continue
        raw.append(np.load(saved).astype(np.float32))
        probs = recentred(raw[-1], decisions.get(source[case.id]))
        label = read_volume(case.label, mask=True).array
        truth = read_volume(case.truth, mask=True).array
        roi = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else np.ones(label.shape, bool)
        cases.append((probs, label, truth, roi))
        ids.append(case.id)
    labels = np.stack([c[1] for c in cases]).astype(np.int64)
    pred_probs = np.stack(raw)  # cleanlab takes the run's probabilities as they are
    quiet = {"verbose": False}

    def ours():  # the recentring is part of labelwise's audit: timed with it
        return scored([(recentred(r, decisions.get(source[i])), y, t, roi) for r, i, (_, y, t, roi) in
                       zip(raw, ids, cases)])

    def theirs():
        image_scores, pixel_scores = get_label_quality_scores(labels, pred_probs, **quiet)
        issues = find_label_issues(labels, pred_probs, **quiet)
        return image_scores, pixel_scores, issues

    runs = {"labelwise": [], "cleanlab": []}
    for _ in range(repeats):  # interleaved
        runs["labelwise"].append(timed(ours, 1))
        runs["cleanlab"].append(timed(theirs, 1))
    (_, noise, audits), (image_scores, pixel_scores, issues) = runs["labelwise"][-1][2], runs["cleanlab"][-1][2]
    corrupted = np.concatenate([((y != t) & roi)[roi] for _, y, t, roi in cases])
    ours_score = np.concatenate([a.suspicion[c[3]] for a, c in zip(audits, cases)])
    theirs_score = np.concatenate([(1 - pixel_scores[i])[c[3]] for i, c in enumerate(cases)])
    flagged_ours = np.concatenate([(a.suspects > 0)[c[3]] for a, c in zip(audits, cases)])
    flagged_theirs = np.concatenate([issues[i][c[3]] for i, c in enumerate(cases)])
    true_dice = [noise_matrix.mask_dice(y, t, roi) for _, y, t, roi in cases]
    # cleanlab's self-confidence on the recentred probabilities: what its ranking would give with labelwise's
    # recentring, to tell the recentring's share of the gain from the suspicion's
    recentred_self = np.concatenate([(1 - np.take_along_axis(p, y[None].astype(np.int64), 0)[0])[roi]
                                     for p, y, _, roi in cases])

    def median(side, i):
        return statistics.median(r[i] for r in runs[side])

    return {
        "cases": len(cases), "corrupted_pixels": int(corrupted.sum()), "pixels": int(corrupted.size),
        "noise": noise.tolist(), "decision_thresholds": decisions,
        "cleanlab_recentred_ap": float(average_precision_score(corrupted, recentred_self)),
        "labelwise": {"ap": float(average_precision_score(corrupted, ours_score)),
                      "auroc": float(roc_auc_score(corrupted, ours_score)),
                      "spearman": float(spearmanr([a.quality for a in audits], true_dice)[0]),
                      **flag_scores(flagged_ours, corrupted),
                      "seconds": median("labelwise", 0), "peak_mib": median("labelwise", 1)},
        "cleanlab": {"ap": float(average_precision_score(corrupted, theirs_score)),
                     "auroc": float(roc_auc_score(corrupted, theirs_score)),
                     "spearman": float(spearmanr(image_scores, true_dice)[0]),
                     **flag_scores(flagged_theirs, corrupted),
                     "seconds": median("cleanlab", 0), "peak_mib": median("cleanlab", 1)},
    }


# --- masks: the noise matrix's runs on degraded test masks ------------------------------------------------------------


def degraded_test_manifest(kind: str, clean: Path, home: Path) -> Path:
    """The DRIVE test cases with their masks degraded by ``labelwise data degrade --kind`` (DRIVE's default
    strengths), the clean mask in ``truth``: degrade works on training masks, so the test cases go in as training
    cases and come out as test cases again."""
    target = home / f"test-{kind}" / "manifest.csv"
    if target.is_file():
        return target
    with clean.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    source = home / "test-as-train.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: (str((clean.parent / v).resolve()) if k in ("image", "label", "truth", "roi") and v
                               else v) for k, v in r.items()} | {"split": "train"} for r in rows])
    labelwise_cli("data", "degrade", "--manifest", str(source), "--kind", kind, "--out", str(target.parent))
    with target.open(newline="") as handle:
        degraded = list(csv.DictReader(handle))
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(degraded[0]))
        writer.writeheader()
        writer.writerows([r | {"split": "test"} for r in degraded])
    return target


def unseen_benchmark(args) -> None:
    """Per kind and seed: a run trained on masks of that kind (the noise matrix's, or :func:`run_for`'s) audits the
    test images, whose masks carry the same kind of noise (out of sample without folds: the run never saw them);
    labelwise against cleanlab on the audit's probabilities. No retraining: the fix's worth needs the training masks
    (the default mode, which reuses the run)."""
    matrix_args = noise_matrix.parse_args(["--out", str(REPO / "runs" / "bench-noise-matrix"), "--drive",
                                           str(args.drive)])
    clean = noise_matrix.clean_manifest("drive", matrix_args)
    home = args.out / "unseen"
    home.mkdir(parents=True, exist_ok=True)
    results_path = home / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for seed in args.seeds:
        for kind in args.kinds:
            key = f"{kind}/seed{seed}/steps{args.steps}"
            if key in results:
                continue
            # the noise matrix's run where it is here, else one trained now (kept where the default mode finds it)
            run, _ = run_for(kind, noise_matrix.kind_manifest(kind, "drive", clean, matrix_args), seed, args,
                             "degraded")
            manifest = degraded_test_manifest(kind, clean, home)
            audit_dir = home / key.replace("/", "-")
            started = time.perf_counter()
            labelwise_cli("audit", str(run), "--input", str(manifest), "--split", "test", "--out", str(audit_dir))
            row = compare(audit_dir, manifest, args.repeats, split="test")
            row["audit_minutes"] = (time.perf_counter() - started) / 60
            results[key] = row
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            lw, cl = row["labelwise"], row["cleanlab"]
            print(f"== unseen {key}: AP {lw['ap']:.3f} vs cleanlab {cl['ap']:.3f}; AUROC {lw['auroc']:.3f} vs "
                  f"{cl['auroc']:.3f}; Spearman {lw['spearman']:.3f} vs {cl['spearman']:.3f}; flags P/R "
                  f"{lw['precision']:.3f}/{lw['recall']:.3f} vs {cl['precision']:.3f}/{cl['recall']:.3f}; "
                  f"{lw['seconds']:.2f} s vs {cl['seconds']:.2f} s ({cl['seconds'] / lw['seconds']:.1f} x); peak "
                  f"{lw['peak_mib']:.0f} vs {cl['peak_mib']:.0f} MiB", flush=True)
    masks_table_md(results, args.kinds, args.steps)


# --- class labels: digits ---------------------------------------------------------------------------------------

DIGIT_NOISE = ("symmetric", "pairflip")


def digit_pictures(folder: Path, size: int = 16) -> np.ndarray:
    """scikit-learn's digits as ``folder/images/d<NNNN>.png`` (8-bit grey, upsampled bilinearly, written once);
    returns their classes."""
    import torch
    from sklearn.datasets import load_digits

    from labelwise.data.volumes import write_volume

    digits = load_digits()
    images = folder / "images"
    if not (images / f"d{len(digits.target) - 1:04d}.png").is_file():
        pictures = torch.nn.functional.interpolate(
            torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None], size=(size, size), mode="bilinear",
            align_corners=False).numpy()[:, 0]
        for i, picture in enumerate(pictures):
            write_volume(images / f"d{i:04d}.png", np.clip(picture, 0, 1))
    return digits.target.astype(np.int64)


def noisy_digits(truth: np.ndarray, train: np.ndarray, kind: str, rate: float, seed: int) -> np.ndarray:
    """The labels with ``rate`` of the training samples corrupted: ``symmetric`` (a uniformly drawn other class) or
    ``pairflip`` (``rate`` of each class's training samples take the next class)."""
    rng = np.random.default_rng(1000 + seed)
    labels = truth.copy()
    if kind == "symmetric":
        chosen = rng.choice(train, round(rate * len(train)), replace=False)
        labels[chosen] = (truth[chosen] + rng.integers(1, 10, len(chosen))) % 10
    else:
        for c in range(10):
            members = train[truth[train] == c]
            chosen = rng.choice(members, round(rate * len(members)), replace=False)
            labels[chosen] = (c + 1) % 10
    return labels


def digits_table(folder: Path, name: str, split: np.ndarray, labels: np.ndarray) -> Path:
    rows = ["id,image,split,label"] + [f"d{i:04d},images/d{i:04d}.png,{s},{y}" for i, (s, y) in
                                        enumerate(zip(split, labels))]
    path = folder / f"{name}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def digits_run(table: Path, seed: int, steps: int, run_dir: Path) -> float:
    """A supervised run on ``table`` (configs as benchmarks/semi_supervised.py's digits); its test accuracy."""
    import shutil

    from labelwise.config import load_config
    from labelwise.training import train

    evaluation_file = run_dir / "predictions" / "test_evaluation.json"
    if not evaluation_file.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        config = load_config({
            "name": "digits", "seed": seed, "method": "supervised",
            "data": {"manifest": str(table), "task": "classification", "batch_size": 32, "eval_batch_size": 256},
            "model": {"name": "resnet10"}, "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
            "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 50}})
        result = train(config, run_dir)
        if result.status != "completed":
            raise RuntimeError(f"{run_dir}: {result.status}: {result.message}")
    evaluation = json.loads(evaluation_file.read_text())
    return float(evaluation.get("accuracy", evaluation.get("metrics", {}).get("accuracy")))


def compare_digits(audit_dir: Path, table: Path, truth: dict[str, int], repeats: int) -> dict:
    """labelwise's flags and ranking against cleanlab's on the audit's out-of-sample probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.metrics import average_precision_score

    from labelwise.data.table import read_table
    from labelwise.metrics.label_quality import class_issues

    data = read_table(table, ["label"])
    index = {i: n for n, i in enumerate(data.ids)}
    with np.load(audit_dir / "probabilities.npz", allow_pickle=False) as saved:
        ids = [str(i) for i in saved["id"] if data.splits[index[str(i)]] == "train"]
        probs = {str(i): p for i, p in zip(saved["id"], saved["probability"])}
    pred_probs = np.stack([probs[i] for i in ids]).astype(np.float64)
    labels = np.array([data.target[index[i]] for i in ids], dtype=np.int64)
    names = [int(n) for n in data.class_names]
    corrupted = np.array([names[labels[k]] != truth[i] for k, i in enumerate(ids)])
    samples = {r["id"]: r for r in csv.DictReader((audit_dir / "samples.csv").open())}
    ours_flag = np.array([samples[i]["issue"] == "1" for i in ids])
    ours_score = np.array([-float(samples[i]["quality"]) for i in ids])

    runs = {"labelwise": [], "cleanlab": []}
    for _ in range(repeats):  # interleaved, on the same arrays
        runs["labelwise"].append(timed(lambda: class_issues(pred_probs, labels), 1))
        runs["cleanlab"].append(timed(lambda: (find_label_issues(labels, pred_probs),
                                               get_label_quality_scores(labels, pred_probs)), 1))
    theirs_flag, theirs_quality = runs["cleanlab"][-1][2]
    same_probs = class_issues(pred_probs, labels).issue.astype(bool)

    return {
        "samples": len(ids), "corrupted": int(corrupted.sum()),
        "labelwise": {"ap": float(average_precision_score(corrupted, ours_score)), **flag_scores(ours_flag, corrupted),
                      "seconds": statistics.median(r[0] for r in runs["labelwise"]),
                      "same_as_samples_csv": bool((same_probs == ours_flag).all())},
        "cleanlab": {"ap": float(average_precision_score(corrupted, -theirs_quality)),
                     **flag_scores(theirs_flag, corrupted),
                     "seconds": statistics.median(r[0] for r in runs["cleanlab"])},
    }


def digits_benchmark(args) -> None:
    from sklearn.model_selection import train_test_split

    home = args.out / "digits"
    home.mkdir(parents=True, exist_ok=True)
    results_path = home / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    truth = digit_pictures(home)
    rows = np.arange(len(truth))
    for seed in args.seeds:
        train_rows, rest = train_test_split(rows, test_size=0.3, stratify=truth, random_state=seed)
        val_rows, test_rows = train_test_split(rest, test_size=2 / 3, stratify=truth[rest], random_state=seed)
        split = np.empty(len(truth), dtype="<U5")
        split[train_rows], split[val_rows], split[test_rows] = "train", "val", "test"
        clean_accuracy = digits_run(digits_table(home, f"clean-seed{seed}", split, truth), seed, args.digit_steps,
                                    home / f"clean-seed{seed}-steps{args.digit_steps}")
        for kind in DIGIT_NOISE:
            key = f"{kind}/seed{seed}/steps{args.digit_steps}/folds{args.digit_folds}"
            key += "/unlabel" if args.fix_action == "unlabel" else ""
            if key in results:
                continue
            labels = noisy_digits(truth, train_rows, kind, 0.2, seed)
            table = digits_table(home, f"{kind}-seed{seed}", split, labels)
            folder = home / key.removesuffix("/unlabel").replace("/", "-")  # both actions: one audit
            noisy_accuracy = digits_run(table, seed, args.digit_steps, folder / "noisy")
            audit_dir, fixed = folder / "audit", folder / f"fixed-{args.fix_action}"
            started = time.perf_counter()
            labelwise_cli("audit", str(folder / "noisy"), "--input", str(table), "--split", "train", "--folds",
                          str(args.digit_folds), "--out", str(audit_dir), "--fix", str(fixed), "--fix-action",
                          args.fix_action)
            audit_minutes = (time.perf_counter() - started) / 60
            row = compare_digits(audit_dir, table, {f"d{i:04d}": int(t) for i, t in enumerate(truth)},
                                 args.repeats)
            fixed_accuracy = digits_run(fixed / "table.csv", seed, args.digit_steps,
                                        folder / f"retrained-{args.fix_action}")
            cost = clean_accuracy - noisy_accuracy
            row["accuracy"] = {"clean": clean_accuracy, "noisy": noisy_accuracy, "fixed": fixed_accuracy,
                               "recovered": (fixed_accuracy - noisy_accuracy) / cost if cost > 0 else None}
            row["audit_minutes"] = audit_minutes
            results[key] = row
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            lw, cl = row["labelwise"], row["cleanlab"]
            print(f"== digits {key}: flags P/R {lw['precision']:.3f}/{lw['recall']:.3f} vs cleanlab "
                  f"{cl['precision']:.3f}/{cl['recall']:.3f}; AP {lw['ap']:.3f} vs {cl['ap']:.3f}; "
                  f"{lw['seconds'] * 1e3:.1f} ms vs {cl['seconds'] * 1e3:.1f} ms; accuracy noisy {noisy_accuracy:.3f}"
                  f" -> fixed {fixed_accuracy:.3f} (clean {clean_accuracy:.3f})", flush=True)
    digits_table_md(results, args)


def mean_std(values, digits=3) -> str:
    """``mean ± sample std`` of the values that are not None (one value alone; ``-`` for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def masks_table_md(results: dict, kinds: list[str], steps: int) -> None:
    """Mean ± std over the seeds found, one row per noise kind: labelwise / cleanlab on the same probabilities,
    and (the default mode) the Dice of the runs on degraded, fixed and clean masks."""
    print("\n| kind | AP labelwise / cleanlab | AP cleanlab, recentred | AUROC labelwise / cleanlab | "
          "Spearman labelwise / cleanlab | flagged P / R, labelwise | flagged P / R, cleanlab | "
          "s labelwise / cleanlab (x) | peak MiB labelwise / cleanlab | Dice degraded / fixed / clean | recovered | "
          "seeds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        rows = [r for k, r in results.items() if k.startswith(f"{kind}/") and f"/steps{steps}" in k]
        if not rows:
            continue
        lw, cl = [r["labelwise"] for r in rows], [r["cleanlab"] for r in rows]
        dice = [r["dice"] for r in rows if "dice" in r]

        def pair(key, digits=3, rows_a=lw, rows_b=cl):
            return f"{mean_std([x[key] for x in rows_a], digits)} / {mean_std([x[key] for x in rows_b], digits)}"

        ratio = mean_std([b["seconds"] / a["seconds"] for a, b in zip(lw, cl)], 1)
        recentred_ap = mean_std([r.get("cleanlab_recentred_ap") for r in rows])
        print(f"| {kind} | {pair('ap')} | {recentred_ap} | {pair('auroc')} | {pair('spearman')} | "
              f"{mean_std([x['precision'] for x in lw])} / {mean_std([x['recall'] for x in lw])} | "
              f"{mean_std([x['precision'] for x in cl])} / {mean_std([x['recall'] for x in cl])} | "
              f"{pair('seconds', 2)} ({ratio}) | {pair('peak_mib', 0)} | "
              + (" / ".join(mean_std([d[k] for d in dice]) for k in ("degraded", "fixed", "clean")) if dice else "-")
              + f" | {mean_std([d['recovered'] for d in dice], 2) if dice else '-'} | {len(rows)} |")


def digits_table_md(results: dict, args) -> None:
    """Mean ± std over the seeds found, one row per noise kind and --fix-action."""
    print("\n| noise (20% of training labels) | --fix-action | flagged P / R, labelwise | flagged P / R, cleanlab | "
          "AP labelwise / cleanlab | ms labelwise / cleanlab | accuracy clean / noisy / fixed | recovered | seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, action in [(k, a) for k in DIGIT_NOISE for a in ("relabel", "unlabel")]:
        ending = f"/steps{args.digit_steps}/folds{args.digit_folds}" + ("/unlabel" if action == "unlabel" else "")
        rows = [r for k, r in results.items() if k.startswith(f"{kind}/") and k.endswith(ending)]
        if not rows:
            continue
        lw, cl, acc = [r["labelwise"] for r in rows], [r["cleanlab"] for r in rows], [r["accuracy"] for r in rows]
        print(f"| {kind} | {action} | {mean_std([x['precision'] for x in lw])} / "
              f"{mean_std([x['recall'] for x in lw])} | {mean_std([x['precision'] for x in cl])} / "
              f"{mean_std([x['recall'] for x in cl])} | {mean_std([x['ap'] for x in lw])} / "
              f"{mean_std([x['ap'] for x in cl])} | {mean_std([x['seconds'] * 1e3 for x in lw], 2)} / "
              f"{mean_std([x['seconds'] * 1e3 for x in cl], 2)} | {mean_std([a['clean'] for a in acc])} / "
              f"{mean_std([a['noisy'] for a in acc])} / {mean_std([a['fixed'] for a in acc])} | "
              f"{mean_std([a['recovered'] for a in acc], 2)} | {len(rows)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=[k for k in noise_matrix.KINDS if k != "clean"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=None, help="smoke test: only the first N training cases")
    parser.add_argument("--limit-test", type=int, default=None, help="smoke test: only the first N test cases")
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-audit")
    parser.add_argument("--digits", action="store_true", help="the class-label side: scikit-learn's digits")
    parser.add_argument("--unseen", action="store_true", help="masks: the noise matrix's runs audit degraded test "
                        "masks (no folds, no retraining)")
    parser.add_argument("--digit-steps", type=int, default=300)
    parser.add_argument("--digit-folds", type=int, default=5)
    parser.add_argument("--fix-action", choices=["relabel", "unlabel"], default="relabel",
                        help="digits: what --fix does with a flagged label (the audit itself is shared)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.digits:
        digits_benchmark(args)
        return
    if args.unseen:
        unseen_benchmark(args)
        return
    matrix_args = noise_matrix.parse_args(["--out", str(REPO / "runs" / "bench-noise-matrix"), "--drive",
                                           str(args.drive)] + (["--limit-test", str(args.limit_test)]
                                                               if args.limit_test else []))
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    clean = noise_matrix.clean_manifest("drive", matrix_args)
    for seed in args.seeds:
        for kind in args.kinds:
            key = f"{kind}/seed{seed}/steps{args.steps}" + (f"/train{args.limit_train}" if args.limit_train else "")
            key += f"/test{args.limit_test}" if args.limit_test else ""
            if key in results:
                continue
            manifest = limit_train(noise_matrix.kind_manifest(kind, "drive", clean, matrix_args), args.limit_train)
            home = args.out / f"{kind}-seed{seed}-steps{args.steps}"
            run, degraded = run_for(kind, manifest, seed, args, "degraded")
            audit_dir, fixed = home / "audit", home / "fixed-masks"  # not "fixed": run_for's run folder
            labelwise_cli("audit", str(run), "--input", str(manifest), "--split", "train", "--folds",
                          str(args.folds), "--out", str(audit_dir), "--fix", str(fixed))
            row = compare(audit_dir, manifest, args.repeats)
            _, after = run_for(kind, fixed / "manifest.csv", seed, args, "fixed")
            _, cleaned = run_for("clean", limit_train(clean, args.limit_train), seed, args, "clean")
            cost = cleaned["dice"] - degraded["dice"]
            row["dice"] = {"clean": cleaned["dice"], "degraded": degraded["dice"], "fixed": after["dice"],
                           "recovered": (after["dice"] - degraded["dice"]) / cost if cost > 0 else None}
            results[key] = row
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            lw, cl = row["labelwise"], row["cleanlab"]
            print(f"== {key}: AP {lw['ap']:.3f} vs cleanlab {cl['ap']:.3f}; AUROC {lw['auroc']:.3f} vs "
                  f"{cl['auroc']:.3f}; Spearman {lw['spearman']:.3f} vs {cl['spearman']:.3f}; "
                  f"{lw['seconds']:.2f} s vs {cl['seconds']:.2f} s ({cl['seconds'] / lw['seconds']:.1f} x); "
                  f"Dice degraded {degraded['dice']:.3f} -> fixed {after['dice']:.3f} (clean {cleaned['dice']:.3f})",
                  flush=True)
    masks_table_md(results, args.kinds, args.steps)


if __name__ == "__main__":
    main()
