"""Load-and-predict latency of a trained run, against the training step time of the same run (CPU).

Two runs are trained for ``--steps`` steps into a temporary folder from the shipped configs as they are (loss,
patch size, batch, optimiser, model section: U-Net MSS widths 16..256), on synthetic vessel data written here:
  2D  configs/unet-mss-synthetic-2d.yaml on 256 x 256 images (batch 8 of 128^2 patches)
  3D  configs/unet-mss-synthetic-3d.yaml on 96^3 volumes (batch 2 of 64^3 patches)
(3 cases each: 2 train, 1 test; ``data.patches_per_volume`` 8 and no validation, so the runs are quick to make.)
Then, for the test case of each (one 256 x 256 PNG, one 96^3 NIfTI volume):
  cold predict    wall time of a fresh ``python -m labelwise predict RUN --input FILE --out DIR`` process: interpreter
                  start, imports, run loading, reading and preprocessing, sliding windows (the run's window and
                  overlap), writing the probability, mask and figures
  imports         wall time of a fresh ``python -c "import labelwise.cli, labelwise.inference"`` (the floor of the above
                  until labelwise.inference loaded its submodules on first use; "predict imports" below is the floor)
  load            in-process ``load_run(RUN)`` (config, inference.json, network, weights)
  predict         in-process ``predict_files(run, [FILE], DIR)`` after the load (what the CLI does after loading)
  forward         in-process ``run.logits(image)`` on the preprocessed input (sliding windows only)
  train step      the run's own training step time: median difference of consecutive ``time`` stamps in its
                  metrics.jsonl (log_every 1; the first step left out)
Cold start (issue 28), each a fresh process, wall time and CPU time (user + sys of the child, steadier than wall
time on cores other processes are busy on), in the same interleaved rounds:
  import torch       ``python -c "import torch"``: the yardstick of the ratios printed
  predict imports    a fresh process importing, in order, every module the 2D cold predict imported at top level
                     (read once from ``python -X importtime -m labelwise predict ...`` before the rounds: the CLI,
                     the library and the modules imported inside functions while predicting), nothing else
  --help             ``labelwise --help`` (the console script next to the interpreter, else ``-m labelwise``)
  predict --help     ``labelwise predict --help``
With ``--baseline SRC`` (the ``src`` folder of another checkout, e.g. ``git archive COMMIT src | tar -x -C DIR``)
the same four for that code (``PYTHONPATH=SRC``; its own predict imports, read the same way), in the same rounds.
Each round runs every contender once, in turn (2D and 3D interleaved), after one warm-up round; figures are medians
of ``--repeats`` rounds. Threads: ``torch.set_num_threads(--threads)`` in-process (training included) and
``OMP_NUM_THREADS=--threads`` for the subprocesses. On cores other processes are busy on, 2 threads stall
(OpenMP waits) and the times become erratic; --threads 1 gives steadier figures there.

    python benchmarks/predict_latency.py [--steps 4] [--repeats 3] [--threads 2] [--keep FOLDER] [--dims 2 3]
                                         [--baseline SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from timing import interleaved

REPO = Path(__file__).resolve().parents[1]
SHAPES = {2: [256, 256], 3: [96, 96, 96]}


def train_run(dims: int, folder: Path, steps: int) -> tuple[Path, Path]:
    """(run directory, the test case's image) of the shipped U-Net MSS config trained ``steps`` steps."""
    from labelwise.config import load_config
    from labelwise.data.synth.vessels import write_vessels
    from labelwise.training import train

    manifest = write_vessels(folder / f"vessels-{dims}d", dims, 3, SHAPES[dims], seed=0, splits=[2, 0, 1])
    overrides = [f"data.manifest={manifest}", f"trainer.max_steps={steps}", f"trainer.checkpoint_every={steps}",
                 "trainer.log_every=1", "trainer.val_every=0", "data.patches_per_volume=8"]
    config = load_config(REPO / "configs" / f"unet-mss-synthetic-{dims}d.yaml", overrides)
    result = train(config, folder / "runs" / f"unet-mss-{dims}d")
    if result.status != "completed":
        raise RuntimeError(f"{dims}D: {result.status}: {result.message}")
    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    image = next(manifest.parent / row[1] for row in rows if row[3] == "test")
    return result.run_dir, image


def step_time(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = sorted((r["step"], r["time"]) for r in rows if r.get("split") == "train")
    return statistics.median(b[1] - a[1] for a, b in zip(times[1:], times[2:]))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_process(command: list[str], env: dict[str, str], cpu: list[float]) -> Callable[[], None]:
    """A contender running ``command`` in a fresh process (output discarded); each call appends its CPU seconds to
    ``cpu`` (the warm-up round's included: drop the first)."""

    def run() -> None:
        before = cpu_seconds()
        subprocess.run(command, check=True, capture_output=True, env=env)
        cpu.append(cpu_seconds() - before)

    return run


def top_level_imports(command: list[str], env: dict[str, str]) -> list[str]:
    """The modules ``command`` (a Python process) imported at top level, in order, read from ``-X importtime``:
    importing them alone imports what it did (a module imported inside a function counts, its own imports nested
    under it); ``__main__`` modules (the command itself) left out."""
    assert command[0] == sys.executable
    err = subprocess.run([command[0], "-X", "importtime", *command[1:]], check=True, capture_output=True, text=True,
                         env=env).stderr
    names = []
    for line in err.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            name = line.split("|")[2]
            if not name.startswith("  ") and not name.strip().endswith("__main__"):
                names.append(name.strip())
    return names


def import_command(names: list[str]) -> list[str]:
    """A fresh process importing ``names`` in order; one that fails to import is passed over, as the process it was
    read from passed it over (PIL tries optional plugins)."""
    code = f"import importlib\nfor name in {names!r}:\n    try:\n        importlib.import_module(name)\n" \
           f"    except ImportError:\n        pass"
    return [sys.executable, "-c", code]


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "labelwise"
    return [str(script)] if script.exists() else [sys.executable, "-m", "labelwise"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="train into this folder and keep it (default: a temporary one)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    parser.add_argument("--baseline", type=Path, help="another checkout's src folder: its cold start measured too")
    args = parser.parse_args()
    if 2 not in args.dims:
        parser.error("--dims: the cold-start figures are those of the 2D predict; include 2")
    torch.set_num_threads(args.threads)

    from labelwise.inference import load_run, predict_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        runs = {dims: train_run(dims, folder, args.steps) for dims in args.dims}
        fns, loaded = {}, {}
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        imports = [sys.executable, "-c", "import labelwise.cli, labelwise.inference"]
        fns["imports"] = lambda: subprocess.run(imports, check=True, env=env)
        codes = {"": env}  # the code measured, by the prefix of its contenders' names
        if args.baseline:
            path = os.pathsep.join([str(args.baseline.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            codes["baseline "] = {**env, "PYTHONPATH": path}
        cold_start = {"import torch": [sys.executable, "-c", "import torch"]}
        run_dir, image = runs[2]
        for code, code_env in codes.items():
            predict_2d = [sys.executable, "-m", "labelwise", "predict", str(run_dir), "--input", str(image), "--out"]
            names = top_level_imports(predict_2d + [str(folder / f"importtime{len(code)}")], code_env)
            cold_start[f"{code}predict imports"] = import_command(names)
            cold_start[f"{code}2D cold predict"] = predict_2d + [str(folder / f"predicted-2d{len(code)}" / "cold")]
            cold_start[f"{code}--help"] = cli_command() + ["--help"]
            cold_start[f"{code}predict --help"] = cli_command() + ["predict", "--help"]
        cpu: dict[str, list[float]] = {}
        for name, command in cold_start.items():
            cpu[name] = []
            fns[name] = timed_process(command, codes["baseline "] if name.startswith("baseline ") else env, cpu[name])
        for dims, (run_dir, image) in runs.items():
            out = folder / f"predicted-{dims}d"
            command = [sys.executable, "-m", "labelwise", "predict", str(run_dir), "--input", str(image),
                       "--out", str(out / "cold")]
            loaded[dims] = load_run(run_dir)
            x = torch.from_numpy(loaded[dims].read(image).array)[None]
            if dims != 2:  # the 2D one is a cold-start contender
                fns[f"{dims}D cold predict"] = lambda c=command: subprocess.run(c, check=True, capture_output=True,
                                                                                env=env)
            fns[f"{dims}D load"] = lambda r=run_dir: load_run(r)
            fns[f"{dims}D predict"] = lambda d=dims, i=image, o=out: predict_files(loaded[d], [i], o / "warm",
                                                                                    progress=False)
            fns[f"{dims}D forward"] = lambda d=dims, x=x: loaded[d].logits(x)
        times = interleaved(fns, args.repeats)
        median = {name: statistics.median(t) for name, t in times.items()}
        print(f"torch {torch.__version__}, {args.threads} threads in-process; medians of {args.repeats} interleaved "
              f"rounds; runs trained {args.steps} steps")
        print(f"  imports alone (fresh process): {median['imports']:.2f} s")
        print("  cold start, fresh processes: wall s (rounds min-max) and CPU s (user + sys), each x import torch's")
        torch_wall, torch_cpu = median["import torch"], statistics.median(cpu["import torch"][1:])
        for name in cold_start:
            wall, used = median[name], statistics.median(cpu[name][1:])
            print(f"    {name:26s} wall {wall:6.2f} s ({min(times[name]):.2f}-{max(times[name]):.2f}) "
                  f"{wall / torch_wall:5.2f} x   CPU {used:6.3f} s {used / torch_cpu:5.2f} x")
        for dims, (run_dir, image) in runs.items():
            step = step_time(run_dir)
            shape = "x".join(map(str, SHAPES[dims]))
            cold, predict = median[f"{dims}D cold predict"], median[f"{dims}D predict"]
            print(f"  {dims}D U-Net MSS, one {shape} input ({image.name}):")
            print(f"    cold predict (fresh process, wall) {cold:8.2f} s   = {cold / step:6.1f} training steps")
            print(f"    in-process load                    {median[f'{dims}D load']:8.3f} s")
            print(f"    in-process predict (after load)    {predict:8.3f} s   = {predict / step:6.2f} training steps")
            print(f"    in-process forward (windows only)  {median[f'{dims}D forward']:8.3f} s")
            print(f"    training step (metrics.jsonl)      {step:8.3f} s")
            print(f"    rounds min-max: cold {min(times[f'{dims}D cold predict']):.2f}-"
                  f"{max(times[f'{dims}D cold predict']):.2f} s, predict {min(times[f'{dims}D predict']):.3f}-"
                  f"{max(times[f'{dims}D predict']):.3f} s")


if __name__ == "__main__":
    main()
