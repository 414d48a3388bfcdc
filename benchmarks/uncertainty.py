"""Where ``labelwise predict --uncertainty`` points (issue 30 point 5), and what it costs, on DRIVE.

A run of ``configs/drive-unet-mss.yaml`` (``--steps`` steps on DRIVE, trained into ``OUT/run`` when ``--run`` is not
given and no run is there) predicts the 20 test images three ways, interleaved image by image:

  one pass       ``--no-tta``: one forward pass per window; its map is the entropy of its own probability
  tta            the run's default (flips averaged): the mask a user gets, what the errors are counted on
  uncertainty    ``--uncertainty``: every flip once; the flip entropy and the flip variance

Per image, inside the field of view: the AUROC (scikit-learn's ``roc_auc_score``) of each map for the pixels where
the default mask disagrees with the first observer; over the images, the Spearman correlation (scipy) of each
image's mean map with its Dice (negative: the images with more doubt score lower), and seconds per image (median of
each way, and the ratio of ``uncertainty`` to ``tta``: the maps should come with the flips' cost and nothing more)::

    python benchmarks/uncertainty.py [--run RUN] [--steps 1000] [--seed 0] [--out runs/bench-uncertainty]
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
WAYS = ("one pass", "tta", "uncertainty")


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of a foreground probability over ln 2 (0 to 1), the single pass's map."""
    q = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return -(q * np.log(q) + (1 - q) * np.log(1 - q)) / np.log(2)


def main(argv: list[str] | None = None) -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from labelwise.config import load_config
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.inference import load_run, predict_files

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--run", type=Path, default=None, help="a trained DRIVE run (default: OUT/run, trained)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-uncertainty")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / "data"
    folder.mkdir(exist_ok=True)
    manifest = folder / "drive.csv" if (folder / "drive.csv").is_file() else drive.build_manifest(args.drive, folder)
    run_dir = args.run or args.out / "run"
    if not (run_dir / "inference.json").is_file():
        options = [f"data.manifest={manifest}", f"seed={args.seed}", f"trainer.max_steps={args.steps}",
                   f"trainer.checkpoint_every={args.steps}"]
        drive.train_and_score(load_config(REPO / "configs" / "drive-unet-mss.yaml", options), run_dir)
    cases = [c for c in read_manifest(manifest) if c.split == "test"]
    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    auroc: dict[str, list[float]] = {"one-pass entropy": [], "flip entropy": [], "flip variance": []}
    means: dict[str, list[float]] = {k: [] for k in auroc}
    dice = []
    run = load_run(run_dir)  # predict_files sets every inference option of each call (configure)
    for number, case in enumerate(cases, 1):
        outputs = {}
        for way in WAYS:  # interleaved: the three ways of one image one after the other
            out = args.out / way.replace(" ", "-")
            started = time.perf_counter()
            (entry,) = predict_files(run, [case.image], out, reference=case.label, roi=case.roi, progress=False,
                                     tta=False if way == "one pass" else None, uncertainty=way == "uncertainty")
            seconds[way].append(time.perf_counter() - started)
            outputs[way] = (out, entry)
        label = read_volume(case.label, mask=True).array > 0
        inside = read_volume(case.roi, mask=True).array > 0
        out, entry = outputs["tta"]
        wrong = ((read_volume(out / entry["mask"], mask=True).array > 0) != label)[inside]
        out_one, one = outputs["one pass"]
        out_u, u = outputs["uncertainty"]
        maps = {
            "one-pass entropy": binary_entropy(np.load(out_one / one["probability_npy"])),
            "flip entropy": np.load(out_u / u["entropy"]),
            "flip variance": np.load(out_u / u["variance"]),
        }
        for name, values in maps.items():
            auroc[name].append(float(roc_auc_score(wrong, values[inside])))
            means[name].append(float(values[inside].mean()))
        dice.append(float(entry["dice"]))
        print(f"[{number}/{len(cases)}] {case.id}: Dice {dice[-1]:.4f}, AUROC "
              + ", ".join(f"{k} {v[-1]:.3f}" for k, v in auroc.items()), flush=True)
    result = {
        "run": str(run_dir),
        "images": len(cases),
        "dice": statistics.mean(dice),
        "auroc": {k: [statistics.mean(v), statistics.stdev(v)] for k, v in auroc.items()},
        "spearman_mean_vs_dice": {k: float(spearmanr(v, dice).statistic) for k, v in means.items()},
        "seconds_median": {w: statistics.median(v) for w, v in seconds.items()},
    }
    result["uncertainty_over_tta"] = result["seconds_median"]["uncertainty"] / result["seconds_median"]["tta"]
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| map | AUROC for the wrong pixels (mean ± std over images) | Spearman of the image mean with Dice |")
    print("|---|---|---|")
    for name, (mean, std) in result["auroc"].items():
        print(f"| {name} | {mean:.3f} ± {std:.3f} | {result['spearman_mean_vs_dice'][name]:+.2f} |")
    s = result["seconds_median"]
    print(f"\nseconds per image (median): one pass {s['one pass']:.2f}, tta {s['tta']:.2f}, --uncertainty "
          f"{s['uncertainty']:.2f} ({result['uncertainty_over_tta']:.2f} x tta); test Dice {result['dice']:.4f}")


if __name__ == "__main__":
    main()
