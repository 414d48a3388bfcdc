"""Multi-task pretraining ablation: pretrain a ResNet-10 (``--model vit``: a small ViT) on PatchML composites of
scikit-learn's digits (tags = the digits present) with each single task, each pair, all three, and not at all; then a
linear probe (frozen backbone) and a fine-tune on digit classification with 10 labels per class. Mean ± std of the
test accuracy over seeds, and pretraining time per step relative to a supervised step on the same images and batch.

Per seed: a downstream split of the 1797 digits (upsampled to 16 x 16; 70/10/20 stratified, 10 labelled per class
in the training part) and its own PatchML set (``--images`` composites of 2 x 2 cells, 1-4 digits each, 16 x 16)
built from the training part's digits only, so no validation or test digit is seen (or tagged) in pretraining.
Models: ResNet-10 widths 16-128 with batch norm; ViT hidden 64, 4 blocks, 4 heads, 4 x 4 patches (16 tokens), the
same optimiser settings (not tuned for either). Pretraining: ``--steps`` steps, batch 64, AdamW 1e-3 with cosine
decay; downstream: ``--tune-steps`` steps, batch 32, AdamW 1e-3 (fine-tune) or 1e-2 (linear probe). Nothing is tuned
on the test split.

    python benchmarks/pretrain.py [--seeds 0 1 2] [--steps 500] [--tune-steps 300] [--images 3000]
                                  [--variants none mim ...] [--model resnet10|vit] [--out runs/bench-pretrain]

Real images (``--data breast`` or ``retina``: BreastMNIST or RetinaMNIST from ``../shared/data/medmnist``,
development only): pretraining on the set's training images, masked image modelling and contrastive on all of them,
the tags (the one-hot class) only on ``--per-class`` labelled images per class (drawn per seed); the downstream runs
(fine-tune, linear probe, scratch) see the same labelled images, and are scored on the test split (AUC, macro
one-vs-rest for RetinaMNIST, and accuracy). Images resized to 32 x 32 (the ResNet's output stride 8 divides it),
ResNet-10 widths 16-128 with group norm (``--model resnet10-gn``, the semi-supervised benchmark's).

    python benchmarks/pretrain.py --data breast --model resnet10-gn --steps 600 --tune-steps 400 \
        --variants none multilabel+contrastive multilabel+mim+contrastive --out runs/bench-pretrain-breast
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
TASKS = ("multilabel", "mim", "contrastive")
VARIANTS = ["none"] + ["+".join(c) for r in (1, 2, 3) for c in itertools.combinations(TASKS, r)]
MODELS = {
    "resnet10": {"name": "resnet10", "channels": [16, 32, 64, 128], "norm": "batch"},
    "resnet10-gn": {"name": "resnet10", "channels": [16, 32, 64, 128], "norm": "group"},
    "vit": {"name": "vit", "channels": [64], "layers": [4], "heads": [4], "patch_size": 4},  # 16 tokens of 4 x 4
}


def step_time(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["time"]) for r in records if r.get("split") == "train"]
    per_step = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in itertools.pairwise(train) if s1 > s0]
    return statistics.median(per_step) if per_step else float("nan")


def run(raw: dict, run_dir: Path):
    from labelwise.config import load_config
    from labelwise.training import train

    shutil.rmtree(run_dir, ignore_errors=True)  # not recorded: whatever is there is a stale or killed attempt
    result = train(load_config(raw), run_dir)
    if result.status != "completed":
        raise RuntimeError(f"{run_dir}: {result.status}: {result.message}")
    return result


def make_data(folder: Path, seed: int, images: int) -> tuple[Path, Path]:
    """The PatchML pretraining set (tags as an (N, 10) label) and the downstream digits set."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from labelwise.data.npz import save_npz
    from labelwise.data.synth import make_patchml

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    label = digits.target.astype(np.int64)
    rows = np.arange(len(label))
    train, rest = train_test_split(rows, test_size=0.3, stratify=label, random_state=seed)
    val, test = train_test_split(rest, test_size=2 / 3, stratify=label[rest], random_state=seed)
    for i in train:  # the pretraining pool: the training part's digits only
        (folder / "source" / str(label[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / "source" / str(label[i])
                                                                                     / f"{i:04d}.png")
    patchml = make_patchml(source=folder / "source", n=images, seed=seed)
    pre = save_npz(folder / "patchml.npz", {"image": patchml["image"], "label": patchml["labels"].astype(np.int64),
                                            "split": patchml["split"], "class_names": patchml["class_names"]})
    size = patchml["image"].shape[-1]
    image = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False).numpy()
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(train[label[train] == c], 10, replace=False) for c in range(10)])
    keep = np.concatenate([chosen, val, test])
    split = np.array(["train"] * len(chosen) + ["val"] * len(val) + ["test"] * len(test))
    down = save_npz(folder / "digits.npz", {"image": image[keep], "label": label[keep], "split": split})
    return pre, down


