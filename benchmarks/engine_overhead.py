"""What the engine costs per training step, against a plain PyTorch loop doing the same work.

Both train the same network (configs/smoke.yaml's ResNet-10) on the same batches with the same optimiser.
The engine's figure is its steady-state step time (from metrics.jsonl timestamps, so start-up, evaluation
and report are excluded); the plain loop is timed over the same steps. Median of --repeats runs.

    python benchmarks/engine_overhead.py [--steps 200] [--repeats 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from labelwise.config import load_config
from labelwise.data import load_data
from labelwise.data.sampling import StepBatchSampler
from labelwise.training import build_trainer
from labelwise.methods import METHODS

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
WARMUP = 20  # steps excluded from both timings (allocator, first-call costs)


def engine_step_time(config, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        build_trainer(config, Path(tmp) / "run").fit()
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    times = {r["step"]: r["time"] for r in rows if r["split"] == "train"}
    return (times[steps] - times[WARMUP]) / (steps - WARMUP)


def plain_step_time(config, steps: int) -> float:
    torch.manual_seed(config.seed)
    data = load_data(config.data)
    model = METHODS["supervised"](config, data).networks["model"].train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optimizer.lr)
    train = data.split("train")
    sampler = StepBatchSampler(len(train), config.data.batch_size, steps, config.seed)
    loader = torch.utils.data.DataLoader(train, batch_sampler=sampler)
    for step, batch in enumerate(loader, start=1):
        if step == WARMUP + 1:
            started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _ = float(loss.detach()) if step % config.trainer.log_every == 0 else None  # the engine reads the loss when it logs
    return (time.perf_counter() - started) / (steps - WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = [
        f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}", "trainer.val_every=0",
        "trainer.log_every=10", *args.set,
    ]
    config = load_config(SMOKE, overrides)
    torch.set_num_threads(torch.get_num_threads())
    engine, plain = [], []
    for _ in range(args.repeats):
        engine.append(engine_step_time(config, args.steps))
        plain.append(plain_step_time(config, args.steps))
    e, p = statistics.median(engine), statistics.median(plain)
    print(f"config: {SMOKE.name} {' '.join(overrides)}; torch threads {torch.get_num_threads()}")
    print(f"labelwise engine : {1000 * e:7.2f} ms/step (median of {args.repeats})")
    print(f"plain torch loop : {1000 * p:7.2f} ms/step (median of {args.repeats})")
    print(f"ratio engine/plain: {e / p:.3f}")


if __name__ == "__main__":
    main()
