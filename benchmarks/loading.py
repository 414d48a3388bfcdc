"""Data larger than memory (issue 16): labelwise's case cache against MONAI's CacheDataset, and a run's peak memory.

Data: ``--n`` (200) synthetic 128^3 volumes written once under ``--data`` (default /tmp/labelwise-loading) and
reused: int16 NIfTI (.nii.gz) images of a few bright tubes on a noisy background, uint8 masks of the tubes, and a
manifest (``--n - 4`` train, 2 val, 2 test).

Patch loading, each side in its own long-lived process (so each has its own peak resident memory), the processes
driven in turn (labelwise w0, MONAI w0, labelwise w2, MONAI w2, ...; one warm-up round, then ``--repeats``
rounds; medians):
  labelwise  ``load_data`` on the manifest, intensity zscore: the case cache is built once in a fresh folder (time
             reported), then loaded again (a cache hit: time reported); its ``PatchDataset`` (96^3 patches, half
             centred on foreground) through a torch ``DataLoader`` (batch 2, shuffled)
  MONAI      ``CacheDataset`` (``--monai-cache-rate``, default 1) of LoadImaged, EnsureChannelFirstd,
             NormalizeIntensityd (cached: build time reported), then RandCropByPosNegLabeld (96^3, pos 1, neg 1,
             num_samples 1) per sample, through ``monai.data.DataLoader`` (batch 2, shuffled)
  each round: ``--batches`` batches with num_workers 0 and 2 (worker start-up included, both sides alike)
Peak resident memory: ``ru_maxrss`` of each side's process (its loader workers reported apart: they share the
parent's pages, which each counts again).

A run: the peak resident memory of ``labelwise train`` (supervised, U-Net [4, 8, 16], 64^3 patches, batch 2,
2 steps, end-of-run evaluation of the 2 val and 2 test cases and their prediction files) over the same manifest,
its case cache built inside that process (a fresh folder), measured as ``ru_maxrss`` of the child; the issue's goal
is under 2 GiB. For contrast, the peak of reading every case into memory as the loader did before the cache
(``labelwise.data.patches.load_cases`` of all splits; ``--skip-in-memory`` leaves it out).

    python benchmarks/loading.py [--n 200] [--data /tmp/labelwise-loading] [--repeats 3] [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = (128, 128, 128)
PATCH = (96, 96, 96)
WORKERS = (0, 2)


# --- data ----------------------------------------------------------------------------------------------------------


def make_case(seed: int, index: int):
    """(image int16, mask uint8) of case ``index``: 3-6 tubes (radius 2-5 voxels) between random points."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    mask = np.zeros(SHAPE, dtype=bool)
    for _ in range(int(rng.integers(3, 7))):
        a, b = rng.uniform(0, SHAPE[0], 3), rng.uniform(0, SHAPE[0], 3)
        radius = rng.uniform(2, 5)
        low = np.maximum(np.floor(np.minimum(a, b) - radius - 1), 0).astype(int)  # the tube's bounding box
        high = np.minimum(np.ceil(np.maximum(a, b) + radius + 2), SHAPE).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(lo, hi, dtype=np.float32) for lo, hi in zip(low, high)],
                                    indexing="ij"), axis=-1)
        direction = (b - a).astype(np.float32)
        t = np.clip(((grid - a.astype(np.float32)) @ direction) / float(direction @ direction), 0, 1)
        nearest = a.astype(np.float32) + t[..., None] * direction
        mask[tuple(slice(lo, hi) for lo, hi in zip(low, high))] |= ((grid - nearest) ** 2).sum(-1) <= radius**2
    image = rng.normal(100, 20, SHAPE) + 300 * mask
    return np.round(image).astype(np.int16), mask.astype(np.uint8)


