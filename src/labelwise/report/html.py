"""Build a run's self-contained HTML report from its run directory alone (see docs/run-directory.md)."""

from __future__ import annotations

import base64
import json
import os
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import labelwise
from labelwise.errors import DataError
from labelwise.io import atomic_write
from labelwise.report.audit import AUDITS
from labelwise.report.common import environment, fmt, save_figure
from labelwise.report.fairness import fairness_section
from labelwise.report.figures import _RESERVED, _number, loss_curves_png, reliability_png, samples_png

# Metrics whose name contains one of these are better when lower; every other metric when higher.
LOWER_IS_BETTER = ("loss", "error", "hausdorff", "hd95", "ece", "nll", "brier", "mae", "mse", "rmse")
# ... and, in the explanations table, saliency metrics where a faithful map scores low.
EXPLANATION_LOWER_IS_BETTER = ("deletion", "drop")
MAX_GALLERY = 24  # explanation figures shown in the report
MAX_OVERLAY_BYTES = 8 * 2**20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _duration(seconds: Any) -> str | None:
    """Seconds as '1h 02m 03s' / '2m 03s' / '4.2s'; None when not a number."""
    seconds = _number(seconds)
    if seconds is None:
        return None
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def read_metrics(path: Path, notes: list[str]) -> list[dict] | None:
    """The JSON lines of ``path`` (None if missing); malformed lines are skipped and noted in ``notes``."""
    if not path.is_file():
        return None
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            notes.append(f"metrics.jsonl line {number}: skipped, not valid JSON ({exc})")
            continue
        if not isinstance(record, dict):
            notes.append(f"metrics.jsonl line {number}: skipped, not a JSON object")
            continue
        records.append(record)
    return records


def _lower_is_better(name: str) -> bool:
    return any(word in name.lower() for word in LOWER_IS_BETTER)


