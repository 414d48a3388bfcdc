"""Training as users call it: the engine runs the configured method, and a run on image files writes its test cases
through the inference layer. ``labelwise train`` and the demo call :func:`train`; the engine itself knows no method
and no output format (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from labelwise.config import Config
from labelwise.engine import Trainer, TrainResult
from labelwise.inference.predict import save_run_predictions
from labelwise.methods import METHODS

__all__ = ["build_trainer", "train"]


def build_trainer(config: Config, run_dir: str | Path) -> Trainer:
    """A :class:`~labelwise.engine.Trainer` for ``config``'s method, writing per-case test outputs of runs on image
    files (:func:`labelwise.inference.predict.save_run_predictions`)."""
    return Trainer(config, run_dir, METHODS[config.method.name], write_cases=save_run_predictions)


def train(config: Config, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train ``config`` into ``run_dir`` (continuing from its last checkpoint if ``resume``)."""
    return build_trainer(config, run_dir).fit(resume=resume)
