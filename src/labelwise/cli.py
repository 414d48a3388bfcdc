"""``labelwise <command>``: commands parse their arguments and call the library, nothing more.

Bad input (a config, a file, a shape) raises :class:`labelwise.errors.LabelwiseError`; :func:`main` prints
its message and exits with code 2, without a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from labelwise.errors import LabelwiseError

app = typer.Typer(
    name="labelwise",
    help="Train, evaluate and explain vision models when labels are imperfect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: generate the built-in synthetic sets.", no_args_is_help=True)
synth_app = typer.Typer(help="Generate a synthetic dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(synth_app, name="synth")

RUN_DIR_ENV = "LABELWISE_RUN_DIR"  # hands the chosen run directory to the processes Fabric starts


class NotBuiltYet(Exception):
    """A command whose capability has not landed yet."""


def _test_line(test: dict[str, float]) -> str:
    return "  test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if "/" not in k)


def _not_built(command: str, issue: str) -> None:
    raise NotBuiltYet(f"labelwise {command} is not built yet: it arrives with the issue '{issue}'.")


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (omit with --resume)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a key: --set trainer.max_steps=100")] = None,
    devices: Annotated[Optional[int], typer.Option(help="number of processes (GPUs, or CPU processes)")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="where to write the run (default runs/<name>)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this directory from its last checkpoint")] = None,
    report: Annotated[bool, typer.Option(help="write report.html at the end")] = True,
) -> None:
    """Train a model from a config; writes a run directory with checkpoints, metrics and a report."""
    from labelwise.config import load_config
    from labelwise.engine.rundir import new_run_dir
    from labelwise.engine.trainer import train as run_training

    overrides = list(set_ or [])
    if devices is not None:
        overrides.append(f"trainer.devices={devices}")
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise LabelwiseError(f"--resume {resume}: no run there (config.yaml not found)")
        if config is not None:
            typer.echo(f"note: resuming {resume} with its saved config; {config} is not read", err=True)
        cfg = load_config(resume / "config.yaml", overrides)
        target = resume
    elif config is None:
        raise LabelwiseError("give a CONFIG file, or --resume RUN_DIR")
    else:
        cfg = load_config(config, overrides)
        target = Path(os.environ.get(RUN_DIR_ENV) or new_run_dir(cfg.name, run_dir))
    if cfg.trainer.devices > 1:
        os.environ[RUN_DIR_ENV] = str(target)
    result = run_training(cfg, target, resume=resume is not None)
    if result.is_global_zero:
        if report:
            from labelwise.report import build_report

            build_report(result.run_dir)
        typer.echo(f"{result.status}: step {result.step}; run directory {result.run_dir}", err=True)
        if result.message:
            typer.echo(f"  {result.message}", err=True)
        if result.test:
            typer.echo(_test_line(result.test), err=True)
    if result.status != "completed":
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    out: Annotated[Optional[Path], typer.Option(help="where to write the HTML (default RUN_DIR/report.html)")] = None,
) -> None:
    """Rebuild a run's HTML report from its directory alone."""
    from labelwise.report import build_report

    if not run_dir.is_dir():
        raise LabelwiseError(f"{run_dir}: no such run directory")
    typer.echo(str(build_report(run_dir, out)))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo runs")] = Path("runs"),
    quick: Annotated[bool, typer.Option(help="a much shorter run (for tests)")] = False,
) -> None:
    """Generate a small dataset, train, evaluate and write runs/demo/report.html (about a minute on a CPU)."""
    import json

    from labelwise.demo import run_demo

    for path in run_demo(out, quick=quick):
        summary = json.loads((path.parent / "summary.json").read_text())
        typer.echo(f"{summary['name']}: {summary['status']} in {summary.get('wall_time_s', '?')} s; report {path}")
        typer.echo(_test_line(summary.get("test", {})))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def predict() -> None:
    """Predict with a trained run on new images (not built yet)."""
    _not_built("predict", "Vessel segmentation on noisy labels (DS6)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate() -> None:
    """Score predictions: multi-label-aware classification metrics, fairness (not built yet)."""
    _not_built("evaluate", "Multi-label-aware evaluation of classifiers")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def explain() -> None:
    """Grad-CAM family explanations of a trained model (not built yet)."""
    _not_built("explain", "Visual explanations: a fast Grad-CAM family")


@synth_app.command("shapes")
def synth_shapes(
    out: Annotated[Path, typer.Option(help="output .npz file")],
    n: Annotated[int, typer.Option(min=1, help="number of samples")] = 600,
    size: Annotated[int, typer.Option(min=8, help="image side in pixels/voxels")] = 32,
    dim: Annotated[int, typer.Option(min=2, max=3, help="2 (images) or 3 (volumes)")] = 2,
    classes: Annotated[int, typer.Option(min=2, max=4, help="number of shape classes")] = 3,
    noise: Annotated[float, typer.Option(min=0.0, help="std of the gaussian noise")] = 0.3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Shapes on a noisy background, with class labels and masks (classification and segmentation)."""
    from labelwise.data.npz import save_npz
    from labelwise.data.synth import make_shapes

    arrays = make_shapes(n=n, size=size, dim=dim, num_classes=classes, noise=noise, seed=seed)
    save_npz(out, arrays)
    typer.echo(f"wrote {out}: {n} samples of {'x'.join([str(size)] * dim)}, splits train/val/test")


for _name, _issue in (
    ("vessels", "Vessel segmentation on noisy labels (DS6)"),
    ("patchml", "Multi-label-aware evaluation of classifiers"),
    ("rnflt", "Semi-supervised classification with a pseudo supervisor"),
):

    def _later(name: str = _name, issue: str = _issue) -> None:
        _not_built(f"data synth {name}", issue)

    synth_app.command(_name, help=f"(not built yet) synthetic {_name} data",
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(_later)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; bad input exits 2 with one message, no traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except LabelwiseError as err:
        for line in str(err).splitlines():
            typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except NotBuiltYet as err:
        typer.echo(str(err), err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
