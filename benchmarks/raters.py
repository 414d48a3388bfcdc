"""Several raters per DRIVE training image (issue 30, ``label_2``, ... and ``data.raters``): their STAPLE consensus
and majority against each rater alone.

Three simulated raters trace each of the 18 training images, each erring their own way (``labelwise data degrade``
on the first observer's masks, through the CLI): ``thin`` (the thinnest vessels left out), ``dilate`` (every vessel
a pixel wider) and ``semi-automatic`` (a vesselness filter and a threshold). Validation and test masks stay the first
observer's. Variants, each ``configs/drive-unet-mss.yaml`` with ``--steps`` steps:

  rater1 / rater2 / rater3   that rater's masks alone
  majority                   ``data.raters: majority`` of the three
  consensus                  ``data.raters: consensus`` (STAPLE, fitted on the training images inside the field of
                             view; its sensitivity and specificity per rater are printed)
  mean                       ``data.raters: mean``: the share of raters who drew a vessel, a soft target
  sample                     ``data.raters: sample``: one rater per image drawn anew at every step

Scored on DRIVE's 20 test images inside the field of view against the first observer. Goal (issue 30): the best
fusion beats the best single rater by more than the seed std (3 seeds)::

    python benchmarks/raters.py --seeds 0 1 2 --steps 1000 --out runs/bench-raters
    python benchmarks/raters.py --table-only --out runs/bench-raters
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive  # noqa: E402  (benchmarks/drive.py: the DRIVE manifest, train_and_score)

REPO = drive.REPO
RATERS = ("thin", "dilate", "semi-automatic")  # the kind of each rater's errors
VARIANTS = ("rater1", "rater2", "rater3", "majority", "consensus", "mean", "sample")
SCORES = ("dice", "cldice", "precision", "sensitivity")


def raters_manifest(clean: Path, seed: int = 0) -> tuple[Path, dict[str, float]]:
    """The manifest with each training image's three raters' masks (``label``, ``label_2``, ``label_3``), and each
    rater's mean Dice to the first observer (degrade's ``noise.csv``)."""
    from labelwise.audit.folds import write_manifest_rows
    from labelwise.data.manifest import read_manifest

    folder = clean.parent
    target = folder / "raters.csv"
    degraded, quality = [], {}
    for number, kind in enumerate(RATERS, start=1):
        out = folder / f"rater{number}-{kind}"
        if not (out / "manifest.csv").is_file():
            subprocess.run([sys.executable, "-m", "labelwise", "data", "degrade", "--manifest", str(clean), "--kind",
                            kind, "--seed", str(seed + number), "--out", str(out)], check=True, cwd=REPO)
        degraded.append({c.id: c for c in read_manifest(out / "manifest.csv")})
        rows = (out / "noise.csv").read_text().splitlines()
        header = rows[0].split(",")
        dice = [float(r.split(",")[header.index("dice")]) for r in rows[1:] if r]
        quality[f"rater{number}"] = statistics.mean(dice)
    if not target.is_file():
        cases = [replace(c, label=(r := tuple(d[c.id].label for d in degraded))[0], raters=r)
                 if c.split == "train" else c for c in read_manifest(clean)]
        write_manifest_rows(target, cases)
    return target, quality


def single_manifest(clean: Path, number: int) -> Path:
    return clean.parent / f"rater{number}-{RATERS[number - 1]}" / "manifest.csv"


def run(args) -> dict:
    from labelwise.config import load_config

    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    folder = args.out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    clean = folder / "drive.csv" if (folder / "drive.csv").is_file() else drive.build_manifest(args.drive, folder)
    manifest, quality = raters_manifest(clean)
    results["rater_quality"] = quality
    print("raters' masks, mean Dice to the first observer: "
          + ", ".join(f"{k} ({RATERS[int(k[-1]) - 1]}) {v:.3f}" for k, v in quality.items()), flush=True)
    for seed in args.seeds:
        for variant in args.variants:
            key = f"{variant}/steps{args.steps}/seed{seed}"
            if key in results:
                continue
            print(f"== {key}", flush=True)
            options = [f"seed={seed}", f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}"]
            if variant.startswith("rater"):
                options.append(f"data.manifest={single_manifest(clean, int(variant[-1]))}")
            else:
                options += [f"data.manifest={manifest}", f"data.raters={variant}"]
            run_dir = args.out / key.replace("/", "-")
            results[key] = drive.train_and_score(load_config(REPO / "configs" / "drive-unet-mss.yaml", options),
                                                 run_dir)
            if (run_dir / "raters.json").is_file():
                results[key]["fit"] = json.loads((run_dir / "raters.json").read_text())
            print(json.dumps(results[key]), flush=True)
            results_path.write_text(json.dumps(results, indent=1) + "\n")
    return results


def table(results: dict, steps: int, seeds: list[int]) -> str:
    """Mean ± sample std over seeds per variant, and the paired Dice difference to the best single rater."""
    def rows(variant: str) -> dict[int, dict]:
        found = {s: results.get(f"{variant}/steps{steps}/seed{s}") for s in seeds}
        return {s: r for s, r in found.items() if r}

    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    singles = {v: rows(v) for v in VARIANTS[:3]}
    means = {v: statistics.mean(r["dice"] for r in found.values()) for v, found in singles.items() if found}
    best = max(means, key=means.get) if means else None
    quality = results.get("rater_quality", {})
    lines = ["| training masks | masks' Dice to the first observer | Dice | clDice | precision | sensitivity | "
             f"Dice - best rater ({best}, paired) | seeds |", "|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        found = rows(variant)
        name = f"{variant} ({RATERS[int(variant[-1]) - 1]})" if variant.startswith("rater") else variant
        masks = f"{quality[variant]:.3f}" if variant in quality else "-"
        diffs = ([found[s]["dice"] - singles[best][s]["dice"] for s in found if best and s in singles[best]]
                 if variant != best else [])
        cells = [fmt([r[k] for r in found.values() if r.get(k) is not None]) for k in SCORES]
        lines.append(f"| {name} | {masks} | " + " | ".join(cells)
                     + f" | {fmt(diffs) if diffs else '-'} | {len(found)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-raters")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        results = json.loads((args.out / "results.json").read_text())
    else:
        results = run(args)
    print(table(results, args.steps, args.seeds))


if __name__ == "__main__":
    main()
