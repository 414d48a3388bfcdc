"""The page of ``labelwise audit``: the worst cases first, their scores and image | mask | suspects figures."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

import labelwise
from labelwise.io import atomic_write
from labelwise.report.common import environment

__all__ = ["build_audit_page"]


def build_audit_page(
    out: str | Path, summary: dict[str, Any], rows: list[dict[str, Any]], figures: dict[str, Path]
) -> Path:
    """Write ``out`` (self-contained: the figures are embedded) from the audit's ``summary`` (audit.json), its case
    ``rows`` (worst first, as cases.csv) and the figure of each shown case id."""
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
            version=labelwise.__version__,
            generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    )
    return atomic_write(out, html)
