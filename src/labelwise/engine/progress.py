"""Progress of a long loop: a live rich bar in a terminal, a plain line every 10% elsewhere (CI, logs)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StepProgress:
    """``with StepProgress(total, start) as p: p.update(step, loss)``; silent when ``enabled`` is False."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, description: str = "train"):
        self.total, self.start, self.enabled, self.description = total, start, enabled, description
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.loss: float | None = None
        self._next_line = start + 1
        self._last_printed = -1
        self._t0 = time.perf_counter()
        self._bar: Progress | None = None

    def __enter__(self) -> StepProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.start, loss="-")
        return self

    def update(self, step: int, loss: float | None = None) -> None:
        if not self.enabled:
            return
        if loss is not None:
            self.loss = loss
        shown = f"{self.loss:.4g}" if self.loss is not None else "-"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=shown)
        elif step != self._last_printed and (step >= self._next_line or step == self.total):
            rate = (step - self.start) / max(1e-9, time.perf_counter() - self._t0)
            print(
                f"{self.description}: step {step}/{self.total}  loss {shown}  ({rate:.1f} steps/s)",
                file=sys.stderr,
                flush=True,
            )
            self._next_line = step + max(1, self.total // 10)
            self._last_printed = step

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