def make_medmnist_data(folder: Path, seed: int, source: Path, per_class: int) -> tuple[Path, Path]:
    """The pretraining set (every image; one-hot tags on ``per_class`` labelled training images per class and on
    val/test, which the k-NN monitor scores) and the downstream set (those labelled training images, val, test) of
    a MedMNIST file, as labelwise reads it."""
    from labelwise.data.npz import load_npz, save_npz

    arrays = load_npz(source)
    split, label = arrays["split"].astype(str), arrays["label"]
    train = np.flatnonzero(split == "train")
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(train[label[train] == c], per_class, replace=False)
                             for c in np.unique(label[train])])
    labelled = split != "train"
    labelled[chosen] = True
    tags = np.eye(int(label.max()) + 1, dtype=np.int64)[label]
    pre = save_npz(folder / "pretrain.npz", {"image": arrays["image"], "label": tags, "split": split,
                                             "labelled": labelled})
    keep = np.flatnonzero(labelled)
    down = save_npz(folder / "downstream.npz", {"image": arrays["image"][keep], "label": label[keep],
                                                "split": split[keep]})
    return pre, down


def pretrain_config(path: Path, variant: str, seed: int, steps: int, model: dict, size: list | None = None) -> dict:
    tasks = {t: 1.0 for t in variant.split("+")}
    return {
        "name": f"pre-{variant.replace('+', '-')}", "seed": seed, "method": {"name": "pretrain", "tasks": tasks},
        "data": {"path": str(path), "task": "classification", "batch_size": 64, "eval_batch_size": 256,
                 # real images: 16 tagged images per batch (the labelled set may hold fewer than half a batch)
                 **({"image_size": size, "labelled_per_batch": 16} if size else {})},
        "model": model,
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "scheduler": "cosine", "warmup_steps": 20},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 25, "val_every": 0},
    }


def supervised_tags_config(path: Path, seed: int, steps: int, model: dict, size: list | None = None) -> dict:
    """The supervised reference step: multi-label BCE on the same images and batch."""
    raw = pretrain_config(path, "multilabel", seed, steps, model, size)
    return {**raw, "name": "pre-supervised", "method": "supervised"}


