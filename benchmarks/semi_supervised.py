"""Semi-supervised classification: every method x seeds on (a) the synthetic RNFLT maps with 10% and 50% of the
training labels (glaucoma detection, test AUC and ES-AUC by race) and (b) scikit-learn's handwritten digits with 5
labels per class and the rest unlabelled (test accuracy and macro AUC). Also the training time per step of each
method relative to ``supervised`` (median over seeds of the per-run median step time).

Every run uses the shipped config's recipe (configs/pseudo-supervisor-detection.yaml: AdamW, predictor lr 4e-5,
policy lr 1e-4, batch 12 with 6 labelled) and every method's default options; nothing is tuned on the test split.
CPU-sized: maps resized to ``--size`` (default 32, the paper uses 224), ResNet-10, ``--steps`` steps. Each seed
draws its own synthetic patients and its own split. A third label share, 3% (about 7 labelled patients, batch 6 with
3 labelled), was added after the first seed showed supervised training alone at AUC 1.0 with 10% of the labels.
``supervised`` sees the labelled training samples only; the pseudo supervisor also uses the validation labels, for
its reward (as the paper's method does; the baselines use validation data for nothing).

(The issue asked for ``benchmarks/ssl.py``; a file of that name shadows Python's ``ssl`` module, which torch
imports, for every script run from this folder, so this one is named after what it measures.)

    python benchmarks/semi_supervised.py [--seeds 0 1 2] [--steps 300] [--patients 400] [--size 32] [--digits-steps 300]
                                         [--only maps|digits|medmnist] [--methods ...] [--norm batch|group]
                                         [--out runs/bench-ssl]

    python benchmarks/semi_supervised.py --only digits --methods pseudo_supervisor:warmup=0   # one option's effect

Real images (``--only medmnist``): BreastMNIST (ultrasound, binary) and RetinaMNIST (fundus, 5 grades) from
``../shared/data/medmnist`` (development only, never shipped), read as they are downloaded (labelwise reads the
MedMNIST layout), with 10 and 25 labelled training images per class (``--per-class``; drawn per seed) and the rest of
the training split unlabelled. The recipe: ResNet-10 with widths 16-128 and group norm, images resized to 32 x 32,
Adam 1e-3, batch 32, ``--medmnist-steps`` steps. AUC is macro one-vs-rest for RetinaMNIST. The methods that take the
``augment:`` section (supervised, pseudo-label, the pseudo supervisor) train with ``augment: {}`` (the task's
default, for classification the ``classification`` preset); ``supervised_noaug`` is supervised without augmentation
and ``supervised_segaug`` supervised with the segmentation preset; mean teacher and FixMatch draw their own views.

    python benchmarks/semi_supervised.py --only medmnist [--medmnist breast retina] [--per-class 10 25]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = ("supervised", "pseudo_label", "mean_teacher", "fixmatch", "pseudo_supervisor", "pseudo_supervisor_paper")
#: supervised with another augmentation than the task's default: none, the segmentation preset (real images only)
AUGMENT_VARIANTS = {"supervised_noaug": None, "supervised_segaug": {"preset": "segmentation"}}
MEDMNIST = {"breast": "breastmnist.npz", "retina": "retinamnist.npz"}


def method_overrides(method: str) -> list[str]:
    """``pseudo_supervisor_paper`` is the pseudo supervisor with ``variant: paper`` (the public code's recipe);
    ``NAME:key=value,key=value`` is method NAME with those ``method.`` options (an ablation, e.g.
    ``pseudo_supervisor:warmup=0``)."""
    name, _, options = method.partition(":")
    chosen = ["method=pseudo_supervisor", "method.variant=paper"] if name == "pseudo_supervisor_paper" \
        else ["method=supervised"] if name in AUGMENT_VARIANTS else [f"method={name}"]
    return [*chosen, *(f"method.{o}" for o in options.split(",") if o)]


def method_name(text: str) -> str:
    """argparse type of ``--methods``: a known method, optionally with ``:key=value,...`` options."""
    name, _, options = text.partition(":")
    if name not in (*METHODS, *AUGMENT_VARIANTS) or (options and not all("=" in o for o in options.split(","))):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(METHODS)}, optionally followed by "
                                         ":key=value,... (method options)")
    return text


def step_time(run_dir: Path) -> float:
    """Median seconds per training step between consecutive train log records."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["time"]) for r in records if r.get("split") == "train"]
    per_step = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in itertools.pairwise(train) if s1 > s0]
    return statistics.median(per_step) if per_step else float("nan")


