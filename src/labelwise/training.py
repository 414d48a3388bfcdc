"""Training as users call it: the engine runs the configured method, and the run writes its test outputs through the
inference layer's one output hook (:func:`labelwise.inference.run_outputs.write_run_outputs`). ``labelwise train``
and the demo call :func:`train`; the engine itself knows no method and no prediction format (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from labelwise.config import Config
from labelwise.engine import Trainer, TrainResult
from labelwise.inference.run_outputs import write_run_outputs
from labelwise.methods import METHODS

__all__ = ["build_trainer", "train"]


def build_trainer(config: Config, run_dir: str | Path) -> Trainer:
    """A :class:`~labelwise.engine.Trainer` for ``config``'s method, writing its test outputs
    (:func:`labelwise.inference.run_outputs.write_run_outputs`: per-case files of runs on image files, prediction
    arrays and the classification summary of runs on arrays)."""
    return Trainer(config, run_dir, METHODS[config.method.name], write_outputs=write_run_outputs)


def train(config: Config, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train ``config`` into ``run_dir`` (continuing from its last checkpoint if ``resume``)."""
    return build_trainer(config, run_dir).fit(resume=resume)
