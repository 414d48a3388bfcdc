"""The label audit (issue 29) on DRIVE's training masks, side by side with cleanlab on the same probabilities.

For each noise kind (``labelwise data degrade``, the masks of benchmarks/noise_matrix.py) and seed:

1. a run of configs/drive-noisy.yaml on the degraded manifest (the noise matrix's own run when it is there);
2. ``labelwise audit RUN --input MANIFEST --split train --folds K --fix FIXED`` through the CLI, as a user runs it:
   K cross-fitted runs give every training image out-of-sample probabilities;
3. on those probabilities (``OUT/.../audit/probabilities``) and the clean masks (the degraded manifest's ``truth``):
   - finding the corrupted pixels (label != clean mask, inside the field of view): average precision and AUROC of
     labelwise's pixel score (the other class's probability over its confident-learning threshold, minus the given
     class's over its own) and of cleanlab's (``cleanlab.segmentation.rank.get_label_quality_scores``: one minus
     the self-confidence);
   - the Spearman correlation of the case scores (labelwise: ``cases.csv`` quality; cleanlab: its image score)
     with each case's true label Dice;
   - the precision and recall of the flagged pixels (labelwise's suspects; ``cleanlab.segmentation.filter.
     find_label_issues``);
   - time and peak memory (tracemalloc) of scoring and flagging the same arrays, the two sides interleaved,
     medians of ``--repeats``; cleanlab gets the whole images (it takes no region of interest);
4. a run on the ``--fix`` manifest, scored on the test images against the clean masks, beside the run on the
   degraded masks and the run on the clean ones: the share of the Dice that the noise cost and the fix recovered.

cleanlab is a benchmark-only dependency: ``.venv/bin/pip install -c constraints.txt cleanlab``. Results merge into
``OUT/results.json`` (keyed kind/seed; a finished key is skipped)::

    python benchmarks/audit.py [--kinds erode thin ...] [--seeds 0 1 2] [--steps 1000] [--folds 2]
        [--out runs/bench-audit] [--limit-train N]
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
import drive  # noqa: E402
import noise_matrix  # noqa: E402

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


def labelwise_pixel_score(probs: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Suspicion per pixel: the most likely other class's probability over its threshold, minus the given class's."""
    scaled = probs / thresholds[:, None, None]
    given = np.take_along_axis(scaled, label[None], axis=0)[0]
    others = scaled.copy()
    np.put_along_axis(others, label[None], -np.inf, axis=0)
    return others.max(axis=0) - given


def scored(cases, thresholds):
    from labelwise.metrics.label_quality import mask_suspects

    return [mask_suspects(p, y, thresholds, roi) for p, y, _, roi in cases]


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


def compare(audit_dir: Path, manifest: Path, repeats: int) -> dict:
    """Labelwise against cleanlab on the audit's saved out-of-sample probabilities of the training cases."""
    from cleanlab.segmentation.filter import find_label_issues
    from cleanlab.segmentation.rank import get_label_quality_scores
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, roc_auc_score

    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.label_quality import mask_thresholds

    cases = []
    for case in read_manifest(manifest):
        saved = audit_dir / "probabilities" / f"{case.id}.npy"
        if case.split != "train" or not saved.is_file():
            continue
        probs = np.load(saved).astype(np.float32)
        label = read_volume(case.label, mask=True).array
        truth = read_volume(case.truth, mask=True).array
        roi = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else np.ones(label.shape, bool)
        cases.append((probs, label, truth, roi))
    labels = np.stack([c[1] for c in cases]).astype(np.int64)
    pred_probs = np.stack([c[0] for c in cases])
    quiet = {"verbose": False}

    def ours():
        thresholds = mask_thresholds((p, y, roi) for p, y, _, roi in cases)
        return thresholds, scored(cases, thresholds)

    def theirs():
        image_scores, pixel_scores = get_label_quality_scores(labels, pred_probs, **quiet)
        issues = find_label_issues(labels, pred_probs, **quiet)
        return image_scores, pixel_scores, issues

    runs = {"labelwise": [], "cleanlab": []}
    for _ in range(repeats):  # interleaved
        runs["labelwise"].append(timed(ours, 1))
        runs["cleanlab"].append(timed(theirs, 1))
    (thresholds, audits), (image_scores, pixel_scores, issues) = runs["labelwise"][-1][2], runs["cleanlab"][-1][2]
    corrupted = np.concatenate([((y != t) & roi)[roi] for _, y, t, roi in cases])
    ours_score = np.concatenate([labelwise_pixel_score(p, y, thresholds)[roi] for p, y, _, roi in cases])
    theirs_score = np.concatenate([(1 - pixel_scores[i])[c[3]] for i, c in enumerate(cases)])
    flagged_ours = np.concatenate([(a.suspects > 0)[c[3]] for a, c in zip(audits, cases)])
    flagged_theirs = np.concatenate([issues[i][c[3]] for i, c in enumerate(cases)])
    true_dice = [noise_matrix.mask_dice(y, t, roi) for _, y, t, roi in cases]

    def flags(flagged):
        hits = int((flagged & corrupted).sum())
        return {"precision": hits / max(int(flagged.sum()), 1), "recall": hits / max(int(corrupted.sum()), 1),
                "flagged": int(flagged.sum())}

    def median(side, i):
        return statistics.median(r[i] for r in runs[side])

    return {
        "cases": len(cases), "corrupted_pixels": int(corrupted.sum()), "pixels": int(corrupted.size),
        "labelwise": {"ap": float(average_precision_score(corrupted, ours_score)),
                      "auroc": float(roc_auc_score(corrupted, ours_score)),
                      "spearman": float(spearmanr([a.quality for a in audits], true_dice)[0]),
                      **flags(flagged_ours), "seconds": median("labelwise", 0), "peak_mib": median("labelwise", 1)},
        "cleanlab": {"ap": float(average_precision_score(corrupted, theirs_score)),
                     "auroc": float(roc_auc_score(corrupted, theirs_score)),
                     "spearman": float(spearmanr(image_scores, true_dice)[0]),
                     **flags(flagged_theirs), "seconds": median("cleanlab", 0), "peak_mib": median("cleanlab", 1)},
    }


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
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
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
            audit_dir, fixed = home / "audit", home / "fixed"
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


if __name__ == "__main__":
    main()
