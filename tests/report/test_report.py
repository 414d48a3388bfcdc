"""The HTML report, built from small run directories written by hand (no training)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import labelwise
from labelwise.report import build_report
from labelwise.report.figures import loss_curves_png, samples_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _write_jsonl(path: Path, records: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def make_classification_run(root: Path, name: str = "cls-run", config_note: str = "plain") -> Path:
    """A finished 2D classification run: 3 classes, val at steps 20/40/60, best val accuracy 0.8125 at 40."""
    run = root / name
    run.mkdir(parents=True)
    config = {
        "name": name,
        "method": "supervised",
        "note": config_note,
        "data": {"task": "classification", "batch_size": 8},
        "trainer": {"max_steps": 60},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    records = []
    for step in range(10, 70, 10):
        records.append(
            {
                "step": step,
                "split": "train",
                "time": step / 10,
                "loss": 2.0 / step * 10,
                "loss/ce": 1.5 / step * 10,
                "loss/reg": 0.5 / step * 10,
                "lr": 0.001,
            }
        )
    for step, acc, loss in [(20, 0.5, 1.2), (40, 0.8125, 0.7), (60, 0.75, 0.55)]:
        records.append(
            {"step": step, "split": "val", "time": step / 10, "accuracy": acc, "loss": loss, "macro_f1": acc - 0.1}
        )
    records.append({"step": 60, "split": "test", "time": 7.0, "accuracy": 0.7917, "loss": 0.61, "macro_f1": 0.69})
    _write_jsonl(run / "metrics.jsonl", records)
    summary = {
        "name": name,
        "status": "completed",
        "step": 60,
        "max_steps": 60,
        "message": "",
        "test": {"accuracy": 0.7917, "loss": 0.61, "macro_f1": 0.69},
        "wall_time_s": 83.2,
        "labelwise_version": labelwise.__version__,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    rng = np.random.default_rng(0)
    _write_npz(
        run / "predictions" / "samples.npz",
        image=rng.normal(size=(6, 1, 16, 16)).astype(np.float32),
        target=np.array([0, 1, 2, 0, 1, 2]),
        prediction=np.array([0, 1, 1, 0, 2, 2]),
        task=np.array("classification"),
        class_names=np.array(["circle", "square", "triangle"]),
    )
    return run


def make_segmentation_3d_run(root: Path, name: str = "seg3d-run") -> Path:
    """An interrupted 3D segmentation run (classes 0..2) whose metrics.jsonl has a garbled and a cut-short line."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "data": {"task": "segmentation"}}))
    records = [
        {"step": s, "split": "train", "time": s, "loss": 1.0 / s, "loss/dice": 0.6 / s, "lr": 0.01}
        for s in (1, 2, 3, 4)
    ]
    records += [
        {"step": 2, "split": "val", "time": 2, "dice": 0.41, "dice/liver": 0.5, "dice/tumour": 0.32},
        {"step": 4, "split": "val", "time": 4, "dice": 0.38, "dice/liver": 0.55, "dice/tumour": None},
    ]
    _write_jsonl(run / "metrics.jsonl", records, extra_lines=("this is not json", '{"step": 5, "split": "tra'))
    summary = {
        "name": name,
        "status": "interrupted",
        "step": 4,
        "max_steps": 10,
        "message": "interrupted at step 4; resume with --resume",
        "test": {},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    image = np.zeros((3, 1, 8, 16, 16), np.float32)
    target = np.zeros((3, 8, 16, 16), np.int64)
    target[:, 2:6, 4:12, 4:12] = 1
    target[:, 3:5, 6:9, 6:9] = 2
    image += target[:, None] * 0.5 + np.random.default_rng(1).normal(0, 0.1, image.shape).astype(np.float32)
    prediction = np.roll(target, 1, axis=-1)
    _write_npz(
        run / "predictions" / "samples.npz",
        image=image,
        target=target,
        prediction=prediction,
        task=np.array("segmentation"),
        class_names=np.array(["liver", "tumour"]),
    )
    return run


class _TableParser(HTMLParser):
    """Rows (lists of cell texts) of the table with a given id."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def table(html: str, table_id: str) -> dict[str, list[str]]:
    """The table ``table_id`` as {first cell (without a ↓ marker): other cells}."""
    parser = _TableParser(table_id)
    parser.feed(html)
    return {row[0].replace("↓", "").strip(): row[1:] for row in parser.rows}


def embedded_pngs(html: str) -> list[Image.Image]:
    """Every image embedded as a PNG data URI, decoded."""
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        raw = base64.b64decode(data)
        assert raw.startswith(PNG_MAGIC)
        images.append(Image.open(io.BytesIO(raw)))
    return images


def test_classification_report(tmp_path):
    run = make_classification_run(tmp_path)
    path = build_report(run)
    assert path == run / "report.html" and path.is_file()
    html = path.read_text()

    rows = table(html, "metrics-table")
    # metric: test, best val, best step, last val (computed by hand from the records above)
    assert rows["accuracy"] == ["0.7917", "0.8125", "40", "0.75"]
    assert rows["loss"] == ["0.61", "0.55", "60", "0.55"]  # lower is better
    assert rows["macro_f1"] == ["0.69", "0.7125", "40", "0.65"]
    train = table(html, "train-table")
    assert train["step"] == ["60"] and train["loss"] == ["0.3333"] and train["loss/ce"] == ["0.25"]
    assert train["lr"] == ["0.001"]

    assert "cls-run" in html and "completed" in html and "1m 23s" in html
    images = embedded_pngs(html)
    assert len(images) == 2 and all(im.width > 100 and im.height > 100 for im in images)
    for name in ("loss_curves.png", "samples.png"):
        assert (run / "figures" / name).read_bytes().startswith(PNG_MAGIC)
    assert "method: supervised" in html  # the config, as YAML
    assert f"labelwise {labelwise.__version__}" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    assert not [p.name for p in run.rglob("*.tmp")]


def test_segmentation_3d_report(tmp_path):
    run = make_segmentation_3d_run(tmp_path)
    html = build_report(run).read_text()
    rows = table(html, "metrics-table")
    assert rows["dice"] == ["—", "0.41", "2", "0.38"]
    assert rows["dice/liver"] == ["—", "0.55", "4", "0.55"]
    assert rows["dice/tumour"] == ["—", "0.32", "2", "0.32"]  # null values are skipped
    assert "interrupted" in html and "interrupted at step 4; resume with --resume" in html
    # the two bad lines are skipped and noted, the rest is shown
    assert "metrics.jsonl line 7: skipped" in html and "metrics.jsonl line 8: skipped" in html
    assert len(embedded_pngs(html)) == 2


def test_escaping(tmp_path):
    run = make_classification_run(tmp_path, name="evil", config_note=XSS)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(name=XSS, message=f"failed: {XSS}", status="failed")
    (run / "summary.json").write_text(json.dumps(summary))
    html = build_report(run).read_text()
    assert XSS not in html
    assert "<script" not in html
    assert html.count(XSS_ESCAPED) >= 3  # title, heading/message, config


def test_missing_files(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    html = build_report(run).read_text()
    for missing in (
        "summary.json is missing",
        "metrics.jsonl is missing",
        "config.yaml is missing",
        "predictions/samples.npz is missing",
    ):
        assert missing in html
    assert "data:image/png" not in html
    assert "empty" in html and "unknown" in html  # name falls back to the folder


def test_only_summary_has_test_metrics(tmp_path):
    run = make_classification_run(tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "predictions" / "samples.npz").unlink()
    html = build_report(run).read_text()
    assert table(html, "metrics-table")["accuracy"] == ["0.7917", "—", "—", "—"]
    assert "metrics.jsonl is missing" in html and "predictions/samples.npz is missing" in html


def test_unreadable_summary_and_samples_are_noted(tmp_path):
    run = make_classification_run(tmp_path)
    (run / "summary.json").write_text("{not json")
    (run / "predictions" / "samples.npz").write_bytes(b"garbage")
    html = build_report(run).read_text()
    assert "summary.json could not be read" in html and "samples.npz could not be read" in html
    # test metrics fall back to the test line of metrics.jsonl
    assert table(html, "metrics-table")["accuracy"][0] == "0.7917"


def test_out_path_and_missing_run_dir(tmp_path):
    run = make_classification_run(tmp_path)
    out = tmp_path / "elsewhere" / "page.html"
    assert build_report(str(run), out) == out and out.is_file()
    assert not (run / "report.html").exists() and (run / "figures" / "samples.png").is_file()
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        build_report(tmp_path / "does-not-exist")


def test_figures_directly():
    assert loss_curves_png([]) is None
    assert loss_curves_png([{"step": 1, "split": "val", "accuracy": 0.5}]) is None
    assert loss_curves_png([{"step": 1, "split": "train", "loss": 0.3}]).startswith(PNG_MAGIC)
    assert samples_png({}) is None
    # no task, no class names: inferred from the prediction's shape; masks with class indices up to 4
    mask = np.random.default_rng(0).integers(0, 5, size=(10, 12, 12))
    png = samples_png({"image": np.ones((10, 3, 12, 12), np.float32), "target": mask, "prediction": mask})
    assert Image.open(io.BytesIO(png)).width > 100
    png = samples_png(
        {
            "image": np.zeros((2, 1, 4, 8, 8), np.float32),
            "target": np.array([0, 1]),
            "prediction": np.array([1, 1]),
            "task": np.array("classification"),
            "class_names": np.array([], dtype=str),
        }
    )  # what the trainer writes without names
    assert png.startswith(PNG_MAGIC)


def test_samples_line_only_where_samples_npz_is_expected(tmp_path):
    """A run on a manifest of image files writes predictions/test/, never samples.npz: its report must not call
    samples.npz missing; a classification run without the file still says so."""
    from conftest import make_set

    from labelwise.config import load_config
    from labelwise.training import train

    manifest = make_set(tmp_path / "data", shape=(8, 12, 12))
    cfg = load_config(
        {
            "name": "seg",
            "seed": 0,
            "method": "frangi",
            "data": {"manifest": str(manifest), "task": "segmentation", "batch_size": 1},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    assert train(cfg, tmp_path / "seg").status == "completed"
    assert (tmp_path / "seg" / "predictions" / "test").is_dir()
    assert not (tmp_path / "seg" / "predictions" / "samples.npz").exists()
    html = build_report(tmp_path / "seg").read_text()
    assert 'id="segmentation"' in html
    assert "samples.npz is missing" not in html and "No samples to show" not in html
    # an interrupted run on a manifest (no predictions yet) does not expect samples.npz either
    (tmp_path / "seg" / "predictions" / "test").rename(tmp_path / "seg" / "elsewhere")
    assert "samples.npz is missing" not in build_report(tmp_path / "seg").read_text()

    run = make_classification_run(tmp_path)
    (run / "predictions" / "samples.npz").unlink()
    assert "predictions/samples.npz is missing: no samples to show." in build_report(run).read_text()


def test_segmentation_section_counts_the_cases_behind_each_mean(tmp_path):
    """segmentation.json as a run writes it (summarize_cases per reference): against ``truth`` 2 of 4 predictions are
    empty, so HD95 and ASSD are means over 2 cases; the report shows those counts and says why."""
    from labelwise.evaluation.segmentation import summarize_cases, to_json
    from labelwise.metrics.surface import segmentation_scores

    square = np.zeros((12, 12), np.uint8)
    square[3:7, 3:7] = 1
    empty = np.zeros_like(square)
    label = [(square, square), (np.roll(square, 1, axis=0), square), (square, square), (np.roll(square, 1, 0), square)]
    truth = [(square, square), (np.roll(square, 1, axis=0), square), (empty, square), (empty, square)]
    references = {}
    for name, pairs in (("label", label), ("truth", truth)):
        cases = [{"id": f"c{i}", **segmentation_scores(p, t)} for i, (p, t) in enumerate(pairs)]
        references[name] = {"cases": cases, **summarize_cases(cases)}
    run = make_segmentation_3d_run(tmp_path)
    (run / "predictions" / "test").mkdir(parents=True)
    (run / "predictions" / "test" / "segmentation.json").write_text(to_json({"references": references, "figures": []}))

    html = build_report(run).read_text()
    rows = table(html, "segmentation-table")
    columns = [c.replace("↓", "").strip() for c in rows.pop("reference")]
    hd95, dice = columns.index("HD95"), columns.index("Dice")
    assert rows["label"][0] == "4" and rows["label"][hd95] == "0.5 ± 0.5774"  # all 4 cases: no count shown
    assert rows["truth"][hd95] == "0.5 ± 0.7071 (n=2)" and rows["truth"][dice] == "0.4375 ± 0.5154"
    assert (
        "against truth: HD95/ASSD: 2 of 4 cases have an empty prediction; the distances are undefined there "
        "(nan, as MONAI&#39;s HD95 gives; its ASSD gives inf with one mask empty) and their mean is over 2 "
        "cases"
    ) in " ".join(html.split())
    assert "against label:" not in html
