"""DS6 against U-Net MSS on DRIVE with imperfect training labels (issue 17): noisy masks and few labelled images.

DRIVE (``../shared/data/drive``; development and benchmarks only) split as in ``benchmarks/drive.py`` (18 train, 2
validation, 20 test images), every run scored on the 20 test images inside the field of view against the first
observer (threshold 0.5). Settings (``--settings``):

  clean           the first observer's masks
  thin            training masks without vessels narrower than 3 px (``labelwise data degrade --kind thin``)
  semi-automatic  training masks made by Frangi + Otsu + small-component removal from the images themselves
                  (``labelwise data degrade --kind semi-automatic``)
  labelled5       5 of the 18 training images keep their masks (drawn once with seed 0), 13 are unlabelled

Validation and test images keep clean masks in every setting. Methods (``--methods``), all from
configs/drive-unet-mss.yaml with the same steps, augmentation and network:

  unet-mss        the shipped config (supervised U-Net MSS, Dice + cross-entropy); ignores unlabelled images
  ds6-paper       ``method: ds6`` as the paper runs it: Focal Tversky, the consistency target from the network
                  itself, equal weights, no ramp
  ds6             ``method: ds6`` with the config's loss (Dice + cross-entropy) and DS6's defaults, plus any
                  ``--ds6 key=value`` options (e.g. ``--ds6 method.teacher=ema --ds6 method.consistency_rampup=500``)

``--unet key=value`` changes the unet-mss runs the same way (e.g. ``--unet method.loss=focal_tversky``: the
paper's loss without DS6's deformation terms, to tell which of the two helps); ``--tag`` then names that variant.

Printed and written to ``OUT/results.json`` (merged across calls): Dice, clDice, sensitivity and precision (mean ±
std over seeds of the mean over the 20 test images) and training minutes, per setting and method::

    python benchmarks/ds6_drive.py [--seeds 0 1 2] [--settings clean thin semi-automatic labelled5]
                                   [--methods unet-mss ds6-paper ds6] [--steps 3000] [--out runs/bench-ds6-drive]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive  # noqa: E402  (benchmarks/drive.py: the manifest and one labelwise run)

REPO = drive.REPO
SETTINGS = ("clean", "thin", "semi-automatic", "labelled5")
METHODS = ("unet-mss", "ds6-paper", "ds6")
LABELLED = 5


def setting_manifest(setting: str, clean: Path, out: Path) -> Path:
    """The manifest of one setting, written once under ``out``."""
    if setting == "clean":
        return clean
    if setting in ("thin", "semi-automatic"):
        target = out / f"degraded-{setting}"
        if not (target / "manifest.csv").is_file():
            subprocess.run([sys.executable, "-m", "labelwise", "data", "degrade", "--manifest", str(clean),
                            "--kind", setting, "--out", str(target)], check=True, cwd=REPO)
        return target / "manifest.csv"
    from labelwise.data.manifest import read_manifest
    from labelwise.data.pairing import write_manifest

    path = out / "labelled5.csv"
    cases = read_manifest(clean)
    train = [c.id for c in cases if c.split == "train"]
    keep = set(np.random.default_rng(0).choice(train, size=LABELLED, replace=False).tolist())
    rows = [{"id": c.id, "image": c.image, "split": c.split, "roi": c.roi or "",
             "label": c.label if (c.split != "train" or c.id in keep) else ""} for c in cases]
    write_manifest(rows, path)
    return path


def overrides(method: str, steps: int | None, ds6: list[str], unet: list[str] = ()) -> list[str]:
    extra = [f"trainer.max_steps={steps}"] if steps else []
    if method == "unet-mss":
        extra += list(unet)
    elif method == "ds6-paper":
        extra += ["method.name=ds6", "method.loss=focal_tversky"]
    elif method == "ds6":
        extra += ["method.name=ds6", *ds6]
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's 3000)")
    parser.add_argument("--ds6", action="append", default=[], help="config override for the ds6 method")
    parser.add_argument("--unet", action="append", default=[], help="config override for unet-mss (e.g. "
                        "method.loss=focal_tversky: the paper's loss without DS6's terms)")
    parser.add_argument("--tag", default="", help="suffix of the key in results.json of ds6, and of unet-mss when "
                        "--unet is given (a variant)")
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-ds6-drive")
    args = parser.parse_args()
    if not (args.drive / "training" / "images").is_dir():
        raise SystemExit(f"{args.drive}: DRIVE not found (see ../shared/data/drive/SOURCES.md)")
    args.out.mkdir(parents=True, exist_ok=True)
    clean = drive.build_manifest(args.drive, args.out)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    names = {m: f"{m}{args.tag}" if m == "ds6" or (m == "unet-mss" and args.unet) else m for m in args.methods}
    for seed in args.seeds:
        for setting in args.settings:
            manifest = setting_manifest(setting, clean, args.out)
            for method in args.methods:
                key = f"{setting}/{names[method]}/steps{args.steps or 'config'}/seed{seed}"
                if key in results:  # measured by an earlier call into the same --out
                    continue
                print(f"== {key}", flush=True)
                run_dir = args.out / key.replace("/", "-")
                options = overrides(method, args.steps, args.ds6, args.unet)
                results[key] = drive.run_labelwise("unet-mss", manifest, run_dir, seed, options)
                results[key]["options"] = options
                print(json.dumps(results[key]), flush=True)
                results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nDRIVE test (20 images, inside the field of view, first observer), seeds {args.seeds}, "
          f"steps {args.steps or 'config'}")
    print("| setting | method | Dice | clDice | sensitivity | precision | training minutes |")
    print("|---|---|---|---|---|---|---|")
    for setting in args.settings:
        for method in args.methods:
            rows = [results[k] for s in args.seeds
                    if (k := f"{setting}/{names[method]}/steps{args.steps or 'config'}/seed{s}") in results]
            print(f"| {setting} | {names[method]} | " + " | ".join(drive.table_cells(rows)) + " |")


if __name__ == "__main__":
    main()
