"""HTML report of ``labelwise evaluate classification``: the model table, a scatter of top-1 against the
multi-label-aware scores across models, and per-subgroup bars; one self-contained file."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import labelwise
from labelwise.io import atomic_write
from labelwise.report.common import environment
from labelwise.report.figures import _png

SUBGROUP_COLUMNS = ("top1", "real_top1", "variable_topk_subset", "variable_topk_fraction")

TABLE_COLUMNS = (
    "n_images",
    "top1",
    "top5",
    "real_top1",
    "real_top5",
    "n_real_scored",
    "variable_topk_subset",
    "variable_topk_fraction",
    "asma",
    "map",
    "f1_micro",
    "f1_macro",
    "f1_samples",
    "subset_accuracy",
    "hamming_loss",
    "lrap",
)


def table_columns(result: dict) -> list[str]:
    """The table columns that at least one model has a value for."""
    return [c for c in TABLE_COLUMNS if any(m.get(c) is not None for m in result["models"])]


def _embed(png: bytes | None, title: str) -> dict | None:
    return None if png is None else {"src": "data:image/png;base64," + base64.b64encode(png).decode(), "title": title}


def scatter_png(models: list[dict]) -> bytes | None:
    """Each model's ReaL top-1 and variable top-k against its top-1 (the diagonal: no change)."""
    xs = [m.get("top1") for m in models]
    series: tuple[tuple[str, str, str], ...]  # (key, legend, marker)
    if all(x is None for x in xs):
        xs = [m.get("real_top1") for m in models]  # no single labels: show against ReaL top-1
        xlabel = "ReaL top-1"
        series = (
            ("variable_topk_subset", "variable top-k (subset)", "o"),
            ("variable_topk_fraction", "variable top-k (fraction)", "^"),
        )
    else:
        xlabel = "top-1 (original single label)"
        series = (
            ("real_top1", "ReaL top-1", "o"),
            ("variable_topk_subset", "variable top-k (subset)", "s"),
            ("asma", "ASMA", "^"),
        )
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    drawn = False
    for key, label, marker in series:
        points = [(x, m.get(key)) for x, m in zip(xs, models, strict=True) if x is not None and m.get(key) is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), label=label, marker=marker, alpha=0.8)
            drawn = True
    if not drawn:
        return None
    if len(models) <= 12:
        for x, m in zip(xs, models, strict=True):
            if x is not None and m.get(series[0][0]) is not None:
                ax.annotate(m["model"], (x, m[series[0][0]]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    values = [
        v
        for x, m in zip(xs, models, strict=True)
        if x is not None
        for v in (x, *(m.get(k) for k, _, _ in series))
        if v is not None
    ]
    lo, hi = max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05)
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", label="y = x")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    ax.set(xlabel=xlabel, ylabel="score", title="Multi-label-aware scores against top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def subgroup_png(models: list[dict], key: str = "variable_topk_subset") -> bytes | None:
    """Grouped bars: each model's ``key`` (falling back to ReaL top-1) per label-count subgroup."""
    if not any(m.get("subgroup_accuracy") for m in models):
        return None
    key = key if any(key in g for m in models for g in m["subgroup_accuracy"].values()) else "real_top1"
    counts = sorted({int(c) for m in models for c in m["subgroup_accuracy"]})
    fig = Figure(figsize=(max(6.4, 0.5 * len(counts) * max(1, len(models)) ** 0.5 + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        values = [m["subgroup_accuracy"].get(str(c), {}).get(key, np.nan) for c in counts]
        ax.bar(np.arange(len(counts)) + (i - (len(models) - 1) / 2) * width, values, width, label=m["model"])
    n = {c: max(m["subgroup_accuracy"].get(str(c), {}).get("n", 0) for m in models) for c in counts}
    ax.set_xticks(range(len(counts)), [f"{c}\n(n={n[c]})" for c in counts], fontsize=8)
    ax.set(xlabel="labels per image", ylabel=key, ylim=(0, 1), title=f"{key} by number of labels")
    ax.grid(axis="y", alpha=0.3)
    if len(models) <= 10:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def build_evaluation_report(result: dict, out: str | Path, title: str = "Multi-label-aware evaluation") -> Path:
    """Write the report of :func:`labelwise.evaluation.classification.evaluate_classification`'s ``result`` to
    ``out``."""
    models = result["models"]
    figures = {
        "scatter": _embed(scatter_png(models), "Top-1 against ReaL and variable top-k"),
        "subgroups": _embed(subgroup_png(models), "Accuracy by number of labels"),
    }
    present = [c for c in SUBGROUP_COLUMNS if any(c in g for m in models for g in m["subgroup_accuracy"].values())]
    html = (
        environment()
        .get_template("evaluation.html.j2")
        .render(
            title=title,
            label_set=result["label_set"],
            models=models,
            columns=table_columns(result),
            subgroup_columns=present,
            figures=figures,
            asma_definition=models[0].get("asma_definition", ""),
            version=labelwise.__version__,
            generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    )
    return atomic_write(out, html)
