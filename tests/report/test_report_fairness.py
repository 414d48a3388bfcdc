"""The fairness report: ROC points against scikit-learn, the ROC figure's panels, the AUC-by-group and by-label
tables against the evaluation JSON, the run report's section (hand-written run directories) and the standalone page,
once in Debian's chromium.

(Not named test_fairness.py: tests/metrics/test_fairness.py has that basename, and tests/ has no packages.)"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from test_report import (
    PNG_MAGIC,
    XSS,
    XSS_ESCAPED,
    _TableParser,
    embedded_pngs,
    make_classification_run,
)

from labelwise.metrics.fairness import summarize_binary
from labelwise.report import build_report
from labelwise.report.fairness import (
    ES_AUC_DEFINITION,
    build_fairness_report,
    fairness_rows,
    fairness_section,
    group_counts,
    label_rows,
    roc_curve_points,
    roc_figure,
    roc_png,
)

REPO = Path(__file__).resolve().parents[2]
RESAMPLES = 200  # bootstrap resamples of the AUC interval: enough for a test


def rows_of(html: str, table_id: str) -> list[list[str]]:
    """The body rows (cell texts) of the table ``table_id``."""
    parser = _TableParser(table_id)
    parser.feed(html)
    return parser.rows[1:]


def cases(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Probabilities of the positive class (rounded: many ties), 0/1 targets, and three attributes; site ``s3`` holds
    negatives only, so it has no AUC."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, n)
    probability = np.round(1 / (1 + np.exp(-(1.5 * target - 0.75 + rng.normal(0, 1, n)))), 2)
    site = np.where((target == 0) & (rng.random(n) < 0.15), "s3", rng.choice(["s1", "s2"], n))
    attributes = {"male": rng.choice(["0", "1"], n), "race": rng.choice(["asian", "black", "white"], n), "site": site}
    return probability, target, attributes


def evaluation_binary(probability, target, attributes) -> dict:
    """test_evaluation.json of a binary run, read back as JSON."""
    result = {
        "kind": "binary",
        "class_names": ["normal", "glaucoma"],
        **summarize_binary(probability, target, attributes, resamples=RESAMPLES),
    }
    return json.loads(json.dumps(result, allow_nan=False))


def evaluation_multilabel(probability, target, attributes, names) -> dict:
    """test_evaluation.json of a multi-label run: per label summarize_binary, top-level keys their macro means."""
    per_label = {
        name: summarize_binary(probability[:, k], target[:, k], attributes, resamples=RESAMPLES)
        for k, name in enumerate(names)
    }

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    keys = ("auc", "accuracy", "balanced_accuracy", "macro_f1", "sensitivity_at_90_specificity", "ece")
    result = {
        "kind": "multilabel",
        "class_names": list(names),
        "n": int(target.shape[0]),
        **{key: mean(e[key] for e in per_label.values()) for key in keys},
        "auc_ci": [mean(e["auc_ci"][i] for e in per_label.values()) for i in (0, 1)],
        "group_auc": {
            a: {g: mean(e["group_auc"][a][g] for e in per_label.values()) for g in per_label[names[0]]["group_auc"][a]}
            for a in attributes
        },
        "group_notes": {},
        "es_auc": {a: mean(e["es_auc"][a] for e in per_label.values()) for a in attributes},
        "per_label": per_label,
    }
    return json.loads(json.dumps(result, allow_nan=False))


def multilabel_cases(n: int = 200, labels: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, (n, labels))
    probability = 1 / (1 + np.exp(-(2 * target - 1 + rng.normal(0, 1, (n, labels)))))
    attributes = {"male": rng.choice(["0", "1"], n), "race": rng.choice(["asian", "black", "white"], n)}
    return probability, target, attributes


def add_predictions(run: Path, probability, target, attributes, evaluation) -> None:
    """The files the engine writes at the end of a classification run with fairness attributes."""
    probability = np.asarray(probability, np.float32)
    if probability.ndim == 1:
        probability = np.stack([1 - probability, probability], axis=1)
    arrays = {
        "probability": probability,
        "target": np.asarray(target, np.int64),
        "prediction": (probability > 0.5).astype(np.int64) if target.ndim == 2 else probability.argmax(1),
        "index": np.arange(len(target)),
        **{f"attribute_{k}": np.asarray(v, dtype=str) for k, v in attributes.items()},
    }
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run / "predictions" / "test.npz", **arrays)
    (run / "predictions" / "test_evaluation.json").write_text(json.dumps(evaluation))


@pytest.mark.parametrize("seed", range(4))
def test_roc_points_match_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    scores = np.round(labels * 0.6 + rng.normal(0, 1, 150), 1)  # rounded: many ties
    fpr, tpr = roc_curve_points(scores, labels)
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, expected_tpr, rtol=0, atol=1e-15)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # ties are one diagonal step: they count 1/2
    assert area == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_points_of_few_distinct_scores_and_one_class():
    labels, scores = np.array([0, 1, 1, 0, 1, 0]), np.array([1, 1, 1, 0, 0, 1])  # two distinct scores only
    fpr, tpr = roc_curve_points(scores, labels)
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert fpr.tolist() == expected_fpr.tolist() and tpr.tolist() == expected_tpr.tolist()
    fpr, tpr = roc_curve_points([0.2, 0.4, 0.4], [1, 1, 1])  # no negatives: the false positive rate is undefined
    assert np.isnan(fpr).all() and tpr.tolist() == [0.0, 2 / 3, 1.0]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_roc_figure_panels_and_legends():
    probability, target, attributes = cases()
    fig = roc_figure(probability, target, attributes, "ROC")
    assert [ax.get_title() for ax in fig.axes] == ["overall", "male", "race", "site"]
    overall, _, race, site = fig.axes
    assert _legend(overall)[0].startswith("all: AUC 0.") and _legend(overall)[-1] == "chance"
    assert len(_legend(race)) == 4  # three groups and chance
    n_s3 = int((attributes["site"] == "s3").sum())
    assert f"s3: no AUC (one class), n={n_s3}" in _legend(site)
    # s1, s2 and the chance diagonal are drawn; s3 only has a legend entry (an empty line)
    assert [len(line.get_xdata()) > 0 for line in site.get_lines()] == [True, True, False, True]

    png = roc_png(probability, target, attributes, "ROC")
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png))
    assert image.size == (1380, 2 * 440 + 40)  # 3 columns x 2 rows of 4.6 x 4.4 in at 100 dpi, plus the title


def test_roc_figure_of_several_labels():
    probability, target, attributes = multilabel_cases()
    names = ["drusen", "$oedema$", "haemorrhage"]  # '$' is text, not mathtext
    fig = roc_figure(probability, target, {"race": attributes["race"]}, label_names=names, label="haemorrhage")
    assert len(fig.axes) == 2
    legend = _legend(fig.axes[0])
    assert [t.split(":")[0] for t in legend] == ["drusen", r"\$oedema\$", "haemorrhage", "chance"]
    assert fig.axes[1].get_title() == "race · haemorrhage"
    assert roc_png(probability, target, None, label_names=names).startswith(PNG_MAGIC)


def test_fairness_rows_equal_the_json():
    probability, target, attributes = cases()
    evaluation = evaluation_binary(probability, target, attributes)
    rows = fairness_rows(evaluation, group_counts(target, attributes))
    assert [r["attribute"] for r in rows if r["summary"]] == ["male", "race", "site"]
    assert len(rows) == 3 + 2 + 3 + 3
    for row in rows:
        attribute, group = row["attribute"], row["group"]
        if row["summary"]:
            assert (row["auc"], row["es_auc"]) == (evaluation["auc"], evaluation["es_auc"][attribute])
            assert (row["n"], row["positives"]) == (evaluation["n"], evaluation["positives"])
            continue
        member = attributes[attribute] == group
        assert row["auc"] == evaluation["group_auc"][attribute][group]
        assert (row["n"], row["positives"]) == (int(member.sum()), int(target[member].sum()))
        if row["auc"] is None:
            assert (attribute, group) == ("site", "s3") and row["gap"] is None
            assert (
                row["note"] == evaluation["group_notes"]["site"]["s3"] == f"no AUC: all {row['n']} cases are negative"
            )
        else:
            assert row["gap"] == pytest.approx(abs(evaluation["auc"] - row["auc"]))
            assert row["note"] is None


def test_fairness_rows_take_counts_from_the_evaluation():
    evaluation = {
        "auc": 0.8,
        "n": 10,
        "positives": 4,
        "es_auc": {"sex": 0.7, "age": None},
        "group_auc": {
            "sex": {"F": {"auc": 0.9, "n": 6, "positives": 3}, "M": {"auc": None, "n": 4, "positives": 0}},
            "age": {"old": 0.75, "young": None},
        },
        "group_n": {"age": {"old": [7, 2], "young": [3, 3]}},
    }
    rows = {(r["attribute"], r["group"]): r for r in fairness_rows(evaluation)}
    assert (rows["sex", "F"]["n"], rows["sex", "F"]["positives"], rows["sex", "F"]["auc"]) == (6, 3, 0.9)
    assert rows["sex", "F"]["gap"] == pytest.approx(0.1)
    assert rows["sex", "M"]["note"] == "no AUC: all 4 cases are negative"
    assert (rows["age", "old"]["n"], rows["age", "old"]["positives"]) == (7, 2)
    assert rows["age", "young"]["note"] == "no AUC: all 3 cases are positive"
    assert rows["age", "(all)"]["es_auc"] is None and rows["sex", "(all)"]["es_auc"] == 0.7
    assert fairness_rows({}) == [] and label_rows({"auc": 0.5}) == []


def test_label_rows_equal_the_json():
    probability, target, attributes = multilabel_cases()
    names = ["drusen", "oedema", "haemorrhage"]
    evaluation = evaluation_multilabel(probability, target, attributes, names)
    rows = label_rows(evaluation)
    assert [r["label"] for r in rows] == [*names, "macro mean"]
    for row, name in zip(rows, names, strict=False):
        entry = evaluation["per_label"][name]
        assert (row["n"], row["positives"], row["auc"], row["auc_ci"]) == (
            entry["n"],
            entry["positives"],
            entry["auc"],
            entry["auc_ci"],
        )
        assert row["es_auc"] == entry["es_auc"] and not row["macro"]
    assert rows[-1]["macro"] and rows[-1]["auc"] == evaluation["auc"] and rows[-1]["es_auc"] == evaluation["es_auc"]


def test_run_report_has_the_fairness_section(tmp_path):
    run = make_classification_run(tmp_path)
    probability, target, attributes = cases()
    evaluation = evaluation_binary(probability, target, attributes)
    add_predictions(run, probability, target, attributes, evaluation)
    html = build_report(run).read_text()

    assert 'id="fairness"' in html and "Classification and fairness (test split)" in html
    headline = {row[0].replace("↓", "").strip(): row[1:] for row in rows_of(html, "fairness-headline-table")}
    lo, hi = evaluation["auc_ci"]
    assert headline["AUC"] == [f"{evaluation['auc']:.4g}", f"{lo:.4g} – {hi:.4g}"]
    assert headline["ECE"][0] == f"{evaluation['ece']:.4g}"
    assert headline["ES-AUC · race"][0] == f"{evaluation['es_auc']['race']:.4g}"
    table = rows_of(html, "fairness-table")
    assert len(table) == 11
    assert [
        "site",
        "(all)",
        "240",
        str(evaluation["positives"]),
        f"{evaluation['auc']:.4g}",
        "",
        f"{evaluation['es_auc']['site']:.4g}",
    ] in table
    s3 = next(row for row in table if row[1] == "s3")
    assert s3[4].startswith("no AUC: all") and s3[5] == "—"
    assert ES_AUC_DEFINITION.startswith("ES-AUC = AUC / (1 + Σ_groups |AUC − AUC_group|) (Luo et al., ICCV 2023)")
    assert ES_AUC_DEFINITION.split(":")[0] in html

    images = embedded_pngs(html)
    assert len(images) == 3  # loss curves, samples, ROC
    assert (run / "figures" / "fairness_roc.png").read_bytes().startswith(PNG_MAGIC)
    assert "figures/fairness_roc.png" in html
    assert max(im.width for im in images) == 1380  # the ROC figure: overall + 3 attributes in 3 columns
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_run_report_of_a_multilabel_run(tmp_path):
    run = make_classification_run(tmp_path, name="ml-run")
    probability, target, attributes = multilabel_cases()
    names = ["drusen", "oedema", "haemorrhage"]
    evaluation = evaluation_multilabel(probability, target, attributes, names)
    add_predictions(run, probability, target, attributes, evaluation)
    html = build_report(run).read_text()
    labels = rows_of(html, "fairness-labels-table")
    assert [row[0] for row in labels] == [*names, "macro mean"]
    assert labels[1][3] == f"{evaluation['per_label']['oedema']['auc']:.4g}"
    assert html.count('<details class="fairness-label">') == 3
    macro = rows_of(html, "fairness-table")
    assert len(macro[0]) == 6  # no positives column: the macro means have none
    assert "by group for drusen" in html

    section = fairness_section(run, label="oedema")
    assert section["figure_label"] == "oedema" and section["multi"]
    oedema = next(item["rows"] for item in section["label_groups"] if item["label"] == "oedema")
    black = next(r for r in oedema if r["group"] == "black" and r["attribute"] == "race")
    member = attributes["race"] == "black"
    assert (black["n"], black["positives"]) == (int(member.sum()), int(target[member, 1].sum()))
    notes = []
    assert fairness_section(run, notes, label="nosuch")["figure_label"] == "drusen"
    assert "nosuch" in notes[0]


def test_runs_without_a_test_evaluation_are_unchanged(tmp_path):
    run = make_classification_run(tmp_path)
    html = build_report(run).read_text()
    assert fairness_section(run) is None
    assert 'id="fairness"' not in html and "ES-AUC" not in html and len(embedded_pngs(html)) == 2


def test_missing_predictions_and_unreadable_evaluation(tmp_path):
    run = make_classification_run(tmp_path)
    probability, target, attributes = cases()
    add_predictions(run, probability, target, attributes, evaluation_binary(probability, target, attributes))
    (run / "predictions" / "test.npz").unlink()
    html = build_report(run).read_text()
    assert "No ROC curves" in html and len(rows_of(html, "fairness-table")) == 11
    assert len(embedded_pngs(html)) == 2

    np.savez(run / "predictions" / "test.npz", probability=np.zeros((3, 2)))  # no target
    notes = []
    assert fairness_section(run, notes)["figure"] is None
    assert notes == ["predictions/test.npz has no target array: no ROC curves"]

    probability2 = np.stack([1 - probability, probability], axis=1)
    np.savez(
        run / "predictions" / "test.npz",
        probability=probability2,
        target=target,
        attribute_race=attributes["race"],
        attribute_site=np.array(list(attributes["site"]), dtype=object),
        attribute_male=attributes["male"][:5],
    )
    notes = []
    section = fairness_section(run, notes)
    assert section["figure"] is not None and len(notes) == 2
    assert "attribute_site could not be read" in notes[0] and "attribute_male has 5 entries for 240 cases" in notes[1]

    (run / "predictions" / "test_evaluation.json").write_text("{not json")
    html = build_report(run).read_text()
    assert "predictions/test_evaluation.json could not be read" in html and 'id="fairness"' not in html


def test_standalone_report(tmp_path):
    probability, target, attributes = cases()
    attributes["race"] = np.where(attributes["race"] == "white", XSS, attributes["race"])
    evaluation = evaluation_binary(probability, target, attributes)
    out = build_fairness_report(
        evaluation, probability, target, attributes, tmp_path / "out" / "fairness.html", title="Glaucoma <b>"
    )
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>Glaucoma &lt;b&gt; · labelwise evaluation</title>" in html
    assert XSS not in html and XSS_ESCAPED in html and "<script" not in html
    assert "http://" not in html and "https://" not in html
    assert len(rows_of(html, "fairness-table")) == 11 and len(rows_of(html, "fairness-headline-table")) == 9
    images = embedded_pngs(html)
    assert len(images) == 1 and images[0].size == (1380, 880)
    assert "Generated by labelwise" in html and "positive class: glaucoma" in html

    # (N, 2) probabilities; no scores: the tables only
    two = np.stack([1 - probability, probability], axis=1)
    assert len(embedded_pngs(build_fairness_report(evaluation, two, target, attributes, out).read_text())) == 1
    html = build_fairness_report(evaluation, None, None, None, out).read_text()
    assert "No ROC curves" in html and len(rows_of(html, "fairness-table")) == 11


@pytest.mark.browser
def test_standalone_report_in_chromium(tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    probability, target, attributes = multilabel_cases()
    names = ["drusen", "oedema", "haemorrhage"]
    evaluation = evaluation_multilabel(probability, target, attributes, names)
    report = build_fairness_report(evaluation, probability, target, attributes, tmp_path / "fairness.html")
    artifacts = Path(os.environ.get("LABELWISE_TEST_ARTIFACTS") or REPO / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "fairness.png"
    screenshot.unlink(missing_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(report.resolve().as_uri())
            assert page.locator("#fairness-table").is_visible() and page.locator("#fairness-labels-table").is_visible()
            assert "macro mean" in page.locator("#fairness-labels-table").inner_text()
            details = page.locator("details.fairness-label").first
            assert not details.locator("table").is_visible()
            details.locator("summary").click()
            assert details.locator("table").is_visible()
            widths = page.evaluate("Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)")
            assert widths == [1380], widths  # overall + 2 attributes in one row
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert screenshot.read_bytes().startswith(PNG_MAGIC) and screenshot.stat().st_size > 20_000
