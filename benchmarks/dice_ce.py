"""labelwise's Dice + cross-entropy (losses.dice_ce_loss, which leaves data.ignore voxels out) against MONAI's
DiceCELoss, the loss it replaced in ``supervised``: forward + backward time on one batch, interleaved, medians::

    python benchmarks/dice_ce.py [--shape 8 2 128 128] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.losses import DiceCELoss

from labelwise.losses import dice_ce_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 2, 128, 128])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    logits = torch.randn(*args.shape, requires_grad=True)
    target = torch.randint(0, args.shape[1], (args.shape[0], 1, *args.shape[2:]))
    monai = DiceCELoss(to_onehot_y=True, softmax=True)
    sides = {"labelwise": lambda: dice_ce_loss(logits, target), "monai": lambda: monai(logits, target)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, loss in sides.items():
            start = time.perf_counter()
            loss().backward()
            times[name].append(time.perf_counter() - start)
            logits.grad = None
    ours, theirs = (statistics.median(times[k]) * 1e3 for k in ("labelwise", "monai"))
    print(f"shape {args.shape}, {torch.get_num_threads()} threads: labelwise {ours:.2f} ms, MONAI {theirs:.2f} ms, "
          f"ratio {ours / theirs:.2f}; values {float(dice_ce_loss(logits, target).detach()):.6f} vs {float(monai(logits, target).detach()):.6f}")


if __name__ == "__main__":
    main()
