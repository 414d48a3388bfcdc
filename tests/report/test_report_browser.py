"""The report as a browser renders it: Debian's chromium driven by Playwright (no downloaded browser)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium

from labelwise.report import build_report

REPO = Path(__file__).resolve().parents[2]


def _fake_run(root: Path) -> Path:
    """A small finished classification run directory, written by hand."""
    run = root / "browser-run"
    (run / "predictions").mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {"name": "browser-run", "method": "supervised", "data": {"task": "classification", "batch_size": 8}}
        )
    )
    lines = [
        {"step": s, "split": "train", "time": s, "loss": 3.0 / s, "loss/ce": 2.0 / s, "lr": 1e-3} for s in range(1, 31)
    ]
    lines += [
        {"step": s, "split": "val", "time": s, "accuracy": a, "loss": 1.5 - a}
        for s, a in [(10, 0.55), (20, 0.875), (30, 0.8)]
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "summary.json").write_text(
        json.dumps(
            {
                "name": "browser-run",
                "status": "completed",
                "step": 30,
                "max_steps": 30,
                "message": "",
                "test": {"accuracy": 0.8333, "loss": 0.7},
                "wall_time_s": 12.5,
            }
        )
    )
    yy, xx = np.mgrid[:32, :32]
    image = np.stack([np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / (20.0 + 15 * i)) for i in range(8)])[:, None]
    np.savez_compressed(
        run / "predictions" / "samples.npz",
        image=image.astype(np.float32),
        target=np.arange(8) % 3,
        prediction=np.array([0, 1, 2, 0, 2, 2, 0, 1]),
        task=np.array("classification"),
        class_names=np.array(["small", "medium", "large"]),
    )
    return run


@pytest.mark.browser
def test_report_in_chromium(tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    report = build_report(_fake_run(tmp_path))
    artifacts = Path(os.environ.get("LABELWISE_TEST_ARTIFACTS") or REPO / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "report.png"
    screenshot.unlink(missing_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(report.resolve().as_uri())
            table = page.locator("#metrics-table")
            assert table.is_visible()
            row = table.locator("tr", has_text="accuracy").first
            assert "0.8333" in row.inner_text() and "0.875" in row.inner_text()
            widths = page.evaluate("Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)")
            assert len(widths) == 2 and all(w > 0 for w in widths), widths
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert screenshot.stat().st_size > 20_000