def write_data(folder: Path, n: int) -> Path:
    """The manifest of ``n`` cases under ``folder``, written unless already there."""
    from labelwise.data.volumes import write_volume

    manifest = folder / "manifest.csv"
    if manifest.is_file() and len(manifest.read_text().splitlines()) == n + 1:
        return manifest
    rows = ["id,image,label,split"]
    started = time.perf_counter()
    for k in range(n):
        image_path, label_path = folder / "images" / f"case{k:03d}.nii.gz", folder / "labels" / f"case{k:03d}.nii.gz"
        if not (image_path.is_file() and label_path.is_file()):
            image, mask = make_case(0, k)
            write_volume(image_path, image)
            write_volume(label_path, mask)
        split = "train" if k < n - 4 else "val" if k < n - 2 else "test"
        rows.append(f"case{k:03d},images/{image_path.name},labels/{label_path.name},{split}")
        if (k + 1) % 20 == 0:
            print(f"  wrote {k + 1}/{n} cases ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


# --- one side, served in its own process -----------------------------------------------------------------------------


def serve(side: str, manifest: Path, cache: Path, cache_rate: float, batches: int, threads: int) -> None:
    """Set the side up, answer ``run WORKERS`` with the seconds of ``batches`` batches, ``quit`` with the peaks."""
    import torch

    torch.set_num_threads(threads)
    reply = {}
    if side == "labelwise":
        from labelwise.data import load_data
        from labelwise.data.config import DataConfig

        started = time.perf_counter()
        cfg = DataConfig(manifest=manifest, task="segmentation", intensity="zscore", patch_size=list(PATCH),
                         patches_per_volume=100, foreground_ratio=0.5, batch_size=2, cache=cache)
        load_data(cfg)
        reply["build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        dataset = load_data(cfg).split("train")
        reply["reuse_s"] = time.perf_counter() - started

        def loader(workers: int):
            return torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers)
    else:
        from monai.data import CacheDataset, DataLoader
        from monai.transforms import (
            Compose,
            EnsureChannelFirstd,
            LoadImaged,
            NormalizeIntensityd,
            RandCropByPosNegLabeld,
        )

        started = time.perf_counter()
        rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
        files = [{"image": str(manifest.parent / r[1]), "label": str(manifest.parent / r[2])} for r in rows
                 if r[3] == "train"]
        transform = Compose([
            LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"]),
            NormalizeIntensityd(keys="image"),
            RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=PATCH, pos=1, neg=1,
                                   num_samples=1),
        ])
        dataset = CacheDataset(files, transform, cache_rate=cache_rate, progress=False)
        reply["build_s"] = time.perf_counter() - started

        def loader(workers: int):
            return DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers)
    reply["setup_peak_mib"] = peak_mib()
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            print(json.dumps({"peak_mib": peak_mib(), "workers_peak_mib": peak_mib(resource.RUSAGE_CHILDREN)}),
                  flush=True)
            return
        started = time.perf_counter()
        seen = 0
        for i, batch in enumerate(loader(int(command[1]))):
            assert tuple(batch["image"].shape) == (2, 1, *PATCH), batch["image"].shape
            seen += 1
            if i + 1 == batches:
                break
        print(json.dumps({"seconds": time.perf_counter() - started, "batches": seen}), flush=True)


