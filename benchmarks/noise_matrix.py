"""The noise matrix (issue 27): every method trained on every kind of label noise, on DRIVE, DRIVE x1.75 and the
synthetic 3D vessels; one table and one heat-map (method x noise kind, one panel per data set).

Data sets (``--datasets``); validation and test cases keep clean masks in every cell, and every run is scored on
the test cases against those clean masks (threshold 0.5):

  drive      DRIVE (``../shared/data/drive``) at its own size, the manifest of ``benchmarks/drive.py`` (18 train,
             2 val, 20 test), scored inside the field of view (the manifest's ``roi``)
  drive175   DRIVE resampled by 1.75 (photographs, masks and fields of view; ``benchmarks/drive_scaled.py``, written
             once to ``runs/drive-x1.75``), the same split and scoring: a stand-in for a higher-resolution camera
  vessels3d  ``labelwise data synth vessels --dim 3 --n 11 --shape 96`` (6 train / 2 val / 3 test, DS6's split),
             every mask the clean ``truth`` (the generator's own noisy masks are not used). CPU-sized as in
             ``benchmarks/ds6_synthetic.py``: 48^3 patches, widths 8..128, 600 steps (U-Net MSS ~0.2 s a step on 2
             cores: a run is ~3 minutes, DS6 ~4). 96^3 keeps vessels of every radius and a few patches per volume;
             smaller volumes hold one or two trees only. ``--vessels-n`` / ``--vessels-shape`` change the set (a
             smoke test: 4 cases at 32).

Noise kinds (``--kinds``): ``clean`` and ``labelwise data degrade --kind K`` (thin, erode, dilate, drop,
semi-automatic, mixed) on the training masks, through the CLI as a user runs it, default strengths. On drive175 the
strengths counted in pixels (thin, erode, dilate) are the defaults times 1.75 rounded to whole pixels (thin 5,
erode 2, dilate 2: the balls and widths are digital), so each kind removes or adds about the same anatomy as on
DRIVE, and mixed gets ``--strength 1.75`` (it scales the pixel strengths it draws); ``--no-scale-strength`` keeps
the defaults there. Drop (a share) and semi-automatic (its component size is counted in vessel widths) are not
scaled. ``--strength K=V``
sets a kind's strength on every data set (no scaling; the kind is then keyed ``K@V``).

Methods (``--methods``): rows of :data:`METHODS`, one config per dimension plus overrides; a new candidate is one
line. ``unet-mss`` (the shipped clean recipe), ``ds6`` (DS6 as shipped), ``noisy`` (the noisy-mask default,
configs/drive-noisy.yaml and noisy-synthetic-3d.yaml: the clean recipes with ``threshold: calibrate``). Where noisy's
config differs from unet-mss's only in the threshold, one training serves both (same seed, same weights): unet-mss's
cell is noisy's run rescored from its saved test probabilities at 0.5 (``shared_training`` in its row;
``--no-share-training`` trains it itself). ``--set METHOD:key=value`` changes a method's config (needs
``--tag``: the method is then keyed ``METHOD-TAG``, so a variant never overwrites the shipped figures). Steps:
``--steps`` or the data set's (vessels3d: 600) or each config's own; when the steps change, a config's
``method.baseline_steps`` (DS6 in 3D) keeps its share of them.

Per run (``OUT/results.json``, merged across calls, keyed ``dataset/kind/method/steps<N>/seed<S>``; a key already
there is skipped, a run folder is cleared before its run): Dice, clDice, precision, sensitivity (mean over the test
cases, from the run's ``predictions/test/segmentation.json``), training and wall minutes. Per data set and kind:
the training masks' Dice to the clean ones (mean over the training cases, inside the roi), the noise level.
benchmarks/noise_matrix.json, committed, holds every cell measured so far (``--write-results`` writes it) and is
read under OUT's results.json, so a later machine trains only the cells still missing.
Order: seeds outermost, then data sets, kinds, methods (a slow period of the machine hits every method alike).

Output: a markdown table (mean ± sample std over seeds) with, per kind, the paired difference ``noisy - unet-mss``
(``--compare``) and whether it exceeds its std over seeds, and a heat-map PNG. Without ``--write-results`` both
go under OUT (``noise_matrix.md``, ``noise_matrix.png``); with it, the section between ``<!-- noise-matrix:start
-->`` and ``<!-- noise-matrix:end -->`` in benchmarks/RESULTS.md is replaced (or appended) and the PNG is
benchmarks/noise_matrix.png. ``--table-only`` rebuilds both from results.json without training::

    python benchmarks/noise_matrix.py [--datasets drive drive175 vessels3d] [--kinds clean thin ...]
        [--methods unet-mss ds6 noisy] [--seeds 0 1 2] [--steps N] [--out runs/bench-noise-matrix]
        [--set METHOD:key=value --tag NAME] [--table-only] [--write-results] [--limit-test N]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shlex
import statistics
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive  # noqa: E402  (benchmarks/drive.py: the DRIVE manifest, its scores)

REPO = drive.REPO
KINDS = ("clean", "thin", "erode", "dilate", "drop", "semi-automatic", "mixed")
PIXEL_KINDS = ("thin", "erode", "dilate")  # strengths in pixels: scaled with the picture on drive175
SCORES = ("dice", "cldice", "precision", "sensitivity")
START, END = "<!-- noise-matrix:start -->", "<!-- noise-matrix:end -->"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
FIGURE = REPO / "benchmarks" / "noise_matrix.png"
LEDGER = REPO / "benchmarks" / "noise_matrix.json"  # every measured cell, committed: run folders die with machines


@dataclass(frozen=True)
class Dataset:
    dim: int
    factor: float = 1.0  # DRIVE's resampling
    steps: int | None = None  # default steps (None: each config's own)
    overrides: tuple[str, ...] = ()  # the same for every method
    label: str = ""


DATASETS = {
    "drive": Dataset(2, label="DRIVE (565 x 584)"),
    "drive175": Dataset(2, factor=1.75, label="DRIVE x1.75 (989 x 1022)"),
    "vessels3d": Dataset(3, steps=600, label="synthetic 3D vessels",
                         overrides=("model.channels=[8,16,32,64,128]", "trainer.log_every=50")),
}


@dataclass(frozen=True)
class Method:
    configs: dict[int, str]  # dimension -> config file under configs/
    overrides: tuple[str, ...] = field(default=())


# name -> config per dimension (+ overrides): a new candidate is one line
METHODS = {
    "unet-mss": Method({2: "drive-unet-mss.yaml", 3: "unet-mss-synthetic-3d.yaml"}),
    "ds6": Method({2: "drive-ds6.yaml", 3: "ds6-synthetic-3d.yaml"}),
    "noisy": Method({2: "drive-noisy.yaml", 3: "noisy-synthetic-3d.yaml"}),
}


def base_method(name: str) -> str:
    """The :data:`METHODS` row of a method's key (``noisy-bal`` -> ``noisy``)."""
    for base in sorted(METHODS, key=len, reverse=True):
        if name == base or name.startswith(base + "-"):
            return base
    return name