def metric_rows(records: list[dict], test: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: final test value, best val value and its step, last val value."""
    val = [r for r in records if r.get("split") == "val"]
    names: dict[str, None] = {}
    for record in val:
        for key in record:
            if key not in _RESERVED:
                names.setdefault(key, None)
    for key in test:
        names.setdefault(key, None)
    rows = []
    for name in names:
        numbers = [(r.get("step"), _number(r.get(name))) for r in val]
        points = [(step, value) for step, value in numbers if value is not None]
        best = None
        if points:
            # ties go to the earliest step
            best = min(points, key=lambda p: p[1]) if _lower_is_better(name) else max(points, key=lambda p: p[1])
        rows.append(
            {
                "name": name,
                "test": _number(test.get(name)),
                "best": best[1] if best else None,
                "best_step": best[0] if best else None,
                "last": points[-1][1] if points else None,
                "lower_is_better": _lower_is_better(name),
            }
        )
    return rows


def _test_metrics(summary: dict | None, records: list[dict]) -> dict[str, Any]:
    """Test metrics from summary.json, else from the last test line of metrics.jsonl."""
    if summary and isinstance(summary.get("test"), dict) and summary["test"]:
        return summary["test"]
    tests = [r for r in records if r.get("split") == "test"]
    return {k: v for k, v in tests[-1].items() if k not in _RESERVED} if tests else {}


def _load_samples(path: Path, notes: list[str]) -> dict[str, np.ndarray] | None:
    """The arrays of predictions/samples.npz (no pickles), or None with a note when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        notes.append(f"predictions/samples.npz could not be read: {exc}")
        return None


EVALUATION_KEYS = (
    "top1",
    "real_top1",
    "top5",
    "real_top5",
    "variable_topk_subset",
    "variable_topk_fraction",
    "asma",
    "multi_label_fraction",
    "n_images",
    "n_real_scored",
)


def _evaluation_rows(evaluation: dict | None) -> list[tuple[str, Any, Any]] | None:
    """(metric, value, 95% interval) rows of a run's ``evaluation.json`` (multi-label-aware scores)."""
    if not isinstance(evaluation, dict):
        return None
    ci = evaluation.get("ci") or {}
    return [(k, evaluation[k], ci.get(k)) for k in EVALUATION_KEYS if evaluation.get(k) is not None]


def _explanation_figure(number: int, entry: Any, folder: Path, notes: list[str]) -> dict[str, str] | None:
    """One gallery figure (overlay PNG as a data URI and its caption), or None with a note when its file is
    missing or not a PNG inside ``folder``."""
    if not isinstance(entry, dict):
        notes.append(f"explanations/explanations.json entry {number}: skipped, not a JSON object")
        return None
    files = entry.get("files")
    if not isinstance(files, dict):
        files = {}
    overlay = files.get("overlay")
    source = str(entry.get("input") or "")
    what = f"entry {number} ({entry.get('method')}, {source or 'no input'})"
    if not isinstance(overlay, str) or not overlay:
        notes.append(f"explanations/explanations.json {what}: no overlay file listed")
        return None
    path = folder / overlay
    png = _png_inside(path, folder)
    if png is None and path.resolve().is_relative_to(folder.resolve()) and not path.is_file():
        notes.append(f"explanations/{overlay}: overlay of {what} is missing")
        return None
    if png is None:
        notes.append(
            f"explanations/{overlay}: overlay of {what} is not a PNG file inside explanations/ "
            f"(or is over {MAX_OVERLAY_BYTES // 2**20} MiB)"
        )
        return None
    name = Path(source).name or source or "—"
    target = entry.get("target")
    class_name = entry.get("class_name")
    class_name = str(class_name) if class_name not in (None, "") else fmt(target)
    caption = f"{fmt(entry.get('method'))} · {class_name} ({fmt(target)}) · {name} · {fmt(entry.get('score'))}"
    return {
        "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "caption": caption,
        "input": source,
        "file": f"explanations/{overlay}",
        "alt": f"{fmt(entry.get('method'))} saliency map for {class_name} on {name}",
    }


def _explanations(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    """The Explanations section from ``run_dir/explanations/explanations.json`` (written by labelwise explain):
    its metrics table and a gallery of up to :data:`MAX_GALLERY` overlays; None without that file."""
    folder = run_dir / "explanations"
    if not (folder / "explanations.json").is_file():
        return None
    # imported here, not at the top: labelwise.explain loads torch
    from labelwise.explain.outputs import read_index

    try:
        index = read_index(folder)
    except DataError as exc:
        notes.append(f"explanations/explanations.json could not be read: {exc}")
        return None
    if index is None:
        return None
    rows = []
    for number, row in enumerate(index["metrics"]):
        if isinstance(row, dict):
            rows.append(row)
        else:
            notes.append(f"explanations/explanations.json metrics row {number}: skipped, not a JSON object")
    names: dict[str, None] = {"method": None} if rows else {}
    for row in rows:
        for key in row:
            names.setdefault(str(key), None)
    columns = [
        (
            name,
            name != "method"
            and (_lower_is_better(name) or any(w in name.lower() for w in EXPLANATION_LOWER_IS_BETTER)),
        )
        for name in names
    ]
    entries = index["entries"]
    figures = [_explanation_figure(number, entry, folder, notes) for number, entry in enumerate(entries[:MAX_GALLERY])]
    return {
        "columns": columns,
        "rows": [[row.get(name) for name, _ in columns] for row in rows],
        "figures": [f for f in figures if f is not None],
        "total": len(entries),
        "listed": min(len(entries), MAX_GALLERY),
    }


def _activation_words(spec: dict[str, Any]) -> str:
    out = spec["output"]
    if out.get("multilabel"):
        return "per label"
    if out.get("activation") == "softmax":
        return "over classes"
    return "of the one foreground channel"


def _model_section(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    """What the run is as a model, from ``inference.json``: network, output and activation, classes, preprocessing,
    inference settings, and the commands that use it; None without that file."""
    path = run_dir / "inference.json"
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
        net, out, pre, settings = spec["network"], spec["output"], spec["preprocessing"], spec["inference"]
    except (ValueError, KeyError, TypeError) as exc:
        notes.append(f"inference.json could not be read: {exc}")
        return None
    dims = net.get("spatial_dims")
    size = net.get("image_size")
    rows = [("task", f"{spec.get('task')} ({spec.get('method')})")]
    if net.get("key") is None:
        rows.append(
            (
                "network",
                f"{net.get('arguments', {}).get('name')} backbone: no classifier head (transfer it with "
                "model.init_from)",
            )
        )
    else:
        rows += [
            (
                "network",
                f"{net.get('name')} ({dims}D, {net.get('in_channels')} input channel(s), "
                f"{net.get('out_channels')} output(s){f', built for {size}' if size else ''})",
            ),
            ("output", f"{out.get('activation')} ({_activation_words(spec)})"),
            ("classes", ", ".join(f"{i} {n}" for i, n in enumerate(out.get("class_names") or []))),
        ]
    intensity = pre.get("intensity")
    if intensity == "channel":
        stats = ", ".join(f"{m:.4g} ± {s:.4g}" for m, s in zip(pre.get("channel_mean", []), pre.get("channel_std", [])))
        intensity = f"channel (training split mean ± std per channel: {stats})"
    rows.append(
        (
            "preprocessing",
            f"intensity {intensity}"
            + (f"; resized to {pre['image_size']}" if pre.get("image_size") else "")
            + (f"; Harvard-GDP channels {', '.join(pre['modalities'])}" if pre.get("modalities") else ""),
        )
    )
    if spec.get("task") == "segmentation":
        window, overlap = settings.get("window"), settings.get("overlap")
        seen = f"windows {window}, overlap {overlap}" if window else "whole images"
        threshold = settings.get("threshold")
        if settings.get("calibrated_threshold") is not None:
            threshold = f"{settings['calibrated_threshold']:g} (calibrated on the validation cases)"
        temperature = float(settings.get("temperature") or 1.0)
        tempered = f"; logits divided by temperature {temperature:.3g} (fitted on the validation cases)"
        try:  # labelwise calibrate fits the map on cross-fitted probabilities and records it in the summary
            crossfit = json.loads((run_dir / "summary.json").read_text()).get("calibration", {}).get("crossfit")
        except (OSError, ValueError, AttributeError):
            crossfit = None
        fitted = f"cross-fitted on {crossfit['folds']} folds" if crossfit else "fitted on the validation cases"
        mapped = f"; probabilities through an isotonic map ({fitted})"
        rows.append(
            (
                "inference",
                f"threshold {threshold}; {seen}"
                + (tempered if temperature != 1.0 else "")
                + (mapped if settings.get("isotonic") else ""),
            )
        )
    name = run_dir.name
    commands = "\n".join(
        [
            f"labelwise predict runs/{name} --input IMAGES --out runs/{name}-pred",
            f"labelwise explain --run runs/{name} --input IMAGE",
            f"labelwise export runs/{name} --format onnx --out {name}.onnx",
        ]
    )
    return {
        "rows": rows,
        "commands": commands
        if net.get("key") is not None
        else "(a pretraining run: fine-tune or probe it, then use that run)",
    }


SEGMENTATION_SCORES = (
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("precision", "precision"),
    ("sensitivity", "sensitivity"),
    ("volumetric_similarity", "VS"),
    ("hd95", "HD95"),
    ("assd", "ASSD"),
    ("cldice", "clDice"),
)
MAX_SEGMENTATION_CASES = 6


def _segmentation(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    """The per-case segmentation section from ``predictions/test/segmentation.json`` (runs on a manifest): mean ± std
    of every score per reference (and below it per class, for runs with more than 2 classes), and the projections
    and difference maps of up to :data:`MAX_SEGMENTATION_CASES` cases; None without that file."""
    folder = run_dir / "predictions" / "test"
    path = folder / "segmentation.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        references = data["references"]
        figures = data.get("figures", [])
    except (ValueError, KeyError, TypeError) as exc:
        notes.append(f"predictions/test/segmentation.json could not be read: {exc}")
        return None
    from labelwise.metrics.aggregate import empty_mask_note

    rows, empty_notes = [], []
    for name, result in references.items():
        mean, std, count = result.get("mean", {}), result.get("std", {}), result.get("count", {})
        n = len(result.get("cases", []))
        # the cases behind each mean, shown where fewer than all (nan scores, e.g. distances to an empty mask)
        rows.append(
            {
                "reference": name,
                "n": n,
                "class_name": None,
                "values": [(mean.get(key), std.get(key), count.get(key, n)) for key, _ in SEGMENTATION_SCORES],
            }
        )
        if isinstance(count, dict) and "hd95" in count and (note := empty_mask_note(result, n)):
            empty_notes.append(f"against {name}: {note}")
        per_class = result.get("per_class") if isinstance(result.get("per_class"), dict) else {}
        for cls, summary in per_class.items():  # runs with several classes: label k against label k
            if isinstance(summary, dict):
                values = [
                    (
                        summary.get("mean", {}).get(key),
                        summary.get("std", {}).get(key),
                        summary.get("count", {}).get(key, n),
                    )
                    for key, _ in SEGMENTATION_SCORES
                ]
                rows.append({"reference": name, "n": n, "class_name": str(cls), "values": values})
    cases = []
    for entry in figures[:MAX_SEGMENTATION_CASES]:
        images = []
        for key, caption in (("mip", "prediction"), ("diff_label", "vs label"), ("diff_truth", "vs truth")):
            file = entry.get(key) if isinstance(entry, dict) else None
            if not file:
                continue
            png = _png_inside(folder / file, folder)
            if png is None:
                notes.append(f"predictions/test/{file}: missing or not a PNG")
                continue
            images.append(
                {
                    "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                    "caption": f"{entry.get('id')}: {caption}",
                }
            )
        if images:
            cases.append({"id": entry.get("id"), "images": images})
    roi = data.get("roi") or 0
    raters = data.get("raters") if isinstance(data.get("raters"), dict) else None
    calibration = {name: r["calibration"] for name, r in references.items() if isinstance(r.get("calibration"), dict)}
    reliability = reliability_png(calibration) if calibration else None
    return {
        "reliability": "data:image/png;base64," + base64.b64encode(reliability).decode("ascii")
        if reliability
        else None,
        "ece": {name: found.get("ece") for name, found in calibration.items()},
        "raters": (
            {
                "cases": raters.get("cases"),
                "rows": list(zip(raters.get("model", []), raters.get("rater_vs_label", []), strict=False)),
                "between": raters.get("between_raters"),
            }
            if raters
            else None
        ),
        "columns": [label for _, label in SEGMENTATION_SCORES],
        "rows": rows,
        "cases": cases,
        "total": len(figures),
        "listed": len(cases),
        "empty_notes": empty_notes,
        "per_class": any(row["class_name"] is not None for row in rows),
        "roi_note": (
            f"Scored inside the region of interest (the manifest's roi column) of {roi} of the "
            f"{len(figures)} cases; the masks are background outside it."
            if roi
            else ""
        ),
    }


def _per_case_run(run_dir: Path, config: dict[str, Any]) -> bool:
    """Whether the run segments image files (a ``data.manifest`` with ``task: segmentation``): such runs write
    ``predictions/test/`` (cases, figures, segmentation.json) and never ``predictions/samples.npz``."""
    data = config.get("data")
    if not isinstance(data, dict):
        data = {}
    return (run_dir / "predictions" / "test").is_dir() or (
        data.get("task") == "segmentation" and bool(data.get("manifest"))
    )


def _png_inside(path: Path, folder: Path) -> bytes | None:
    """The bytes of ``path`` if it is a PNG file inside ``folder`` of at most ``MAX_OVERLAY_BYTES``, else None."""
    try:
        if not path.resolve().is_relative_to(folder.resolve()) or path.stat().st_size > MAX_OVERLAY_BYTES:
            return None
        png = path.read_bytes()
    except OSError:
        return None
    return png if png.startswith(PNG_MAGIC) else None


def _audits(run_dir: Path, out: Path, notes: list[str]) -> list[dict[str, Any]] | None:
    """The label audits recorded in ``run_dir/audits.json`` (``labelwise audit`` writes it): each with a link to its
    page relative to the report, or a note where the page is gone."""
    path = run_dir / AUDITS
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, list):
            raise ValueError("not a list")
    except ValueError as exc:
        notes.append(f"{AUDITS} could not be read: {exc}")
        return None
    shown = []
    for entry in entries:
        if not isinstance(entry, dict) or "page" not in entry:
            continue
        page = Path(entry["page"])
        page = page if page.is_absolute() else run_dir / page
        href = os.path.relpath(page.resolve(), out.resolve().parent) if page.is_file() else None
        shown.append({**entry, "href": href, "missing": None if href else str(page)})
    return shown or None


def build_report(run_dir: str | Path, out: Path | None = None) -> Path:
    """Write ``run_dir``'s report (figures to ``run_dir/figures/``, one self-contained HTML page to ``out`` or
    ``run_dir/report.html``) and return the page's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run directory {str(run_dir)!r} does not exist (expected a folder written by labelwise train)"
        )
    out = Path(out) if out is not None else run_dir / "report.html"
    notes: list[str] = []

    summary = None
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            notes.append(f"summary.json could not be read: {exc}")
            summary = None

    config_text: str | None = None
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        config_text = (run_dir / "config.yaml").read_text(errors="replace")
        try:
            config = yaml.safe_load(config_text) or {}
        except yaml.YAMLError as exc:
            notes.append(f"config.yaml is not valid YAML: {exc}")
        config = config if isinstance(config, dict) else {}

    records = read_metrics(run_dir / "metrics.jsonl", notes)
    all_records = records or []
    train = [r for r in all_records if r.get("split") == "train"]
    last_train = train[-1] if train else None
    train_rows = [(k, v) for k, v in last_train.items() if k not in _RESERVED] if last_train else []

    samples_path = run_dir / "predictions" / "samples.npz"
    samples = _load_samples(samples_path, notes) if samples_path.is_file() else None
    figures = {
        "loss_curves": save_figure("loss_curves", loss_curves_png, all_records, run_dir, notes) if train else None,
        "samples": save_figure("samples", samples_png, samples, run_dir, notes) if samples else None,
    }

    evaluation = None
    if (run_dir / "evaluation.json").is_file():
        try:
            evaluation = json.loads((run_dir / "evaluation.json").read_text())
        except ValueError as exc:
            notes.append(f"evaluation.json could not be read: {exc}")
    explanations = _explanations(run_dir, notes)
    fairness = None
    if (run_dir / "predictions" / "test_evaluation.json").is_file():
        fairness = fairness_section(run_dir, notes)
    s = summary or {}
    context = {
        "name": str(s.get("name") or config.get("name") or run_dir.resolve().name),
        "status": str(s.get("status") or "unknown"),
        "message": s.get("message") or None,
        "summary": summary,
        "step": s.get("step"),
        "max_steps": s.get("max_steps"),
        "wall_time": _duration(s.get("wall_time_s")),
        "trained_with": s.get("labelwise_version"),
        "metrics_missing": records is None,
        "metric_rows": metric_rows(all_records, _test_metrics(summary, all_records)),
        "last_train": last_train,
        "train_rows": train_rows,
        "figures": figures,
        "samples_missing": not samples_path.is_file(),
        "per_case_run": _per_case_run(run_dir, config),
        "config_text": config_text,
        "notes": notes,
        "version": labelwise.__version__,
        "generated": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "run_dir": str(run_dir),
        "evaluation": _evaluation_rows(evaluation),
        "evaluation_page": (run_dir / "evaluation.html").is_file(),
        "explanations": explanations,
        "fairness": fairness,
        "segmentation": _segmentation(run_dir, notes),
        "model": _model_section(run_dir, notes),
        "audits": _audits(run_dir, out, notes),
    }
    html = environment().get_template("report.html.j2").render(**context)
    return atomic_write(out, html)


__all__ = ["build_report", "fmt", "metric_rows", "read_metrics"]
