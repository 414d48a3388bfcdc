"""The semi-supervised workflow from the command line, as docs/semi-supervised.md shows it: synthetic maps with a
table, the shipped configs (shortened), and `evaluate classification --attributes` on the run's predictions, on a
CSV of scores and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

from labelwise.metrics.fairness import summarize_binary

SHORT = [
    "--set",
    "trainer.max_steps=3",
    "--set",
    "trainer.checkpoint_every=3",
    "--set",
    "trainer.val_every=0",
    "--set",
    "data.image_size=[16,16]",
    "--set",
    "model.name=resnet10",
    "--set",
    "model.channels=[4,8,8,8]",
    "--set",
    "method.window=2",
]


@pytest.fixture(scope="module")
def rnflt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rnflt") / "rnflt"
    result = run_cli("data", "synth", "rnflt", "--n", "40", "--labelled", "0.5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "data_0040.npz").is_file() and "table.csv" in result.stdout
    return out


def test_detection_run_and_fairness_evaluation(rnflt, tmp_path):
    run = tmp_path / "det"
    result = run_cli(
        "train",
        str(REPO / "configs" / "pseudo-supervisor-detection.yaml"),
        "--run-dir",
        str(run),
        "--set",
        f"data.manifest={rnflt / 'table.csv'}",
        *SHORT,
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((run / "predictions" / "test_evaluation.json").read_text())
    assert saved["kind"] == "binary" and set(saved["group_auc"]) == {"male", "race", "hispanic", "age_band"}
    assert 'id="fairness"' in (run / "report.html").read_text()

    out = tmp_path / "fair.json"
    result = run_cli(
        "evaluate",
        "classification",
        "--predictions",
        str(run / "predictions" / "test.npz"),
        "--attributes",
        str(rnflt / "table.csv"),
        "--attribute",
        "race",
        "--attribute",
        "male",
        "--json",
        str(out),
        "--report",
        str(tmp_path / "fair.html"),
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(out.read_text())
    for key in ("auc", "auc_ci", "group_auc", "es_auc"):
        assert key in scores
    assert set(scores["es_auc"]) == {"race", "male"}
    assert scores["auc"] == pytest.approx(saved["auc"])  # the same numbers as the run's own evaluation
    assert scores["group_auc"]["race"] == saved["group_auc"]["race"]
    assert "ES-AUC" in result.stdout and (tmp_path / "fair.html").is_file()


def test_progression_config_is_multilabel_with_two_channels(rnflt, tmp_path):
    run = tmp_path / "prog"
    result = run_cli(
        "train",
        str(REPO / "configs" / "pseudo-supervisor-progression.yaml"),
        "--run-dir",
        str(run),
        "--set",
        f"data.manifest={rnflt / 'table.csv'}",
        *SHORT,
    )
    assert result.returncode == 0, result.stderr
    assert "failed" not in result.stderr  # every report figure, the multi-label samples included
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["in_channels"] == 2 and summary["data"]["num_classes"] == 6
    saved = json.loads((run / "predictions" / "test_evaluation.json").read_text())
    assert saved["kind"] == "multilabel" and len(saved["per_label"]) == 6


def test_evaluate_a_csv_of_scores_against_labels(tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    labels = rng.integers(0, 2, n)
    score = np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1)
    group = np.array(["a", "b"])[rng.integers(0, 2, n)]
    (tmp_path / "pred.csv").write_text("id,p\n" + "".join(f"s{i},{score[i]:.6f}\n" for i in range(n)))
    (tmp_path / "labels.csv").write_text("id,label\n" + "".join(f"s{i},{labels[i]}\n" for i in range(n)))
    (tmp_path / "groups.csv").write_text("id,site\n" + "".join(f"s{i},{group[i]}\n" for i in range(n)))
    result = run_cli(
        "evaluate",
        "classification",
        "--predictions",
        str(tmp_path / "pred.csv"),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--attributes",
        str(tmp_path / "groups.csv"),
        "--json",
        str(tmp_path / "out.json"),
    )
    assert result.returncode == 0, result.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    expected = summarize_binary(np.round(score, 6), labels, {"site": group})
    assert got["auc"] == pytest.approx(expected["auc"]) and got["es_auc"] == pytest.approx(expected["es_auc"])


def test_evaluate_refuses_unmatched_ids_and_missing_inputs(tmp_path):
    (tmp_path / "pred.csv").write_text("id,p\na,0.2\nb,0.9\n")
    (tmp_path / "labels.csv").write_text("id,label\na,0\nc,1\n")
    result = run_cli(
        "evaluate",
        "classification",
        "--predictions",
        str(tmp_path / "pred.csv"),
        "--labels",
        str(tmp_path / "labels.csv"),
    )
    assert result.returncode == 2 and "not found, e.g. b" in result.stderr
    result = run_cli("evaluate", "classification", "--predictions", str(tmp_path / "pred.csv"))
    assert result.returncode == 2 and "--label-sets" in result.stderr and "--attributes" in result.stderr
