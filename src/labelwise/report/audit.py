"""The page of ``labelwise audit``: the worst cases first, their scores, the estimated noise and image | mask |
suspects | suspicion figures."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

import labelwise
from labelwise.io import atomic_write
from labelwise.report.common import environment

__all__ = ["AUDITS", "build_audit_page"]

AUDITS = "audits.json"  # in the run folder: the audits of the run (`labelwise audit` adds them), for its report


MASK_COLUMNS = ["rank", "id", "split", "quality", "missed", "extra", "swapped", "label_voxels", "probabilities"]


def build_audit_page(
    out: str | Path,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    figures: dict[str, Path],
    columns: list[str] = MASK_COLUMNS,
) -> Path:
    """Write ``out`` (self-contained: the figures are embedded) from the audit's ``summary`` (audit.json), its
    ``rows`` (worst first, as cases.csv or samples.csv; ``columns`` shown) and the figure of each shown id. A
    summary with ``samples`` is a class-label audit, else a mask audit."""
    shown = [
        {**row, "figure": "data:image/png;base64," + base64.b64encode(figures[row["id"]].read_bytes()).decode()}
        for row in rows
        if row["id"] in figures
    ]
    html = (
        environment()
        .get_template("audit.html.j2")
        .render(
            summary=summary,
            rows=rows,
            shown=shown,
            columns=columns,
            masks="samples" not in summary,
            version=labelwise.__version__,
            generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    )
    return atomic_write(out, html)
