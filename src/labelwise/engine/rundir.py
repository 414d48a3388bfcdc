"""The run directory: where a run's config, metrics, checkpoints, predictions and report live."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from labelwise.errors import LabelwiseError
from labelwise.io import atomic_write


class RunDir:
    """Paths and small readers/writers of one run directory (see docs/run-directory.md)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.inference = self.path / "inference.json"  # what inference needs besides the weights
        self.cases = self.path / "cases.json"  # the data file it trained on and the sample ids of every split
        self.raters = self.path / "raters.json"  # data.raters: how several raters' masks were fused (their fit)
        self.checkpoints = self.path / "checkpoints"
        self.predictions = self.path / "predictions"
        self.figures = self.path / "figures"
        self.report = self.path / "report.html"

    def create(self) -> RunDir:
        for folder in (self.path, self.checkpoints, self.predictions, self.figures):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line; non-finite numbers are written as null (JSON has no NaN)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.metrics.open("a") as f:
            f.write(json.dumps(clean) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        return records

    def truncate_metrics(self, step: int) -> None:
        """Keep only train/val lines up to ``step`` (used on resume, so the log has no repeated steps)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step and r.get("split") != "test"]
        atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else {}

    def update_summary(self, **fields: Any) -> None:
        atomic_write(self.summary_path, json.dumps({**self.summary(), **fields}, indent=2))


def new_run_dir(name: str, run_dir: str | Path | None = None, root: str | Path = "runs") -> Path:
    """The folder for a new run: ``run_dir`` if given (must not hold a run already), otherwise
    ``root/name``, or ``root/name-2``, ``-3``, ... when that exists."""
    if run_dir is not None:
        path = Path(run_dir)
        if (path / "config.yaml").exists():
            raise LabelwiseError(
                f"--run-dir {path}: already holds a run; resume it with --resume {path} or pick another"
            )
        return path
    path = Path(root) / name
    suffix = 2
    while path.exists():
        path = Path(root) / f"{name}-{suffix}"
        suffix += 1
    return path
