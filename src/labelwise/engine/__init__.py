"""The training engine: one loop (Lightning Fabric) for every method, checkpoints, the run directory."""

from labelwise.engine.rundir import RunDir, new_run_dir
from labelwise.engine.trainer import NonFiniteLossError, TrainResult, Trainer, train

__all__ = ["NonFiniteLossError", "RunDir", "TrainResult", "Trainer", "new_run_dir", "train"]