# --- data -------------------------------------------------------------------------------------------------------


def labelwise_cli(*command: str) -> None:
    subprocess.run([sys.executable, "-m", "labelwise", *command], check=True, cwd=REPO)


def limit_test(manifest: Path, limit: int | None) -> Path:
    """``manifest`` with only its first ``limit`` test cases (a smoke test), written beside it; itself without."""
    if not limit:
        return manifest
    from labelwise.data.manifest import read_manifest
    from labelwise.data.pairing import write_manifest

    cases = read_manifest(manifest)
    tests = [c.id for c in cases if c.split == "test"][:limit]
    rows = [{"id": c.id, "image": c.image, "label": c.label or "", "split": c.split, "truth": c.truth or "",
             "roi": c.roi or ""} for c in cases if c.split != "test" or c.id in tests]
    out = manifest.with_name(f"{manifest.stem}-test{limit}.csv")
    write_manifest(rows, out)
    return out


def vessels_manifest(folder: Path, n: int, shape: int) -> Path:
    """The synthetic 3D set under ``folder/synth`` and ``folder/clean.csv``: its cases with the clean ``truth`` as
    every case's label."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.pairing import write_manifest

    synth = folder / "synth"
    if not (synth / "manifest.csv").is_file():
        labelwise_cli("data", "synth", "vessels", "--dim", "3", "--n", str(n), "--shape", str(shape),
                      "--out", str(synth))
    clean = folder / "clean.csv"
    if not clean.is_file():
        rows = [{"id": c.id, "image": c.image, "label": c.truth, "split": c.split}
                for c in read_manifest(synth / "manifest.csv")]
        write_manifest(rows, clean)
    return clean


def clean_manifest(name: str, args) -> Path:
    """The clean manifest of data set ``name`` (written once under ``OUT/data/<dataset key>``)."""
    folder = args.out / "data" / dataset_key(name, args)
    folder.mkdir(parents=True, exist_ok=True)
    spec = DATASETS[name]
    if spec.dim == 3:
        manifest = vessels_manifest(folder, args.vessels_n, args.vessels_shape)
    else:
        root = args.drive
        if spec.factor != 1:
            from drive_scaled import scaled_drive

            root = scaled_drive(args.drive, spec.factor, REPO / "runs" / f"drive-x{spec.factor:g}")
        manifest = folder / "drive.csv"
        if not manifest.is_file():
            drive.build_manifest(root, folder)
    return limit_test(manifest, args.limit_test)


def strength_of(kind: str, name: str, args) -> float | None:
    """The ``--strength`` passed to degrade for ``kind`` on data set ``name`` (None: degrade's default)."""
    if kind in args.strengths:
        return args.strengths[kind]
    factor = DATASETS[name].factor
    if factor == 1 or not args.scale_strength:
        return None
    if kind in PIXEL_KINDS:  # whole pixels: the balls and widths are digital (thin 5.25 keeps only 7 px and wider)
        from labelwise.data.degrade import DEFAULT_STRENGTH

        return float(round(DEFAULT_STRENGTH[kind] * factor))
    if kind == "mixed":  # mixed's strength scales the pixel strengths it draws
        return factor
    return None


def kind_key(kind: str, args) -> str:
    return f"{kind}@{args.strengths[kind]:g}" if kind in args.strengths else kind


def dataset_key(name: str, args) -> str:
    """The data set's name in keys and folders: its options when they differ from the defaults (a smoke test)."""
    key = name
    if DATASETS[name].dim == 3 and (args.vessels_n, args.vessels_shape) != (11, 96):
        key += f"-n{args.vessels_n}-s{args.vessels_shape}"
    if args.limit_test:
        key += f"-test{args.limit_test}"
    return key


def kind_manifest(kind: str, name: str, clean: Path, args) -> Path:
    """The manifest whose training masks carry ``kind`` (degraded once, through the CLI)."""
    if kind == "clean":
        return clean
    strength = strength_of(kind, name, args)
    target = clean.parent / (f"degraded-{kind}" + (f"-s{strength:g}" if strength is not None else ""))
    if not (target / "manifest.csv").is_file():
        command = ["data", "degrade", "--manifest", str(clean), "--kind", kind, "--out", str(target)]
        if strength is not None:
            command += ["--strength", f"{strength:g}"]
        labelwise_cli(*command)
    return target / "manifest.csv"


def mask_dice(label: np.ndarray, truth: np.ndarray, roi: np.ndarray | None) -> float:
    inside = np.ones(truth.shape, bool) if roi is None else roi > 0
    a, b = (label > 0) & inside, (truth > 0) & inside
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def noise_level(manifest: Path, kind: str) -> dict:
    """The training masks' Dice to the clean ones (mean over the labelled training cases, inside the roi): from
    degrade's ``noise.csv`` (a ``dice`` column) when it writes one, else computed here."""
    written = manifest.parent / "noise.csv"
    if kind != "clean" and written.is_file():
        with written.open(newline="") as handle:
            values = [float(r["dice"]) for r in csv.DictReader(handle) if r.get("dice") not in (None, "")]
        if values:
            return {"dice": statistics.mean(values), "cases": len(values), "source": "noise.csv"}
    if kind == "clean":
        return {"dice": 1.0, "cases": 0, "source": "clean"}
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume

    values = []
    for case in read_manifest(manifest):
        if case.split != "train" or case.label is None or case.truth is None:
            continue
        roi = read_volume(case.roi, mask=True).array if case.roi is not None else None
        values.append(mask_dice(read_volume(case.label, mask=True).array,
                                read_volume(case.truth, mask=True).array, roi))
    return {"dice": statistics.mean(values), "cases": len(values), "source": "computed"}


# --- runs -------------------------------------------------------------------------------------------------------


def config_path(method: str, dim: int) -> Path:
    return REPO / "configs" / METHODS[base_method(method)].configs[dim]


def config_steps(path: Path) -> int:
    from labelwise.config import load_config

    return int(load_config(path, check_files=False).trainer.max_steps)


def run_steps(name: str, method: str, args) -> int:
    """The steps of ``method`` on data set ``name``: ``--steps``, else the data set's, else the config's."""
    for option in reversed(args.sets.get(base_method(method), []) if method != base_method(method) else []):
        if option.replace(" ", "").startswith("trainer.max_steps="):
            return int(option.split("=", 1)[1])
    return args.steps or DATASETS[name].steps or config_steps(config_path(method, DATASETS[name].dim))


def run_overrides(name: str, method: str, manifest: Path, seed: int, steps: int, args) -> list[str]:
    from labelwise.config import load_config

    spec = DATASETS[name]
    path = config_path(method, spec.dim)
    shipped = load_config(path, check_files=False)
    options = [f"data.manifest={manifest}", f"seed={seed}", *spec.overrides]
    if spec.dim == 3:
        patch = min(48, args.vessels_shape)
        options.append(f"data.patch_size=[{patch},{patch},{patch}]")
    if steps != shipped.trainer.max_steps:
        options += [f"trainer.max_steps={steps}",
                    f"trainer.checkpoint_every={min(steps, shipped.trainer.checkpoint_every or steps)}"]
        baseline = getattr(shipped.method, "baseline_steps", 0) or 0
        if baseline:  # DS6's first stage keeps its share of the steps
            options.append(f"method.baseline_steps={round(baseline * steps / shipped.trainer.max_steps)}")
    return [*options, *METHODS[base_method(method)].overrides, *args.sets.get(base_method(method), [])]


def train_one(path: Path, options: list[str], run_dir: Path) -> dict:
    """One run of the config at ``path`` with ``options``; its scores against the test cases' clean masks."""
    from labelwise.config import load_config

    return drive.train_and_score(load_config(path, options), run_dir)


def sparse_training_masks(manifest: Path, share: float) -> list[str]:
    """The training cases whose masks ``data.sparse_masks: share`` treats as unlabelled (counted on the files; the
    data sets here are resampled to their own spacing, so the counts are the run's)."""
    from labelwise.data.datasets import sparse_positions
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume

    cases = [c for c in read_manifest(manifest) if c.split == "train" and c.label is not None]
    counts = [int((read_volume(c.label, mask=True).array > 0).sum()) for c in cases]
    return [cases[p].id for p in sparse_positions(counts, share)]


def shares_training(name: str, a: str, b: str, args, manifest: Path | None = None) -> bool:
    """Whether methods ``a`` and ``b`` train the same network on data set ``name``: their configs, with this call's
    overrides, differ only in ``method.threshold`` (the calibrated default and its plain baseline), and in
    ``data.sparse_masks`` where ``manifest`` has no training mask it leaves out. Same seed, same device, same result
    (the engine's seeding), so one training gives both cells."""
    from labelwise.config import load_config

    dim = DATASETS[name].dim
    if not (config_path(a, dim).is_file() and config_path(b, dim).is_file()):
        return False
    configs = []
    for method in (a, b):
        options = run_overrides(name, method, Path("m.csv"), 0, run_steps(name, method, args), args)
        raw = load_config(config_path(method, dim), options, check_files=False).to_dict()
        raw.pop("name", None)
        raw["method"].pop("threshold", None)
        raw["method"].pop("calibration_tolerance", None)
        if raw["method"].get("scales") == [1.0]:  # the default, written out or not
            raw["method"].pop("scales")
        share = raw["data"].pop("sparse_masks", 0)
        if share and (manifest is None or sparse_training_masks(manifest, share)):
            return False
        configs.append(raw)
    return configs[0] == configs[1]


def rescore_at_half(run_dir: Path, manifest: Path) -> dict:
    """The scores of a calibrated run's test cases at the uncalibrated threshold (foreground where p > 0.5, the
    argmax of two softmax channels), from its saved test probabilities, inside each case's roi, against the test
    labels (clean): what the same training gives without ``threshold: calibrate``."""
    from labelwise.data.manifest import read_manifest
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.surface import score_case

    rows = []
    folder = run_dir / "predictions" / "test" / "probabilities"
    for case in (c for c in read_manifest(manifest) if c.split == "test"):
        saved = folder / f"{case.id}.npy"
        probability = np.load(saved) if saved.is_file() else read_volume(folder / f"{case.id}.nii.gz").array
        label = read_volume(case.label, mask=True)
        probability = probability.reshape(label.array.shape)  # a NIfTI reads as one channel (1, *spatial)
        roi = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else None
        rows.append(score_case(probability > 0.5, label.array > 0, label.spacing, roi)["foreground"])
    return {k: float(np.nanmean([r[k] for r in rows])) for k in SCORES} | {"test_cases": len(rows)}


def run_matrix(args, results: dict, results_path: Path) -> list[str]:
    """Train every missing cell; returns the keys that failed."""
    failed, skipped, broken = [], set(), set()
    if args.write_command:
        results.setdefault("commands", [])
        if args.write_command not in results["commands"]:
            results["commands"].append(args.write_command)
    for seed in args.seeds:
        for name in args.datasets:
            spec = DATASETS[name]
            methods = []
            for method in args.methods:
                path = config_path(method, spec.dim)
                if path.is_file():
                    methods.append(method)
                elif (method, spec.dim) not in skipped:
                    skipped.add((method, spec.dim))
                    print(f"-- {method} skipped on {spec.dim}D data: {path.relative_to(REPO)} does not exist",
                          flush=True)
            if not methods:
                continue
            dkey = dataset_key(name, args)
            clean = None
            for kind in args.kinds:
                kkey = kind_key(kind, args)
                keys = {m: f"{dkey}/{kkey}/{m}/steps{run_steps(name, m, args)}/seed{seed}" for m in methods}
                if all(k in results for k in keys.values()):
                    continue
                if (dkey, kkey) in broken:  # its masks could not be made earlier in this call
                    failed += [k for k in keys.values() if k not in results]
                    continue
                try:
                    clean = clean or clean_manifest(name, args)
                    manifest = kind_manifest(kind, name, clean, args)
                    noise = results.setdefault("noise", {}).setdefault(dkey, {})
                    if kkey not in noise:
                        noise[kkey] = noise_level(manifest, kind)
                        results_path.write_text(json.dumps(results, indent=1) + "\n")
                        print(f"-- {dkey}/{kkey}: training masks' Dice to the clean ones "
                              f"{noise[kkey]['dice']:.3f}", flush=True)
                except Exception as err:  # noqa: BLE001  (a data set or kind that cannot be made: cells missing)
                    if isinstance(err, subprocess.CalledProcessError):  # the CLI has said why
                        print(f"!! {shlex.join(err.cmd[2:])} exited with {err.returncode}", flush=True)
                    else:
                        traceback.print_exc()
                    broken.add((dkey, kkey))
                    print(f"!! {dkey}/{kkey}: the training masks could not be made; its cells stay missing",
                          flush=True)
                    failed += [k for k in keys.values() if k not in results]
                    continue
                shared = (args.share_training and "unet-mss" in methods and "noisy" in methods
                          and shares_training(name, "noisy", "unet-mss", args, manifest))
                for method in sorted(methods, key=lambda m: shared and m == "unet-mss"):  # shared: noisy first
                    key = keys[method]
                    if key in results:  # measured by an earlier call into the same --out
                        continue
                    if shared and method == "unet-mss" and keys["noisy"] in results:
                        source = results[keys["noisy"]]
                        results[key] = {**source, **rescore_at_half(args.out / keys["noisy"].replace("/", "-"),
                                                                    manifest),
                                        "method": method, "shared_training": keys["noisy"],
                                        "config": str(config_path(method, spec.dim).relative_to(REPO))}
                        print(f"== {key}: the training of {keys['noisy']}, scored at 0.5", flush=True)
                        print(json.dumps(results[key]), flush=True)
                        results_path.write_text(json.dumps(results, indent=1) + "\n")
                        continue
                    print(f"== {key}", flush=True)
                    steps = run_steps(name, method, args)
                    options = run_overrides(name, method, manifest, seed, steps, args)
                    try:
                        row = train_one(config_path(method, spec.dim), options, args.out / key.replace("/", "-"))
                    except Exception:  # noqa: BLE001  (one failed run does not stop the grid; it stays missing)
                        traceback.print_exc()
                        print(f"!! {key} failed; it stays missing (rerun to retry)", flush=True)
                        failed.append(key)
                        continue
                    results[key] = {**row, "dataset": dkey, "kind": kkey, "method": method, "steps": steps,
                                    "seed": seed, "default_steps": args.steps is None,
                                    "config": str(config_path(method, spec.dim).relative_to(REPO)),
                                    "options": options[2:]}
                    print(json.dumps(results[key]), flush=True)
                    results_path.write_text(json.dumps(results, indent=1) + "\n")
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    return failed


# --- table and figure -------------------------------------------------------------------------------------------


def cell_rows(results: dict, dataset: str, kind: str, method: str, steps: int | None) -> dict[int, dict]:
    """The result rows of one cell by seed: at ``steps``, or (None) those run at the default steps."""
    rows = {}
    pattern = re.compile(rf"^{re.escape(dataset)}/{re.escape(kind)}/{re.escape(method)}/steps(\d+)/seed(\d+)$")
    for key, row in results.items():
        match = pattern.match(key)
        if not match or not isinstance(row, dict):
            continue
        if steps is not None and int(match.group(1)) != steps:
            continue
        if steps is None and not row.get("default_steps", True):
            continue
        rows[int(match.group(2))] = row
    return rows


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def summarise(results: dict, datasets: list[str], kinds: list[str], methods: list[str], seeds: list[int],
              steps: dict | int | None = None) -> dict:
    """Per cell ``(dataset, kind, method)``: the seeds found, each score's values, and the missing seeds.
    ``steps``: one step count, or ``{(dataset, method): steps}``, or None (the default steps, whatever they were)."""
    cells = {}
    for dataset in datasets:
        for kind in kinds:
            for method in methods:
                at = steps.get((dataset, method)) if isinstance(steps, dict) else steps
                rows = cell_rows(results, dataset, kind, method, at)
                found = [s for s in seeds if s in rows]
                cells[dataset, kind, method] = {
                    "seeds": found, "missing": [s for s in seeds if s not in rows],
                    "dice_by_seed": {s: float(rows[s]["dice"]) for s in found},
                    **{k: [float(rows[s][k]) for s in found if rows[s].get(k) is not None]
                       for k in (*SCORES, "wall_minutes")}}
    return cells


def paired(cells: dict, dataset: str, kind: str, a: str, b: str) -> list[float]:
    """Dice of ``a`` minus Dice of ``b``, per seed both have."""
    ca, cb = cells.get((dataset, kind, a)), cells.get((dataset, kind, b))
    if not ca or not cb:
        return []
    da, db = ca["dice_by_seed"], cb["dice_by_seed"]
    return [da[s] - db[s] for s in da if s in db]


def verdict(kind: str, diffs: list[float], clean_margin: float = 0.005) -> str:
    """``wins`` where the mean paired difference exceeds its sample std over seeds (noisy kinds); on clean masks
    ``holds`` where it loses at most ``clean_margin``."""
    if len(diffs) < 2:
        return "one seed" if diffs else "-"
    mean, std = mean_std(diffs)
    if kind == "clean":
        return "holds" if mean >= -clean_margin else f"loses > {clean_margin}"
    return "**wins**" if mean > std else ("loses" if mean < -std else "within std")


def missing_cells(cells: dict) -> list[str]:
    """One line per cell with seeds missing."""
    out = []
    for (dataset, kind, method), cell in cells.items():
        if cell["missing"]:
            seeds = "all seeds" if not cell["seeds"] else "seed " + ", ".join(map(str, cell["missing"]))
            out.append(f"{dataset} / {kind} / {method}: {seeds}")
    return out


def markdown_table(cells: dict, noise: dict, datasets: list[str], kinds: list[str], methods: list[str],
                   compare: tuple[str, str]) -> str:
    """The scores' table and the paired differences' table."""
    lines = ["| data set | kind (training masks' Dice) | method | Dice | clDice | precision | sensitivity | "
             "wall minutes | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for dataset in datasets:
        for kind in kinds:
            level = noise.get(dataset, {}).get(kind, {}).get("dice")
            kind_text = f"{kind} ({level:.3f})" if level is not None else kind
            for method in methods:
                cell = cells[dataset, kind, method]
                lines.append(f"| {dataset} | {kind_text} | {method} | " + " | ".join(
                    [fmt(cell[k]) for k in SCORES] + [fmt(cell["wall_minutes"], 1), str(len(cell["seeds"]))]) + " |")
    a, b = compare
    if a in methods and b in methods:
        lines += ["", f"Paired Dice difference {a} - {b} (mean ± sample std over the seeds both have; **wins**: "
                  f"the mean exceeds that std; on clean masks, holds: it loses at most 0.005):", "",
                  "| data set | kind | " + f"{a} - {b} | seeds | verdict |", "|---|---|---|---|---|"]
        for dataset in datasets:
            for kind in kinds:
                diffs = paired(cells, dataset, kind, a, b)
                lines.append(f"| {dataset} | {kind} | {fmt(diffs)} | {len(diffs)} | {verdict(kind, diffs)} |")
    return "\n".join(lines)


def heat_map(cells: dict, noise: dict, datasets: list[str], kinds: list[str], methods: list[str], path: Path,
             compare: tuple[str, str] | None = None, labels: dict | None = None) -> Path:
    """One panel per data set: rows methods, columns kinds, colour and text the mean Dice (± std over seeds);
    cells without any seed hatched and marked missing; a red frame where ``compare[0]`` wins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    values = [statistics.mean(c["dice"]) for c in cells.values() if c["dice"]]
    low = math.floor(min(values, default=0.5) * 20) / 20
    high = max(math.ceil(max(values, default=1.0) * 20) / 20, low + 0.05)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(len(datasets), 1, squeeze=False, layout="constrained",
                             figsize=(1.3 * len(kinds) + 2.4, (0.62 * len(methods) + 1.0) * len(datasets) + 0.5))
    image = None
    for ax, dataset in zip(axes[:, 0], datasets):
        grid = np.full((len(methods), len(kinds)), np.nan)
        for i, method in enumerate(methods):
            for j, kind in enumerate(kinds):
                cell = cells[dataset, kind, method]
                if cell["dice"]:
                    grid[i, j] = statistics.mean(cell["dice"])
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=low, vmax=high, aspect="auto")
        for i, method in enumerate(methods):
            for j, kind in enumerate(kinds):
                cell = cells[dataset, kind, method]
                if not cell["dice"]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#eeeeee", edgecolor="#999999",
                                           hatch="///", linewidth=0))
                    ax.text(j, i, "missing", ha="center", va="center", fontsize=8, color="#555555")
                    continue
                mean, std = mean_std(cell["dice"])
                text = f"{mean:.3f}" + (f"\n± {std:.3f}" if std is not None else "")
                if cell["missing"]:
                    text += f"\n({len(cell['seeds'])} seed{'s' if len(cell['seeds']) > 1 else ''})"
                shade = (grid[i, j] - low) / (high - low)
                ax.text(j, i, text, ha="center", va="center", fontsize=8.5, linespacing=1.1,
                        color="black" if shade > 0.55 else "white")
                if compare and method == compare[0] and verdict(kind, paired(cells, dataset, kind, *compare)) in (
                        "**wins**", "holds"):
                    ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="red",
                                           linewidth=2))
        columns = []
        for kind in kinds:
            level = noise.get(dataset, {}).get(kind, {}).get("dice")
            columns.append(kind + (f"\nmasks {level:.2f}" if level is not None and kind != "clean" else ""))
        ax.set_xticks(range(len(kinds)), columns, fontsize=8.5)
        ax.set_yticks(range(len(methods)), methods, fontsize=9)
        ax.tick_params(length=0)
        ax.set_title((labels or {}).get(dataset, dataset), fontsize=10, loc="left")
        for spine in ax.spines.values():
            spine.set_visible(False)
    note = ("Test Dice against the clean masks, mean ± std over seeds; hatched: not run; 'masks': the training "
            "masks' Dice to the clean ones.")
    if compare:
        note += (f"\nRed frame: {compare[0]} beats {compare[1]} by more than the std of their paired difference over "
                 "seeds (clean masks: loses at most 0.005).")
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01, label="Dice")
    fig.supxlabel(note, fontsize=7.5, x=0.01, ha="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(commands: list[str], table: str, missing: list[str], image: str) -> str:
    """The RESULTS.md section, markers included."""
    lines = [START, "## Noise matrix (issue 27) (`benchmarks/noise_matrix.py`)", "",
             "Test Dice, clDice, precision and sensitivity against the clean test masks (DRIVE: inside the field of "
             "view), mean ± sample std over seeds; the training masks degraded by `labelwise data degrade`, their "
             "Dice to the clean ones in brackets; wall minutes per run on the 2-core machine.", "", "```bash",
             *(commands or ["python benchmarks/noise_matrix.py"]), "```", "", table, "",
             f"![noise matrix]({image})", "", "Missing cells: " + ("none." if not missing else ""),
             *(f"- {line}" for line in missing), END]
    return "\n".join(lines) + "\n"


def replace_section(text: str, new: str) -> str:
    """``text`` with the part between the markers (included) replaced by ``new``, or ``new`` appended."""
    start, end = text.find(START), text.find(END)
    if start >= 0 and end > start:
        tail = text[end + len(END):]
        return text[:start] + new.rstrip("\n") + ("\n" + tail.lstrip("\n") if tail.strip() else "\n")
    return text.rstrip("\n") + "\n\n" + new


def report(results: dict, args) -> None:
    """Print the table; write it and the figure under OUT, or into RESULTS.md and benchmarks/ (--write-results)."""
    names = {n: dataset_key(n, args) for n in args.datasets}
    datasets = list(names.values())
    kinds = [kind_key(k, args) for k in args.kinds]
    steps = args.steps
    if steps is None:  # each cell at its default steps: today's config's when the config still exists
        steps = {}
        for name, key in names.items():
            for method in args.methods:
                path = config_path(method, DATASETS[name].dim)
                steps[key, method] = run_steps(name, method, args) if path.is_file() else None
    cells = summarise(results, datasets, kinds, args.methods, args.seeds, steps)
    noise = results.get("noise", {})
    table = markdown_table(cells, noise, datasets, kinds, args.methods, tuple(args.compare))
    missing = missing_cells(cells)
    labels = {key: DATASETS[name].label + (f" [{key}]" if key != name else "") for name, key in names.items()}
    print("\n" + table)
    print("\nMissing cells:" + (" none" if not missing else ""))
    for line in missing:
        print(f"  {line}")
    if args.write_results:
        figure = heat_map(cells, noise, datasets, kinds, args.methods, FIGURE, tuple(args.compare), labels)
        text = RESULTS_MD.read_text() if RESULTS_MD.is_file() else "# Benchmark results\n"
        RESULTS_MD.write_text(replace_section(text, section(results.get("commands", []), table, missing,
                                                            FIGURE.name)))
        print(f"\nwrote the section of {RESULTS_MD.relative_to(REPO)} and {figure.relative_to(REPO)}")
    else:
        figure = heat_map(cells, noise, datasets, kinds, args.methods, args.out / "noise_matrix.png",
                          tuple(args.compare), labels)
        (args.out / "noise_matrix.md").write_text(section(results.get("commands", []), table, missing,
                                                          figure.name))
        print(f"\nwrote {args.out / 'noise_matrix.md'} and {figure}")


# --- command line -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"rows of METHODS ({', '.join(METHODS)}), or METHOD-TAG variants (--table-only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the data set's, vessels3d "
                        "600, else each config's own)")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="METHOD:key=value",
                        help="config override of one method (needs --tag)")
    parser.add_argument("--tag", default="", help="names the variant made by --set: its key is METHOD-TAG")
    parser.add_argument("--strength", dest="strength_options", action="append", default=[], metavar="KIND=VALUE",
                        help="degrade --strength of a kind on every data set (not scaled; keyed KIND@VALUE)")
    parser.add_argument("--no-scale-strength", dest="scale_strength", action="store_false",
                        help="drive175: keep the pixel defaults of thin, erode, dilate (default: times 1.75)")
    parser.add_argument("--compare", nargs=2, default=["noisy", "unet-mss"], metavar=("A", "B"),
                        help="the paired difference A - B reported per kind")
    parser.add_argument("--no-share-training", dest="share_training", action="store_false",
                        help="train unet-mss itself even where noisy's config differs from it only in the threshold "
                        "(by default its cells are noisy's training scored at 0.5: same seed, same weights)")
    parser.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "drive")
    parser.add_argument("--vessels-n", type=int, default=11, help="vessels3d: cases (6/2/3 for 11)")
    parser.add_argument("--vessels-shape", type=int, default=96, help="vessels3d: size per axis")
    parser.add_argument("--limit-test", type=int, default=None, help="smoke test: only the first N test cases "
                        "(keyed apart: DATASET-testN)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-noise-matrix")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table and figure from results.json")
    parser.add_argument("--write-results", action="store_true", help="write the section of benchmarks/RESULTS.md "
                        "and benchmarks/noise_matrix.png")
    args = parser.parse_args(argv)
    args.sets = {}
    for option in args.set_options:
        method, sep, value = option.partition(":")
        if not sep or method not in METHODS or "=" not in value:
            parser.error(f"--set {option!r}: expected METHOD:key=value with METHOD one of {', '.join(METHODS)}")
        args.sets.setdefault(method, []).append(value)
    if args.sets and not args.tag:
        parser.error("--set changes a method's recipe: give --tag NAME so its results are keyed METHOD-NAME")
    tag = args.tag.strip("-")
    args.methods = [f"{m}-{tag}" if m in args.sets else m for m in args.methods]
    if not args.table_only:
        unknown = [m for m in args.methods if base_method(m) not in METHODS]
        if unknown:
            parser.error(f"--methods: {', '.join(unknown)} not in METHODS ({', '.join(METHODS)})")
    args.strengths = {}
    for option in args.strength_options:
        kind, sep, value = option.partition("=")
        try:
            args.strengths[kind] = float(value)
        except ValueError:
            sep = ""
        if not sep or kind not in KINDS or kind == "clean":
            parser.error(f"--strength {option!r}: expected KIND=NUMBER with KIND one of {', '.join(KINDS[1:])}")
    args.compare = [f"{m}-{tag}" if m in args.sets else m for m in args.compare]
    return args


def load_results(results_path: Path) -> dict:
    """The committed ledger (benchmarks/noise_matrix.json) merged with OUT/results.json: a cell measured on an
    earlier machine is not trained again, and OUT's rows win where both have a key."""
    ledger = json.loads(LEDGER.read_text()) if LEDGER.is_file() else {}
    local = json.loads(results_path.read_text()) if results_path.is_file() else {}
    merged = {**ledger, **local}
    merged["commands"] = list(dict.fromkeys([*ledger.get("commands", []), *local.get("commands", [])]))
    merged["noise"] = {d: {**ledger.get("noise", {}).get(d, {}), **local.get("noise", {}).get(d, {})}
                       for d in {*ledger.get("noise", {}), *local.get("noise", {})}}
    return merged


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = load_results(results_path)
    failed = []
    if not args.table_only:
        if any(DATASETS[n].dim == 2 for n in args.datasets) and not (args.drive / "training" / "images").is_dir():
            raise SystemExit(f"{args.drive}: DRIVE not found (see ../shared/data/drive/SOURCES.md)")
        command = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-results"]
        args.write_command = shlex.join(["python", "benchmarks/noise_matrix.py", *command])
        failed = run_matrix(args, results, results_path)
    report(results, args)
    if args.write_results:
        LEDGER.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {LEDGER.relative_to(REPO)}")
    if failed:
        print(f"\n{len(failed)} run(s) failed (missing; rerun the same command to retry): " + ", ".join(failed))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
