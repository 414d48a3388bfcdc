"""What the report pages share: the template environment, number formatting, figures saved and embedded."""

from __future__ import annotations

import base64
import math
import warnings
from pathlib import Path
from typing import Any

import jinja2

from labelwise.io import atomic_write

__all__ = ["environment", "fmt", "save_figure"]


def fmt(value: Any) -> str:
    """A number for display: integers as is, floats with 4 significant digits, '—' when absent."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (``report/templates``), with the ``fmt`` filter."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("labelwise", "report/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    return env


def save_figure(name: str, draw, data, run_dir: Path, notes: list[str]) -> dict[str, str] | None:
    """Draw one figure, save it to ``run_dir/figures/<name>.png`` and return it for embedding; a figure that
    fails is noted rather than failing the whole report."""
    try:
        png = draw(data)
    except Exception as exc:  # noqa: BLE001 - the report must still be written after a training run
        warnings.warn(f"report figure {name} failed: {exc!r}", stacklevel=2)
        notes.append(f"figure {name}.png could not be drawn: {type(exc).__name__}: {exc}")
        return None
    if png is None:
        return None
    atomic_write(run_dir / "figures" / f"{name}.png", png)
    return {"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"), "file": f"figures/{name}.png"}