class Side:
    """A served side: a child process and its replies."""

    def __init__(self, side: str, args: argparse.Namespace, manifest: Path):
        command = [sys.executable, __file__, "--serve", side, "--data", str(args.data), "--batches",
                   str(args.batches), "--threads", str(args.threads), "--monai-cache-rate", str(args.monai_cache_rate)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.setup = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the side process ended (exit code {self.process.wait()})")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._reply()


# --- a run's peak memory ---------------------------------------------------------------------------------------------


def train_peak(manifest: Path, folder: Path, threads: int) -> tuple[float, float, dict]:
    """(peak MiB, wall s, summary) of ``labelwise train`` (2 steps) in a child process, cache built inside it."""
    cache, run = folder / "train-cache", folder / "train-run"
    for path in (cache, run):
        shutil.rmtree(path, ignore_errors=True)
    config = folder / "train.yaml"
    config.write_text(f"""name: loading-peak
seed: 0
method: supervised
data: {{manifest: {manifest}, task: segmentation, intensity: zscore, patch_size: [64, 64, 64], batch_size: 2,
       eval_batch_size: 1, patches_per_volume: 10, cache: {cache}}}
model: {{name: unet, channels: [4, 8, 16]}}
trainer: {{max_steps: 2, checkpoint_every: 2, log_every: 1, val_every: 0, precision: 32-true}}
""")
    code = ("import resource, subprocess, sys; "
            f"r = subprocess.run([sys.executable, '-m', 'labelwise', 'train', {str(config)!r}, '--run-dir', "
            f"{str(run)!r}], capture_output=True, text=True); "
            "print(r.stderr[-3000:], file=sys.stderr) if r.returncode else None; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(r.returncode)")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if out.returncode:
        raise RuntimeError(f"labelwise train failed:\n{out.stderr}")
    summary = json.loads((run / "summary.json").read_text())
    return float(out.stdout.split()[-1]), wall, summary


def in_memory_peak(manifest: Path) -> float:
    """Peak MiB of reading every case into memory as the loader did before the cache (all splits, int64 labels)."""
    code = ("import resource, numpy as np; from labelwise.data.manifest import read_manifest; "
            "from labelwise.data.patches import load_cases; "
            f"cases = read_manifest({str(manifest)!r}); "
            "splits = [load_cases([c for c in cases if c.split == s], np.arange(sum(c.split == s for c in cases)), "
            "'zscore') for s in ('train', 'val', 'test')]; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


# --- main ------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of 128^3 volumes")
    parser.add_argument("--data", type=Path, default=Path("/tmp/labelwise-loading"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="batches of 2 patches per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--monai-cache-rate", type=float, default=1.0)
    parser.add_argument("--skip-in-memory", action="store_true", help="leave out the in-memory contrast")
    parser.add_argument("--skip-train", action="store_true", help="leave out the labelwise train run")
    parser.add_argument("--serve", choices=["labelwise", "monai"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    manifest = args.data / "manifest.csv"
    cache = args.data / "bench-cache"
    if args.serve:
        serve(args.serve, manifest, cache, args.monai_cache_rate, args.batches, args.threads)
        return

    args.data.mkdir(parents=True, exist_ok=True)
    manifest = write_data(args.data, args.n)
    shutil.rmtree(cache, ignore_errors=True)  # the labelwise side builds its cache from nothing
    print(f"{args.n} volumes {'x'.join(map(str, SHAPE))} in {args.data}; patches {'x'.join(map(str, PATCH))}, "
          f"batch 2, {args.batches} batches a round, {args.repeats} rounds after a warm-up; {args.threads} threads",
          flush=True)
    sides = {"labelwise": Side("labelwise", args, manifest)}
    sides["MONAI"] = Side("monai", args, manifest)  # started after: the two builds do not compete for the cores
    times: dict[str, list[float]] = {f"{s} w{w}": [] for w in WORKERS for s in sides}
    for r in range(args.repeats + 1):
        for w in WORKERS:
            for name, side in sides.items():
                reply = side.ask(f"run {w}")
                if r:  # round 0 warms up
                    times[f"{name} w{w}"].append(reply["seconds"])
    peaks = {name: side.ask("quit") for name, side in sides.items()}
    for side in sides.values():
        side.process.wait()
    patches = 2 * args.batches
    lw, mo = sides["labelwise"].setup, sides["MONAI"].setup
    print(f"\n| | labelwise (case cache) | MONAI CacheDataset (cache_rate {args.monai_cache_rate:g}) | ratio |")
    print("|---|---|---|---|")
    print(f"| build the cache (labelwise: all {args.n} volumes, to disk; MONAI: the {args.n - 4} training ones, in "
          f"memory) | {lw['build_s']:.1f} s | {mo['build_s']:.1f} s | {lw['build_s'] / mo['build_s']:.2f} |")
    print(f"| load again (cache hit) | {lw['reuse_s']:.2f} s | (held in the process) | |")
    for w in WORKERS:
        a, b = (statistics.median(times[f"{s} w{w}"]) for s in sides)
        print(f"| patches/s, num_workers {w} (median; rounds min-max) | {patches / a:.1f} "
              f"({patches / max(times[f'labelwise w{w}']):.1f}-{patches / min(times[f'labelwise w{w}']):.1f}) | "
              f"{patches / b:.1f} ({patches / max(times[f'MONAI w{w}']):.1f}-{patches / min(times[f'MONAI w{w}']):.1f})"
              f" | {b / a:.2f} |")
    a, b = peaks["labelwise"]["peak_mib"], peaks["MONAI"]["peak_mib"]
    print(f"| peak resident memory of the process | {a:.0f} MiB | {b:.0f} MiB | {a / b:.2f} |")
    a, b = lw["setup_peak_mib"], mo["setup_peak_mib"]
    print(f"| ... of it after building the cache | {a:.0f} MiB | {b:.0f} MiB | {a / b:.2f} |")
    a, b = peaks["labelwise"]["workers_peak_mib"], peaks["MONAI"]["workers_peak_mib"]
    print(f"| largest loader worker (shared pages counted again) | {a:.0f} MiB | {b:.0f} MiB | {a / b:.2f} |")
    print("(ratio: labelwise / MONAI; for patches/s, above 1 is faster)")
    if not args.skip_train:
        peak, wall, summary = train_peak(manifest, args.data, args.threads)
        verdict = "under" if peak < 2048 else "OVER"
        print(f"\nlabelwise train, {args.n} volumes (2 steps, cache built in the process, end-of-run evaluation): "
              f"peak {peak:.0f} MiB ({verdict} the 2 GiB goal), wall {wall:.0f} s, status {summary.get('status')}")
    if not args.skip_in_memory:
        print(f"every case read into memory as before the cache (load_cases, all splits): peak "
              f"{in_memory_peak(manifest):.0f} MiB")


if __name__ == "__main__":
    main()
