"""Pretraining on volumes, then transfer to 3D segmentation: a Swin encoder (MONAI's, as SwinUNETR builds it)
pretrained with SimMIM (mask token) + contrastive views on unlabelled 3D shapes, then a SwinUNETR trained on a
different set of 3D shapes (84 labelled training volumes at the default --n), from that encoder or from scratch.
Mean ± std over seeds of the test Dice, and time per step of pretraining relative to a segmentation step.

Per seed: pretraining volumes ``make_shapes(n=--pretrain-n, size 32, dim 3, seed=100 + seed)`` (their classes only
feed the k-NN monitor), downstream volumes ``make_shapes(n=--n, seed=seed)`` (70/15/15 split), SwinUNETR feature
size 12, heads [3, 3, 6, 12], group-norm decoder (instance norm fails on its 1^3 bottleneck at 32^3); pretraining
``--steps`` steps (batch 8, AdamW 5e-4, cosine, mask_patch 8), segmentation ``--tune-steps`` steps (batch 4, AdamW
5e-4, cosine), the same for both starts. Nothing is tuned on the test split. A GPU run: on 2 CPU cores a pretraining
step takes about 7 s.

    python benchmarks/pretrain_3d.py [--seeds 0 1 2] [--steps 300] [--tune-steps 300] [--n 120] [--pretrain-n 600]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from pretrain import REPO, run, step_time

MODEL = {"name": "swin_unetr", "channels": [12], "heads": [3, 3, 6, 12]}


def pretrain_config(seed: int, steps: int, n: int) -> dict:
    return {
        "name": "pre-swin-3d", "seed": seed,
        "method": {"name": "pretrain", "tasks": {"mim": 1.0, "contrastive": 1.0}, "mask_patch": 8},
        "data": {"synth": {"kind": "shapes", "n": n, "size": 32, "dim": 3, "num_classes": 3, "seed": 100 + seed},
                 "task": "classification", "batch_size": 8, "eval_batch_size": 32},
        "model": MODEL,
        "optimizer": {"name": "adamw", "lr": 5e-4, "weight_decay": 0.05, "scheduler": "cosine", "warmup_steps": 20},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 10, "val_every": 0},
    }


def segment_config(seed: int, steps: int, n: int, init_from: Path | None) -> dict:
    model = {**MODEL, "norm": "group", **({"init_from": str(init_from)} if init_from else {})}
    return {
        "name": "seg-swin-3d", "seed": seed, "method": "supervised",
        "data": {"synth": {"kind": "shapes", "n": n, "size": 32, "dim": 3, "num_classes": 3, "seed": seed},
                 "task": "segmentation", "batch_size": 4},
        "model": model,
        "optimizer": {"name": "adamw", "lr": 5e-4, "weight_decay": 1e-4, "scheduler": "cosine", "warmup_steps": 10},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 10, "val_every": 0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tune-steps", type=int, default=300)
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--pretrain-n", type=int, default=600)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-pretrain-3d")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results: dict = json.loads(path.read_text()) if path.is_file() else {}
    for seed in args.seeds:
        if str(seed) in results:
            continue
        folder = args.out / f"seed{seed}"
        pre = run(pretrain_config(seed, args.steps, args.pretrain_n), folder / "pretrain")
        entry = {"pretrain_step": step_time(pre.run_dir), "knn_accuracy": pre.test.get("knn_accuracy")}
        for start, init in (("scratch", None), ("pretrained", pre.run_dir)):
            result = run(segment_config(seed, args.tune_steps, args.n, init), folder / start)
            entry[start] = result.test["dice"]
            entry[f"{start}_step"] = step_time(result.run_dir)
        results[str(seed)] = entry
        print(seed, {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}, flush=True)
        path.write_text(json.dumps(results, indent=2))

    rows = [results[str(s)] for s in args.seeds if str(s) in results]
    print("\nmean ± std over seeds: test Dice of SwinUNETR on 3D shapes; s/step (median)")
    print("| start | test Dice | s/step |")
    print("|---|---|---|")
    for start in ("scratch", "pretrained"):
        values = [r[start] for r in rows]
        step = statistics.median(r[f"{start}_step"] for r in rows)
        print(f"| {start} | {np.mean(values):.3f} ± {np.std(values):.3f} | {step:.3f} |")
    pre_step = statistics.median(r["pretrain_step"] for r in rows)
    base = statistics.median(r["scratch_step"] for r in rows)
    knn = [r["knn_accuracy"] for r in rows if r["knn_accuracy"] is not None]
    print(f"pretraining (mim + contrastive): {pre_step:.3f} s/step = {pre_step / base:.2f} x a segmentation step; "
          f"k-NN accuracy of the shape classes {np.mean(knn):.3f} ± {np.std(knn):.3f}")


if __name__ == "__main__":
    main()
