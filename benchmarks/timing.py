"""Shared timing for the speed benchmarks: contenders run in turn (A B C A B C ...) after one warm-up round, and a
table of medians against labelwise and the fastest MONAI contender."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every call of each contender over ``repeats`` rounds, round 0 (warm-up) left out."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    return times


def print_peer_table(times: dict[str, list[float]], items: int, unit: str, digits: int = 4) -> None:
    """Median s/round, ``unit``/s and ratio to labelwise per contender; then labelwise vs the fastest MONAI one."""
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"  {'':22s} {'s/round':>8s} {unit + '/s':>10s} {'labelwise x':>12s}   rounds: min-max s")
    ours = medians["labelwise"]
    for name, t in medians.items():
        print(f"  {name:22s} {t:8.{digits}f} {items / t:10.1f} {t / ours:12.1f}   "
              f"{min(times[name]):.{digits}f}-{max(times[name]):.{digits}f}")
    best_monai = min(t for name, t in medians.items() if name.startswith("MONAI"))
    print(f"throughput ratio labelwise / fastest MONAI (peer s / labelwise s): {best_monai / ours:.1f}x "
          f"({items / ours:.0f} vs {items / best_monai:.0f} {unit}/s)")