def downstream_config(path: Path, pretrained: Path | None, probe: bool, seed: int, steps: int, model: dict,
                      size: list | None = None, batch: int = 32) -> dict:
    model = {**model, "freeze_backbone": probe}  # no pretraining: a probe of the random backbone
    if pretrained is not None:
        model["init_from"] = str(pretrained)
    return {
        "name": "probe" if probe else "finetune", "seed": seed, "method": "supervised",
        "data": {"path": str(path), "task": "classification", "batch_size": batch, "eval_batch_size": 256,
                 **({"image_size": size} if size else {})},
        "model": model,
        "optimizer": {"name": "adamw", "lr": 1e-2 if probe else 1e-3, "weight_decay": 1e-4},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 25, "val_every": 0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--tune-steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--model", default="resnet10", choices=sorted(MODELS))
    parser.add_argument("--data", choices=("digits", "breast", "retina"), default="digits")
    parser.add_argument("--per-class", type=int, default=10, help="real images: labelled training images per class")
    parser.add_argument("--medmnist-dir", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-pretrain")
    args = parser.parse_args()
    model = MODELS[args.model]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results: dict = json.loads(path.read_text()) if path.is_file() else {}

    real = args.data != "digits"
    size = [32, 32] if real else None
    batch = min(32, args.per_class * (2 if args.data == "breast" else 5)) if real else 32
    for seed in args.seeds:
        if real:
            source = args.medmnist_dir / f"{args.data}mnist.npz"
            pre_data, down_data = make_medmnist_data(args.out / f"data-{seed}", seed, source, args.per_class)
        else:
            pre_data, down_data = make_data(args.out / f"data-{seed}", seed, args.images)
        key = f"supervised-step/{seed}"
        if key not in results and not real:  # the step-time reference (digits; the real table has no time column)
            run(supervised_tags_config(pre_data, seed, min(args.steps, 100), model, size),
                args.out / f"seed{seed}" / "supervised")
            results[key] = {"step_time": step_time(args.out / f"seed{seed}" / "supervised")}
        for variant in args.variants:
            key = f"{variant}/{seed}"
            if key in results:
                continue
            started = time.perf_counter()
            folder = args.out / f"seed{seed}" / variant
            pretrained, entry = None, {}
            if variant != "none":
                result = run(pretrain_config(pre_data, variant, seed, args.steps, model, size), folder / "pretrain")
                pretrained = result.run_dir
                entry["step_time"] = step_time(pretrained)
                entry["knn_accuracy"] = result.test.get("knn_accuracy")
            for probe in (True, False):
                result = run(downstream_config(down_data, pretrained, probe, seed, args.tune_steps, model, size, batch),
                             folder / ("probe" if probe else "finetune"))
                entry["probe" if probe else "finetune"] = result.test["accuracy"]
                if real:
                    entry[("probe" if probe else "finetune") + "_auc"] = result.test.get("auc")
            entry["wall"] = time.perf_counter() - started
            results[key] = entry
            print(key, {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}, flush=True)
            path.write_text(json.dumps(results, indent=2))

    if real:
        print_real(results, args)
        return
    print("\nmean ± std over seeds (digits test accuracy, 10 labels per class); pretraining time per step relative "
          "to a supervised multi-label step on the same images")
    print("| pretraining | linear probe | fine-tune | k-NN (tags, test) | s/step | x supervised |")
    print("|---|---|---|---|---|---|")
    base = statistics.median([results[f"supervised-step/{s}"]["step_time"] for s in args.seeds
                              if f"supervised-step/{s}" in results])
    for variant in args.variants:
        rows = [results[f"{variant}/{s}"] for s in args.seeds if f"{variant}/{s}" in results]
        if not rows:
            continue

        def cell(key: str, rows: list[dict] = rows) -> str:
            values = [r[key] for r in rows if r.get(key) is not None]
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"

        times = [r["step_time"] for r in rows if "step_time" in r]
        step = statistics.median(times) if times else None
        ratio = f"{step / base:.2f}" if step else "-"
        print(f"| {variant} | {cell('probe')} | {cell('finetune')} | {cell('knn_accuracy')} | "
              f"{step:.3f} | {ratio} |" if step else f"| {variant} | {cell('probe')} | {cell('finetune')} | - | - | - |")


def print_real(results: dict, args) -> None:
    """The real-image table: test AUC and accuracy of the probe and the fine-tune (mean ± sample std over seeds),
    and the fine-tune's AUC minus scratch's on the same seed (scratch: ``none``'s fine-tune, a random start)."""

    def cell(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        return f"{np.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    print(f"\n{args.data}: {args.per_class} labels per class, mean ± sample std over seeds {args.seeds} (test split);"
          " paired: the fine-tune's AUC minus scratch's on the same seed")
    print("| pretraining | probe AUC | fine-tune AUC | probe accuracy | fine-tune accuracy | fine-tune AUC, paired |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants:
        rows = {s: results.get(f"{variant}/{s}") for s in args.seeds}
        rows = {s: r for s, r in rows.items() if r}
        if not rows:
            continue
        scratch = {s: results.get(f"none/{s}", {}).get("finetune_auc") for s in rows}
        paired = [r["finetune_auc"] - scratch[s] for s, r in rows.items() if scratch[s] is not None]
        cells = [cell([r.get(k) for r in rows.values()]) for k in ("probe_auc", "finetune_auc", "probe", "finetune")]
        print(f"| {'none (scratch)' if variant == 'none' else variant} | {' | '.join(cells)} | {cell(paired)} |")


if __name__ == "__main__":
    main()
