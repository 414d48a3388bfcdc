"""The audit of a classification run's labels (single- and multi-label classification tables).

Written under ``out``::

    samples.csv       one row per audited sample, worst first: quality (the probability of its label; multi-label:
                      the smallest over its labels), issue (1: confident learning flags it), the label and the likely
                      label, where its probabilities came from (the run, or fold k)
    figures/<id>.png  the worst samples' images, titled with their label and likely label
    report.html       the table and the figures
    audit.json        the confident joint, the counts, the folds
    probabilities.npz the out-of-sample probabilities and their ids (reused by a resumed audit)

With ``fix``, ``fix/table.csv`` is the input table (image paths made absolute) with every flagged label replaced by
the likely one (multi-label: the flagged labels flipped), and columns saying what changed per sample. With
``fix_action="unlabel"`` a flagged training sample keeps its label but is marked ``use_label`` 0 (an unlabelled
image: supervised runs leave it out); flagged val and test samples, which are scored and need a label, are kept."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.audit.folds import fold_runs, run_data, source_name, split_seen, training_ids
from labelwise.config import load_config
from labelwise.data.table import Table, read_rows, read_table, write_table
from labelwise.data.volumes import read_volume
from labelwise.errors import DataError, LabelwiseError
from labelwise.inference.classification import predict_classes
from labelwise.inference.figures import mask_overlay_rgb, write_png
from labelwise.inference.run import RunModel, load_run
from labelwise.io import atomic_write
from labelwise.metrics.label_quality import class_issues, multilabel_issues
from labelwise.report.audit import build_audit_page

__all__ = ["audit_labels"]


def _probabilities(model: RunModel, table: Path, split: str | None, scratch: Path) -> dict[str, np.ndarray]:
    files = predict_classes(model, [table], scratch, split=split, progress=False)
    with np.load(files["npz"], allow_pickle=False) as saved:
        return {str(i): p for i, p in zip(saved["id"], saved["probability"].astype(np.float64))}


def audit_labels(
    run: RunModel,
    out: Path,
    table: Path | None,
    folds: int | None,
    fix: Path | None,
    splits: Sequence[str] | None,
    worst: int,
    report: Callable[[str], None],
    fix_action: str = "relabel",
) -> dict[str, Any]:
    """Audit the labels of ``table`` (default: the run's own) with classification ``run``; see the module docstring
    and :func:`labelwise.audit.audit_run`."""
    run_dir = run.run_dir
    started = time.perf_counter()
    labels = list(load_config(run_dir / "config.yaml", check_files=False).data.labels)
    recorded = training_ids(run_dir)
    path = Path(table) if table is not None else run_data(run_dir)
    own: Table | None = None
    if table is None or recorded is None:  # the samples audited by default, or the only record of what trained it
        try:
            own = read_table(path if table is None else run_data(run_dir), labels)
        except DataError as err:
            raise LabelwiseError(
                f"{run_dir}: its training table cannot be read, so its training samples are unknown "
                f"({str(err).splitlines()[0]})"
            ) from None
    data = own if table is None and own is not None else read_table(path, labels)
    usable = np.asarray(data.target >= 0 if not data.multilabel else (data.target >= 0).all(axis=1))
    chosen = [i for i in range(len(data.ids)) if usable[i] and (not splits or data.splits[i] in splits)]
    if not chosen:
        raise DataError(f"{path}: no labelled samples to audit")
    if recorded is not None:  # what trained the run, as it recorded it (as the mask audit takes it)
        trained = recorded
    else:  # a run from before cases.json: its own table, read above
        assert own is not None
        trained = {own.ids[i] for i in np.flatnonzero(own.splits == "train")}
    ids = [data.ids[i] for i in chosen]
    kept = split_seen(ids, trained, folds, table, run_dir, report, "sample")
    chosen = [i for i in chosen if data.ids[i] in kept]
    source = {data.ids[i]: run_dir for i in chosen}
    if folds is not None:
        held_ids = [data.ids[i] for i in chosen if data.ids[i] in trained or data.splits[i] == "train"]
        source.update(
            fold_runs(run_dir, lambda home, held: _fold_table(path, home, held), held_ids, folds, out, report)
        )

    cache = out / "probabilities.npz"
    probs: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            probs = {str(i): p for i, p in zip(saved["id"], saved["probability"])}
    for where in sorted({source[data.ids[i]] for i in chosen if data.ids[i] not in probs}):
        wanted = {data.ids[i] for i in chosen if source[data.ids[i]] == where}
        model = run if where == run_dir else load_run(where)
        report(f"probabilities of {len(wanted)} sample(s) from {'the run' if where == run_dir else where.parent.name}")
        found = _probabilities(model, path, None, out / "scratch" / source_name(where, run_dir))
        probs.update({i: found[i] for i in wanted})
        kept_ids = sorted(probs)
        np.savez(cache, id=np.array(kept_ids), probability=np.stack([probs[i] for i in kept_ids]))

    matrix = np.stack([probs[data.ids[i]] for i in chosen])
    given = data.target[chosen]
    audit = multilabel_issues(matrix, given) if data.multilabel else class_issues(matrix, given)
    names = data.class_names

    def label_text(value: np.ndarray | int) -> str:
        if data.multilabel:
            return "+".join(n for n, v in zip(names, np.atleast_1d(value)) if v) or "(none)"
        return names[int(value)] if names else str(int(value))

    rows: list[dict[str, Any]] = [
        {
            "id": data.ids[i],
            "split": str(data.splits[i]),
            "quality": float(audit.quality[n]),
            "issue": int(audit.issue[n]),
            "label": label_text(given[n]),
            "likely": label_text(audit.likely[n]),
            "probabilities": source_name(source[data.ids[i]], run_dir),
        }
        for n, i in enumerate(chosen)
    ]
    order = np.lexsort((np.array([r["id"] for r in rows]), [r["quality"] for r in rows], [-r["issue"] for r in rows]))
    rows = [rows[k] for k in order]
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    columns = ["rank", "id", "split", "issue", "quality", "label", "likely", "probabilities"]
    write_table(out / "samples.csv", [{c: r[c] for c in columns} for r in rows])
    shown = rows[:worst]
    figures: dict[str, Path] = {}
    for row in shown:
        image = read_volume(data.images[data.ids.index(row["id"])]).array
        grey = image.mean(axis=0) if image.ndim == 3 else image.mean(axis=0).max(axis=-1)
        figures[row["id"]] = out / "figures" / f"{row['id']}.png"
        write_png(
            figures[row["id"]],
            mask_overlay_rgb(grey, np.zeros(grey.shape, np.int64)),
            f"{row['id']}: {row['label']} -> {row['likely']}",
        )
    summary = {
        "run": str(run_dir),
        "input": str(path),
        "task": "multilabel" if data.multilabel else "classification",
        "folds": folds,
        "samples": len(rows),
        "issues": int(audit.issue.sum()),
        "confident_joint": audit.joint.tolist(),
        "class_names": names,
        "seconds": round(time.perf_counter() - started, 2),
        "fix": str(fix) if fix is not None else None,
        "fix_action": fix_action if fix is not None else None,
    }
    if fix is not None:
        index = {data.ids[i]: n for n, i in enumerate(chosen)}
        _write_fixed_table(path, data, Path(fix), index, audit, labels, fix_action)
    atomic_write(out / "audit.json", json.dumps(summary, indent=1) + "\n")
    build_audit_page(out / "report.html", summary, rows, figures, columns)
    report(
        f"audited {len(rows)} sample(s): {summary['issues']} flagged; worst {rows[0]['id']} "
        f"({rows[0]['label']}, likely {rows[0]['likely']}); {out / 'report.html'}"
    )
    return summary


def _absolute_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The table's columns and rows, the image paths made absolute (so a copy can live anywhere)."""
    columns, rows = read_rows(path, "table")
    for row in rows:
        image = Path(row["image"])
        row["image"] = str((image if image.is_absolute() else path.parent / image).resolve())
    return columns, rows


def _fold_table(path: Path, home: Path, held: set[str]) -> Path:
    _, rows = _absolute_rows(path)
    return write_table(home / "table.csv", [r for r in rows if r["id"] not in held])


def _write_fixed_table(
    path: Path, data: Table, fix: Path, index: dict[str, int], audit: Any, labels: list[str], action: str
) -> None:
    """``fix/table.csv``: the flagged labels replaced (written as the table wrote them: class names or indices), or
    with ``action`` unlabel the flagged training samples marked ``use_label`` 0."""
    _, rows = _absolute_rows(path)
    names = data.class_names
    for row in rows:
        n = index.get(row["id"])
        row.setdefault("use_label", "")
        if n is None:
            row["audit"], row["audit_original_label"] = "not audited", ""
            continue
        row["audit_original_label"] = ";".join(row[c] for c in labels)
        if not audit.issue[n]:
            row["audit"] = "kept"
            continue
        if action == "unlabel":
            scored = row["split"] != "train"
            row["use_label"] = row["use_label"] if scored else "0"
            row["audit"] = "flagged, kept: val and test labels are scored" if scored else "unlabelled"
            continue
        if data.multilabel:
            for c, value in zip(labels, audit.likely[n]):
                row[c] = str(int(value))
        else:
            k = int(audit.likely[n])
            by_name = bool(names) and row[labels[0]] in names
            row[labels[0]] = names[k] if by_name else str(k)
        row["audit"] = f"relabelled from {row['audit_original_label']}"
    write_table(fix / "table.csv", rows)
