"""The report's Explanations section: metrics table and overlay gallery from ``run_dir/explanations/``."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from labelwise.explain.outputs import write_explanation, write_index
from labelwise.report import build_report

XSS = "<script>alert(1)<script>"  # no slash: captions show the base name


def _fake_run(root: Path) -> Path:
    """A finished classification run directory with a summary and a config only."""
    run = root / "gallery-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: gallery-run\nmethod: supervised\n")
    (run / "summary.json").write_text(
        json.dumps(
            {
                "name": "gallery-run",
                "status": "completed",
                "step": 10,
                "max_steps": 10,
                "message": "",
                "test": {"accuracy": 0.9},
            }
        )
    )
    return run


def _explain(run: Path, n_2d: int = 2, metrics: list[dict] | None = None) -> list[dict]:
    """Write ``n_2d`` 2D overlays and one 3D one into ``run/explanations`` with their index; return the entries."""
    out = run / "explanations"
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n_2d):
        name = f"{XSS}.png" if i == 0 else f"img{i}.png"
        files = write_explanation(out, f"img{i}_gradcam", rng.normal(size=(1, 32, 32)), rng.random((32, 32)))
        entries.append(
            {
                "input": f"inputs/{name}",
                "method": "gradcam",
                "target": i % 3,
                "class_name": ["circle", "square", "triangle"][i % 3],
                "score": 0.25 + i / 100,
                "files": files,
            }
        )
    files = write_explanation(out, "vol_scorecam", rng.normal(size=(1, 6, 16, 16)), rng.random((6, 16, 16)))
    entries.append(
        {"input": "vol.nii.gz", "method": "scorecam", "target": 1, "class_name": "liver", "score": None, "files": files}
    )
    write_index(out, entries, metrics)
    return entries


class _Gallery(HTMLParser):
    """Figure captions and table cells of the Explanations section."""

    def __init__(self):
        super().__init__()
        self.captions, self.cells, self.headers, self.text, self.where = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag in ("figcaption", "td", "th"):
            self.text, self.where = "", tag

    def handle_endtag(self, tag):
        if tag == self.where and self.text is not None:
            {"figcaption": self.captions, "td": self.cells, "th": self.headers}[tag].append(self.text.strip())
            self.text = self.where = None

    def handle_data(self, data):
        if self.text is not None:
            self.text += data


def _section(html: str) -> str:
    match = re.search(r'<section id="explanations">(.*?)</section>', html, re.DOTALL)
    assert match, "no Explanations section"
    return match.group(1)


def test_gallery_and_metrics(tmp_path):
    run = _fake_run(tmp_path)
    metrics = [
        {
            "method": "gradcam",
            "pointing_game": 0.8125,
            "energy_pointing_game": 0.5,
            "deletion_auc": 0.2,
            "insertion_auc": 0.7,
            "average_drop": 12.5,
            "n": 200,
        },
        {
            "method": "scorecam",
            "pointing_game": None,
            "energy_pointing_game": 0.61234,
            "deletion_auc": 0.15,
            "insertion_auc": 0.72,
            "average_drop": 9.0,
            "n": 200,
        },
    ]
    _explain(run, metrics=metrics)
    html = build_report(run).read_text()
    assert "<h2>Explanations</h2>" in html
    section = _section(html)
    # after the metrics table of training, before the training losses
    assert html.index("Explanations</h2>") < html.index("Last training losses")

    parsed = _Gallery()
    parsed.feed(section)
    assert parsed.headers == [
        "method",
        "pointing_game",
        "energy_pointing_game",
        "deletion_auc ↓",
        "insertion_auc",
        "average_drop ↓",
        "n",
    ]
    assert parsed.cells == [
        "gradcam",
        "0.8125",
        "0.5",
        "0.2",
        "0.7",
        "12.5",
        "200",
        "scorecam",
        "—",
        "0.6123",
        "0.15",
        "0.72",
        "9",
        "200",
    ]

    assert parsed.captions == [
        f"gradcam · circle (0) · {XSS}.png · 0.25",
        "gradcam · square (1) · img1.png · 0.26",
        "scorecam · liver (1) · vol.nii.gz · —",
    ]
    assert XSS not in html and "<script" not in html  # the input name is escaped
    assert "&lt;script&gt;alert(1)&lt;script&gt;.png" in section
    sources = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    assert len(sources) == 3
    with Image.open(io.BytesIO(base64.b64decode(sources[0]))) as im:
        assert im.size == (256, 256)
    assert base64.b64decode(sources[2]) == (run / "explanations" / "vol_scorecam_mip.png").read_bytes()
    assert "grid-template-columns" in html and "image-rendering: pixelated" in html
    assert "<h2>Notes</h2>" not in html


def test_gallery_limit_and_missing_overlay(tmp_path):
    run = _fake_run(tmp_path)
    entries = _explain(run, n_2d=30)  # 31 entries, no metrics
    (run / "explanations" / entries[1]["files"]["overlay"]).unlink()
    html = build_report(run).read_text()
    section = _section(html)
    assert "explanation-metrics-table" not in section
    assert section.count("data:image/png;base64,") == 23  # the first 24 entries, one without its file
    assert "The first 24 of 31 explanations" in section
    notes = html[html.index("<h2>Notes</h2>") : html.index("<h2>Metrics</h2>")]
    assert "explanations/img1_gradcam.png: overlay of entry 1 (gradcam, inputs/img1.png) is missing" in notes


def test_unreadable_index_is_a_note(tmp_path):
    run = _fake_run(tmp_path)
    (run / "explanations").mkdir()
    (run / "explanations" / "explanations.json").write_text("{not json")
    html = build_report(run).read_text()
    assert "explanations/explanations.json could not be read" in html
    assert 'id="explanations"' not in html

    write_index(
        run / "explanations",
        [
            {
                "input": "a.png",
                "method": "gradcam",
                "target": 0,
                "class_name": "a",
                "score": 0.5,
                "files": {"overlay": "../../summary.json"},
            }
        ],
    )
    html = build_report(run).read_text()
    assert "not a PNG file inside explanations/" in html and "data:image/png" not in html
    assert re.search(r"\b1 explanation\s+\(method", _section(html))


def test_no_explanations_no_section(tmp_path):
    run = _fake_run(tmp_path)
    (run / "explanations").mkdir()  # an empty folder: nothing written yet
    html = build_report(run).read_text()
    assert "Explanations" not in html and 'class="gallery"' not in html and ".gallery" not in html
    assert "data:image/png" not in html and "<h2>Notes</h2>" not in html
