"""The command line: train end to end, report, data synth, demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import run_cli

from labelwise.cli import main


def test_train_writes_a_run_and_report(tmp_path, tiny_config, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(config), "--set", "trainer.max_steps=4"])
    assert exit_info.value.code in (0, None)
    run = tmp_path / "runs" / "tiny"
    assert (run / "report.html").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"] == 4
    assert "completed: step 4" in capsys.readouterr().err
    # a second run of the same config does not overwrite the first
    with pytest.raises(SystemExit):
        main(["train", str(config), "--set", "trainer.max_steps=2"])
    assert (tmp_path / "runs" / "tiny-2" / "report.html").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"] == 4


def test_report_rebuilds_from_the_run_directory(tmp_path, tiny_config, capsys):
    from labelwise.config import load_config
    from labelwise.training import train

    train(load_config(tiny_config), tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "again.html")])
    assert exit_info.value.code in (0, None)
    html = (tmp_path / "again.html").read_text()
    assert "metrics-table" in html and "accuracy" in html


def test_report_of_a_missing_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "no such run directory" in capsys.readouterr().err


def test_resume_without_a_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no run there" in capsys.readouterr().err


def _train_then_resume(tmp_path, tiny_config, scheduler, *resume_args):
    """Train 4 steps (checkpoints at 2 and 4), then ``train --resume RUN ARGS``: the run, its config.yaml before the
    resume, and the resume's exit code."""
    tiny_config["optimizer"] = {"scheduler": scheduler}
    tiny_config["trainer"].update(max_steps=4, checkpoint_every=2)
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(tiny_config))
    with pytest.raises(SystemExit) as first:
        main(["train", str(config), "--run-dir", str(run), "--no-report"])
    assert first.value.code in (0, None)
    before = yaml.safe_load((run / "config.yaml").read_text())
    with pytest.raises(SystemExit) as resumed:
        main(["train", "--resume", str(run), "--no-report", *resume_args])
    return run, before, resumed.value.code


def test_resume_with_set_writes_what_ran_into_config_yaml(tmp_path, tiny_config, capsys):
    run, before, code = _train_then_resume(
        tmp_path, tiny_config, "constant", "--set", "trainer.max_steps=6", "--set", "trainer.log_every=2"
    )
    assert code in (0, None)  # the constant schedule: extending the run is fine
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 6 and saved["trainer"]["log_every"] == 2
    before["trainer"].update(max_steps=6, log_every=2)
    assert saved == before  # the rest as it was
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 6 and summary["max_steps"] == 6
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 6
    steps = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train"
    ]
    assert steps == [1, 2, 3, 4, 6]  # log_every 1 up to step 4, then 2


def test_resume_refuses_a_new_max_steps_under_the_cosine_schedule(tmp_path, tiny_config, capsys):
    run, before, code = _train_then_resume(tmp_path, tiny_config, "cosine", "--set", "trainer.max_steps=8")
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: trainer.max_steps: 4 -> 8 refused") and "cosine" in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert yaml.safe_load((run / "config.yaml").read_text()) == before  # nothing written
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["max_steps"] == 4
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 4


def test_data_synth_shapes_writes_a_dataset(tmp_path):
    out = tmp_path / "shapes.npz"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "shapes", "--out", str(out), "--n", "30", "--size", "16", "--dim", "3"])
    assert exit_info.value.code in (0, None)
    arrays = np.load(out)
    assert arrays["image"].shape == (30, 1, 16, 16, 16) and arrays["mask"].shape == (30, 16, 16, 16)


def test_help_lists_every_command():
    """The Commands panel of ``labelwise --help`` names every registered command once, in order (a word search of
    the whole text could not fail: the app's description says "evaluate" and "explain")."""
    import re

    import typer.main

    from labelwise.cli import app

    registered = list(typer.main.get_command(app).commands)
    result = run_cli("--help", env={"COLUMNS": "120"})
    assert result.returncode == 0
    panel = result.stdout.split("Commands")[1]
    assert re.findall(r"^│ ([a-z][\w-]*) ", panel, flags=re.M) == registered
    assert {"train", "predict", "evaluate", "explain", "audit", "export", "report", "demo", "data"} <= set(registered)


def test_quick_demo(tmp_path):
    from labelwise.demo import run_demo

    reports = run_demo(tmp_path, quick=True)
    assert [p.parent.name for p in reports] == [
        "demo",
        "demo-segmentation",
        "demo-multilabel",
        "demo-vessels",
        "demo-raters",
        "demo-semi",
        "demo-pretrain",
        "demo-pretrain-probe",
    ]
    pretrain = json.loads((tmp_path / "demo-pretrain" / "summary.json").read_text())
    assert {"knn_accuracy"} <= set(pretrain["test"])
    semi = json.loads((tmp_path / "demo-semi" / "predictions" / "test_evaluation.json").read_text())
    assert semi["kind"] == "binary" and set(semi["es_auc"]) == {"race", "male", "hispanic", "age_band"}
    assert 'id="fairness"' in (tmp_path / "demo-semi" / "report.html").read_text()
    vessels = json.loads((tmp_path / "demo-vessels" / "predictions" / "test" / "segmentation.json").read_text())
    assert set(vessels["references"]) == {"label", "truth"}
    assert "segmentation-gallery" in (tmp_path / "demo-vessels" / "report.html").read_text()
    audits = json.loads((tmp_path / "demo-vessels" / "audits.json").read_text())  # the demo audits its vessel run
    assert [a["page"] for a in audits] == ["audit/report.html"] and audits[0]["audited"] >= 2
    assert (tmp_path / "demo-vessels" / "audit" / "cases.csv").is_file()
    assert 'href="audit/report.html"' in (tmp_path / "demo-vessels" / "report.html").read_text()
    raters = json.loads((tmp_path / "demo-raters" / "predictions" / "test" / "segmentation.json").read_text())
    assert raters["raters"]["cases"] >= 1 and len(raters["raters"]["model"]) == 2 and raters["soft_labels"]
    assert json.loads((tmp_path / "demo-raters" / "raters.json").read_text())["method"] == "mean"
    assert "segmentation-raters" in (tmp_path / "demo-raters" / "report.html").read_text()
    calibrated = json.loads((tmp_path / "demo-raters" / "inference.json").read_text())["inference"]
    assert calibrated["temperature"] != 1.0 and len(calibrated["isotonic"]["x"]) >= 2
    assert "isotonic map" in (tmp_path / "demo-raters" / "report.html").read_text()
    for run, names in (("demo-vessels", {"foreground"}), ("demo-semi", {"0", "1"})):  # explained as models
        entries = json.loads((tmp_path / run / "explanations" / "explanations.json").read_text())["entries"]
        assert 1 <= len(entries) <= 2 and {e["class_name"] for e in entries} <= names
        assert "explanation-gallery" in (tmp_path / run / "report.html").read_text()
    evaluation = json.loads((tmp_path / "demo-multilabel" / "evaluation.json").read_text())
    assert evaluation["n_images"] == evaluation["n_real_scored"] > 0 and evaluation["real_top1"] >= evaluation["top1"]
    assert all(p.is_file() for p in reports)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["status"] == "completed" and "accuracy" in summary["test"]
    explanations = json.loads((tmp_path / "demo-multilabel" / "explanations" / "explanations.json").read_text())
    assert len(explanations["entries"]) == 4 and [r["method"] for r in explanations["metrics"]] == ["gradcam", "center"]
    assert "explanation-gallery" in (tmp_path / "demo-multilabel" / "report.html").read_text()
