"""Scoring many ImageNet models against ReaL labels: labelwise vs a straightforward per-image loop.

Writes ``--models`` float16 output files of 50,000 x 1,000 (random scores with a planted right answer, ~100 MB
each) to ``--dir``, then scores each one as ``labelwise evaluate classification`` does (memory-mapped read,
top-k, ReaL, variable top-k, subgroups, ASMA) and, for ``--loop-models`` of them, with a plain loop over images
(numpy argsort and Python sets per image). Each side runs in its own process so its peak memory (max RSS) is
its own. Prints median seconds per model, peak memory, and the ratios.

    python benchmarks/multilabel.py [--models 50] [--loop-models 2] [--dir /tmp/labelwise-bench-multilabel]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import numpy as np

N, C = 50_000, 1000


def make_files(folder: Path, models: int) -> list[Path]:
    from labelwise.data.labelsets import load_label_sets

    folder.mkdir(parents=True, exist_ok=True)
    sets = load_label_sets("imagenet-real").sets
    first = np.array([s[0] if s else 0 for s in sets])
    paths = []
    for m in range(models):
        path = folder / f"model_{m:02d}.npy"
        if not path.exists():
            rng = np.random.default_rng(m)
            scores = rng.standard_normal((N, C), dtype=np.float32)
            right = rng.random(N) < 0.5 + 0.4 * m / max(1, models - 1)  # models from 50% to 90% right
            scores[np.flatnonzero(right), first[right]] += 4
            np.save(path, scores.astype(np.float16))
        paths.append(path)
    return paths


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _labelwise(paths: list[str], queue) -> None:
    import torch

    from labelwise.data.labelsets import load_label_sets, read_predictions
    from labelwise.metrics.multilabel import label_set_matrix, summarize

    sets = load_label_sets("imagenet-real")
    matrix = label_set_matrix(sets.sets, 1000)
    count = matrix.sum(dim=1, dtype=torch.int32)
    base = _peak_mib()
    times, results = [], []
    for path in paths:
        started = time.perf_counter()
        r = summarize(read_predictions(path), matrix, topk=(1, 5), label_count=count)
        times.append(time.perf_counter() - started)
        results.append((r["real_top1"], r["real_top5"], r["variable_topk_subset"]))
    queue.put((times, base, _peak_mib(), results))


def _loop(paths: list[str], queue) -> None:
    from labelwise.data.labelsets import load_label_sets

    sets = [set(s) for s in load_label_sets("imagenet-real").sets]
    base = _peak_mib()
    times, results = [], []
    for path in paths:
        started = time.perf_counter()
        scores = np.load(path)
        real1 = real5 = variable = scored = 0
        for row, labels in zip(scores, sets, strict=True):
            if not labels:
                continue
            order = np.argsort(-row.astype(np.float32), kind="stable")
            scored += 1
            real1 += order[0] in labels
            real5 += any(c in labels for c in order[:5])
            variable += labels <= set(order[: len(labels)].tolist())
        times.append(time.perf_counter() - started)
        results.append((real1 / scored, real5 / scored, variable / scored))
    queue.put((times, base, _peak_mib(), results))


def _drop_page_cache() -> bool:
    """Make the reads real disk reads where allowed (root on Linux); False where not."""
    try:
        import os

        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _in_child(target, paths: list[Path]):
    queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=target, args=([str(p) for p in paths], queue))
    process.start()
    out = queue.get()
    process.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--loop-models", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/labelwise-bench-multilabel"))
    args = parser.parse_args()
    paths = make_files(args.dir, args.models)
    cold = _drop_page_cache()
    fast_times, fast_base, fast_peak, fast_results = _in_child(_labelwise, paths)
    loop_times, loop_base, loop_peak, loop_results = _in_child(_loop, paths[: args.loop_models])
    for a, b in zip(fast_results, loop_results, strict=False):  # same numbers (float16 ties aside)
        assert np.allclose(a, b, atol=2e-4), (a, b)
    fast, loop = statistics.median(fast_times), statistics.median(loop_times)
    print(f"{args.models} models x {N:,} images x {C:,} classes, float16 .npy files (memory-mapped by labelwise)")
    print(f"labelwise      : {fast:.3f} s per model (median of {len(fast_times)}; min {min(fast_times):.3f}, "
          f"max {max(fast_times):.3f}); peak RSS {fast_peak:.0f} MiB ({fast_peak - fast_base:.0f} MiB above the "
          "loaded label sets)")
    print(f"per-image loop : {loop:.3f} s per model (median of {len(loop_times)}); peak RSS {loop_peak:.0f} MiB ({loop_peak - loop_base:.0f} MiB above the label sets)")
    print(f"ratio labelwise/loop: time {fast / loop:.4f} ({loop / fast:.0f}x faster), peak memory {fast_peak / loop_peak:.2f}")
    print(f"all {args.models} models: {sum(fast_times):.1f} s; files read {'cold (page cache dropped)' if cold else 'from the page cache'}")


if __name__ == "__main__":
    main()