def run(config_path: Path | dict, overrides: list[str], run_dir: Path) -> dict:
    from labelwise.config import load_config
    from labelwise.training import train

    config = load_config(config_path, overrides)
    shutil.rmtree(run_dir, ignore_errors=True)  # not recorded: whatever is there is a stale or killed attempt
    result = train(config, run_dir)
    if result.status != "completed":
        raise RuntimeError(f"{run_dir}: {result.status}: {result.message}")
    evaluation = json.loads((run_dir / "predictions" / "test_evaluation.json").read_text())
    return {"evaluation": evaluation, "step_time": step_time(run_dir)}


def make_maps(folder: Path, patients: int, seed: int, labelled: float) -> Path:
    from labelwise.data.synth.rnflt import make_patient, patient_seed, save_patient
    from labelwise.data.table import write_harvard_table

    if not (folder / f"data_{patients:04d}.npz").is_file():
        for i in range(patients):
            save_patient(folder, i, make_patient(patient_seed(100 + seed, i)))
    return write_harvard_table(folder, folder / f"table-{labelled:g}.csv", val=0.15, test=0.25, labelled=labelled,
                               seed=seed)


def make_digits(path: Path, seed: int, per_class: int = 5, size: int = 16) -> Path:
    """scikit-learn's 1797 digits, upsampled to size x size, split 70/10/20 (stratified), ``per_class`` labelled
    training images per class, the rest of the training split unlabelled."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from labelwise.data.npz import save_npz

    digits = load_digits()
    image = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False).numpy()
    label = digits.target.astype(np.int64)
    rows = np.arange(len(label))
    train, rest = train_test_split(rows, test_size=0.3, stratify=label, random_state=seed)
    val, test = train_test_split(rest, test_size=2 / 3, stratify=label[rest], random_state=seed)
    split = np.empty(len(label), dtype="<U5")
    split[train], split[val], split[test] = "train", "val", "test"
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(label), dtype=bool)
    for c in range(10):
        labelled[rng.choice(train[label[train] == c], per_class, replace=False)] = True
    labelled[val] = labelled[test] = True
    save_npz(path, {"image": image, "label": label, "split": split, "labelled": labelled,
                    "class_names": np.array([str(c) for c in range(10)])})
    return path


def make_medmnist(source: Path, path: Path, seed: int, per_class: int) -> Path:
    """The MedMNIST file ``source`` as labelwise reads it, with ``per_class`` labelled training images per class
    (drawn with ``seed``) and the rest of the training split unlabelled, saved at ``path``."""
    from labelwise.data.npz import load_npz, save_npz

    arrays = load_npz(source)
    split, label = arrays["split"].astype(str), arrays["label"]
    train = np.flatnonzero(split == "train")
    rng = np.random.default_rng(seed)
    labelled = split != "train"
    for c in np.unique(label[train]):
        rows = train[label[train] == c]
        labelled[rng.choice(rows, min(per_class, len(rows)), replace=False)] = True
    save_npz(path, {**arrays, "labelled": labelled})
    return path


def medmnist_config(path: Path, method: str, seed: int, steps: int, labelled: int) -> dict:
    """The real-image recipe (module docstring) for ``method``: the task's augmentation default for the methods that
    take an ``augment:`` section, the variant's for ``supervised_noaug`` / ``supervised_segaug``. Supervised training
    sees only the ``labelled`` training images: its batch is at most that many."""
    from labelwise.methods import METHODS as REGISTRY

    name = method.partition(":")[0]
    supervised = name in AUGMENT_VARIANTS or name == "supervised"
    config = {
        "name": "medmnist", "seed": seed, "method": "supervised",
        "data": {"path": str(path), "task": "classification", "batch_size": min(32, labelled) if supervised else 32,
                 "eval_batch_size": 256, "image_size": [32, 32]},
        "model": {"name": "resnet10", "channels": [16, 32, 64, 128], "norm": "group"},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 25, "val_every": 0},
    }
    if name in AUGMENT_VARIANTS:
        if AUGMENT_VARIANTS[name] is not None:
            config["augment"] = AUGMENT_VARIANTS[name]
    elif REGISTRY["pseudo_supervisor" if name == "pseudo_supervisor_paper" else name].augments:
        config["augment"] = {}
    return config


def digits_config(path: Path, method: str, seed: int, steps: int) -> dict:
    return {
        "name": "digits", "seed": seed, "method": method,
        "data": {"path": str(path), "task": "classification", "batch_size": 32, "labelled_per_batch": 8,
                 "eval_batch_size": 256},
        "model": {"name": "resnet10"},
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 25, "val_every": 0},
    }


def summary(values: list[float]) -> str:
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {statistics.stdev(values):.3f}"  # the sample std, as benchmarks/drive.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--digits-steps", type=int, default=300)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5, 0.03])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), type=method_name,
                        help="methods to run; NAME:key=value,... adds method options (an ablation), "
                             "e.g. pseudo_supervisor:warmup=0")
    parser.add_argument("--medmnist", nargs="+", default=list(MEDMNIST), choices=list(MEDMNIST))
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--medmnist-steps", type=int, default=400)
    parser.add_argument("--medmnist-dir", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    parser.add_argument("--only", choices=("maps", "digits", "medmnist"))
    parser.add_argument("--norm", choices=("batch", "group"), default="batch",
                        help="model.norm of every run (group: no batch statistics over the small labelled and "
                             "unlabelled parts of a batch)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-ssl")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results: dict = json.loads(results_path.read_text()) if results_path.is_file() else {}

    settings = [f"maps-{f:g}" for f in args.fractions] if args.only in (None, "maps") else []
    settings += ["digits-5"] if args.only in (None, "digits") else []
    if args.only in (None, "medmnist"):
        missing = [n for n in args.medmnist if not (args.medmnist_dir / MEDMNIST[n]).is_file()]
        if missing:
            print(f"-- MedMNIST skipped: {', '.join(MEDMNIST[n] for n in missing)} not in {args.medmnist_dir}")
        settings += [f"{n}-{k}" for n in args.medmnist if n not in missing for k in args.per_class]
    for seed in args.seeds:
        for setting in settings:
            for method in args.methods:
                key = f"{setting}/{method}/{seed}"
                if key in results:
                    continue
                run_dir = args.out / setting / method / f"seed{seed}"
                started = time.perf_counter()
                if setting.startswith("maps"):
                    table = make_maps(args.out / f"maps-data-{seed}", args.patients, seed, float(setting[5:]))
                    overrides = [*method_overrides(method), f"seed={seed}", f"data.manifest={table}",
                                 f"data.image_size=[{args.size},{args.size}]", "model.name=resnet10",
                                 f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}",
                                 "trainer.val_every=0", "data.attributes=[race,male]", f"model.norm={args.norm}"]
                    if float(setting[5:]) < 0.1:  # fewer labelled patients than a batch of 12: batch 6, 3 labelled
                        overrides += ["data.batch_size=6", "data.labelled_per_batch=3"]
                    out = run(REPO / "configs" / "pseudo-supervisor-detection.yaml", overrides, run_dir)
                elif setting.startswith(tuple(MEDMNIST)):
                    name, per_class = setting.split("-")
                    path = make_medmnist(args.medmnist_dir / MEDMNIST[name], args.out / f"{setting}-{seed}.npz", seed,
                                         int(per_class))
                    with np.load(path) as data:
                        labelled = int((data["labelled"] & (data["split"] == "train")).sum())
                    out = run(medmnist_config(path, method, seed, args.medmnist_steps, labelled),
                              [*method_overrides(method)], run_dir)
                else:
                    path = make_digits(args.out / f"digits-{seed}.npz", seed)
                    out = run(digits_config(path, "supervised", seed, args.digits_steps),
                              [*method_overrides(method), f"model.norm={args.norm}"], run_dir)
                e = out["evaluation"]
                es_auc = e.get("es_auc", {})
                results[key] = {"auc": e["auc"], "accuracy": e["accuracy"], "es_auc_race": es_auc.get("race"),
                                "es_auc_male": es_auc.get("male"), "step_time": out["step_time"],
                                "wall": time.perf_counter() - started}
                print(key, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[key].items()}, flush=True)
                results_path.write_text(json.dumps(results, indent=2))

    print("\nmean ± sample std over seeds (test split); the paired columns: the method minus supervised on the same "
          "seed; time per step relative to supervised (median over seeds)")
    for setting in settings:
        print(f"\n{setting}")
        print("| method | AUC | accuracy | ES-AUC race | ES-AUC male | AUC, paired | accuracy, paired | s/step | "
              "x supervised |")
        print("|---|---|---|---|---|---|---|---|---|")
        for method in args.methods:
            pairs = [(results.get(f"{setting}/{method}/{s}"), results.get(f"{setting}/supervised/{s}"))
                     for s in args.seeds]
            rows = [r for r, _ in pairs if r]
            ratios = [r["step_time"] / b["step_time"] for r, b in pairs if r and b]
            cells = [summary([r[k] for r in rows]) for k in ("auc", "accuracy", "es_auc_race", "es_auc_male")]
            cells += [summary([r[k] - b[k] for r, b in pairs if r and b]) for k in ("auc", "accuracy")]
            step = statistics.median([r["step_time"] for r in rows]) if rows else float("nan")
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "n/a"
            print(f"| {method} | {' | '.join(cells)} | {step:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
