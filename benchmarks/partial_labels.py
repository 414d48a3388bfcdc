"""Masks annotated in part (issue 30, ``data.ignore``): DRIVE with only a band of each training image annotated.

Each training mask keeps a horizontal band of its rows (``--share`` of the image's height, 0.3 by default; where the
band lies is drawn once per case from its id, the same for every seed and variant), and the rest is

- ``ignore``: 128, trained with ``data.ignore: [128]`` (those pixels count in no loss, no patch is centred on them;
  not 255, which DRIVE's own 0/255 validation and test masks use for vessels);
- ``naive``: 0, background, as a tool without ignore regions would train on it;

against ``full``: the whole masks. Validation and test masks stay whole (the scores are DRIVE's test images against
their first-observer masks inside the field of view). The recipe is ``configs/drive-unet-mss.yaml`` with
``--steps`` steps. Goal (issue 30): ``ignore`` within 0.02 Dice of ``full``, 3 seeds::

    python benchmarks/partial_labels.py --seeds 0 1 2 --steps 1000 --out runs/bench-partial
    python benchmarks/partial_labels.py --table-only --out runs/bench-partial   # the table from results.json

``--dataset vessels3d``: the synthetic 3D vessels (``labelwise data synth vessels --dim 3 --n 11 --shape 96``, 6
train / 2 val / 3 test, every mask the clean truth; as ``benchmarks/noise_matrix.py`` builds them), each training
volume annotated on ``--slices`` axial slices only (evenly spaced, an offset per case drawn from its id), the rest
``ignore`` (2, ``data.ignore: [2]``, nnU-Net's convention: the label above the classes) or ``naive`` (0). The recipe
is ``configs/unet-mss-synthetic-3d.yaml`` CPU-sized as in the noise matrix (48^3 patches, widths 8..128; 600 steps
by default)::

    python benchmarks/partial_labels.py --dataset vessels3d --slices 8 --seeds 0 1 2 --steps 600 --out runs/bench-partial

Per run ``OUT/results.json`` (keyed ``variant/share/steps/seed``, 3D ``vessels3d/variant/slicesK/steps/seed``; a key
already there is not trained again) holds Dice, clDice, precision, sensitivity and wall minutes; the table prints
mean ± sample std over seeds and the paired differences to ``full``."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive  # noqa: E402  (benchmarks/drive.py: the DRIVE manifest, train_and_score)

REPO = drive.REPO
VARIANTS = ("full", "ignore", "naive")
SCORES = ("dice", "cldice", "precision", "sensitivity")
IGNORED = 128


def band_rows(case_id: str, height: int, share: float) -> slice:
    """The rows annotated in case ``case_id``: ``round(share * height)`` consecutive rows starting where a generator
    keyed by the id puts them (the same band whatever the seed, the variant or the manifest's order)."""
    rows = max(1, round(share * height))
    start = int(np.random.default_rng(zlib.crc32(case_id.encode())).integers(0, height - rows + 1))
    return slice(start, start + rows)


def partial_manifest(clean: Path, variant: str, share: float, slices: int | None = None) -> Path:
    """A copy of the manifest ``clean`` whose training masks are annotated in part, the rest unlabelled (``ignore``)
    or 0 (``naive``), written once under ``clean``'s folder; ``full``: ``clean``. 2D: on :func:`band_rows` only, the
    rest :data:`IGNORED`, PNG; 3D (``slices``): on :func:`slice_rows` of the last axis only, the rest 2, NIfTI with
    each mask's own geometry."""
    from labelwise.audit.folds import write_manifest_rows
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume, write_volume

    if variant == "full":
        return clean
    folder = clean.parent / (f"sliced-{variant}-{slices}" if slices else f"partial-{variant}-{share:g}")
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    cases, labels = read_manifest(clean), {}
    for case in cases:
        if case.split == "train" and case.label is not None:
            volume = read_volume(case.label, mask=True)
            label = volume.array
            unlabelled = (2 if slices else IGNORED) if variant == "ignore" else 0
            partial = np.full(label.shape, unlabelled, dtype=np.uint8)
            if slices:
                kept = (..., slice_rows(case.id, label.shape[-1], slices))
                partial[kept] = label[kept]
                path = folder / "labels" / f"{case.id}.nii.gz"
                labels[case.id] = write_volume(path, partial, volume.spacing, volume.affine)
            else:
                rows = band_rows(case.id, label.shape[0], share)
                partial[rows] = label[rows] * 255  # 0/255 as DRIVE's own masks (a band without vessels stays readable)
                labels[case.id] = write_volume(folder / "labels" / f"{case.id}.png", partial)
    return write_manifest_rows(manifest, cases, labels=labels)


def slice_rows(case_id: str, depth: int, slices: int) -> np.ndarray:
    """The axial slices annotated in 3D case ``case_id``: ``slices`` evenly spaced ones, from an offset drawn from
    its id (the same whatever the seed or the variant)."""
    step = max(1, depth // slices)
    start = int(np.random.default_rng(zlib.crc32(case_id.encode())).integers(0, step))
    return np.arange(start, depth, step)[:slices]


def result_key(variant: str, share: float, steps: int, seed: int, slices: int | None = None) -> str:
    """A run's key in ``results.json``: DRIVE's by the annotated share, vessels3d's (``slices``) by the slices."""
    if slices is not None:
        return f"vessels3d/{variant}/slices{slices}/steps{steps}/seed{seed}"
    return f"{variant}/share{share:g}/steps{steps}/seed{seed}"


def run(args) -> dict:
    """The grid of ``args.dataset`` (see the module's description); runs already in ``results.json`` are kept."""
    from labelwise.config import load_config

    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    three = args.dataset == "vessels3d"
    folder = args.out / "data" / ("vessels3d" if three else "")
    folder.mkdir(parents=True, exist_ok=True)
    if three:
        from noise_matrix import vessels_manifest

        clean, slices, unlabelled = vessels_manifest(folder, 11, 96), args.slices, 2
        config_file, extra = "unet-mss-synthetic-3d.yaml", [
            f"trainer.val_every={args.steps}", "model.channels=[8,16,32,64,128]", "data.patch_size=[48,48,48]",
            "trainer.log_every=50"]  # fmt: skip
    else:
        clean = folder / "drive.csv" if (folder / "drive.csv").is_file() else drive.build_manifest(args.drive, folder)
        slices, unlabelled, config_file, extra = None, IGNORED, "drive-unet-mss.yaml", []
    for seed in args.seeds:
        for variant in args.variants:
            key = result_key(variant, args.share, args.steps, seed, slices)
            if key in results:
                continue
            print(f"== {key}", flush=True)
            options = [f"data.manifest={partial_manifest(clean, variant, args.share, slices)}", f"seed={seed}",
                       f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}", *extra]
            if variant == "ignore":
                options.append(f"data.ignore=[{unlabelled}]")
            config = load_config(REPO / "configs" / config_file, options)
            results[key] = drive.train_and_score(config, args.out / key.replace("/", "-"))
            print(json.dumps(results[key]), flush=True)
            results_path.write_text(json.dumps(results, indent=1) + "\n")
    return results


def table(results: dict, share: float, steps: int, seeds: list[int], slices: int | None = None) -> str:
    """Mean ± sample std over seeds per variant, and the paired Dice difference to ``full`` (``slices``: the
    vessels3d grid's)."""
    def rows(variant: str) -> dict[int, dict]:
        found = {s: results.get(result_key(variant, share, steps, s, slices)) for s in seeds}
        return {s: r for s, r in found.items() if r}

    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    what = (f"{slices} axial slices of each training volume annotated" if slices is not None
            else f"{share:.0%} of each training image annotated")
    lines = [f"| training masks ({what}) | Dice | clDice | precision | "
             "sensitivity | wall minutes | Dice - full (paired) | seeds |", "|---|---|---|---|---|---|---|---|"]
    full = rows("full")
    for variant in VARIANTS:
        found = rows(variant)
        diffs = [found[s]["dice"] - full[s]["dice"] for s in found if s in full] if variant != "full" else []
        cells = [fmt([r[k] for r in found.values() if r.get(k) is not None]) for k in SCORES]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {fmt([r['wall_minutes'] for r in found.values()])}"
                     f" | {fmt(diffs) if diffs else '-'} | {len(found)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-partial")
    parser.add_argument("--share", type=float, default=0.3, help="share of each training image's rows annotated")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--dataset", choices=("drive", "vessels3d"), default="drive")
    parser.add_argument("--slices", type=int, default=8, help="vessels3d: axial slices annotated per training volume")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    three = args.dataset == "vessels3d"
    if args.table_only:
        results_path = args.out / "results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    else:
        if not three and not (args.drive / "training" / "images").is_dir():
            raise SystemExit(f"{args.drive}: DRIVE not found (see ../shared/data/drive/SOURCES.md)")
        results = run(args)
    print(table(results, args.share, args.steps, args.seeds, args.slices if three else None))


if __name__ == "__main__":
    main()
