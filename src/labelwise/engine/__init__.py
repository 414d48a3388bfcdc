"""The training engine: one loop (Lightning Fabric) for every method, checkpoints, the run directory.

``Trainer``, ``TrainResult`` and ``NonFiniteLossError`` load :mod:`labelwise.engine.trainer` (and Lightning) when
first used, so reading a run directory or a checkpoint (what inference does) does not pay Lightning's import time."""

from typing import Any

from labelwise.engine.rundir import RunDir, new_run_dir

__all__ = ["NonFiniteLossError", "RunDir", "TrainResult", "Trainer", "new_run_dir"]

_TRAINER_NAMES = ("NonFiniteLossError", "TrainResult", "Trainer")


def __getattr__(name: str) -> Any:
    if name in _TRAINER_NAMES:
        from labelwise.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'labelwise.engine' has no attribute {name!r}")
