"""The engine in one process: run directory contents, non-finite guard, checkpoints, learning rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from labelwise.config import load_config
from labelwise.engine.checkpoint import latest_checkpoint, load_state
from labelwise.engine.trainer import learning_rate
from labelwise.methods import METHODS
from labelwise.methods.supervised import Supervised
from labelwise.training import train


def test_run_directory_holds_everything(tmp_path, tiny_config):
    result = train(load_config(tiny_config), tmp_path / "run")
    run = tmp_path / "run"
    assert result.status == "completed" and result.step == 6
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "predictions", "figures"} <= {
        p.name for p in run.iterdir()
    }
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    test = [r for r in records if r["split"] == "test"]
    assert len(test) == 1 and 0 <= test[0]["accuracy"] <= 1
    predictions = np.load(run / "predictions" / "test.npz")
    assert predictions["probability"].shape[1] == 3
    np.testing.assert_allclose(predictions["probability"].sum(1), 1, atol=1e-5)
    assert test[0]["accuracy"] == pytest.approx((predictions["prediction"] == predictions["target"]).mean())
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000003", "step-000006"]
    state = load_state(latest_checkpoint(run / "checkpoints"))  # weights_only=True inside
    assert state["step"] == 6 and "optimizer" in state and "rng" in state
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] == test[0]["accuracy"]
    # The resolved config reloads to the same config.
    assert load_config(run / "config.yaml").to_dict() == load_config(tiny_config).to_dict()


class Counting(Supervised):
    """Supervised, counting its training steps in ``calls``; ``change`` may alter each step's losses."""

    def __init__(self, config, data):
        super().__init__(config, data)
        self.calls = 0

    def training_step(self, batch):
        self.calls += 1
        return self.change(super().training_step(batch))

    def change(self, losses):
        return losses


class NanAfterFour(Counting):
    """Supervised, but the loss turns NaN at the 5th step."""

    name = "nan_after_four"

    def change(self, losses):
        if self.calls >= 5:
            losses["loss"] = losses["loss"] * float("nan")
        return losses


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(METHODS, "nan_after_four", NanAfterFour)
    tiny_config["method"] = "nan_after_four"
    tiny_config["trainer"].update(max_steps=20, checkpoint_every=2, log_every=10)
    result = train(load_config(tiny_config), tmp_path / "run")
    assert result.status == "failed"
    assert "non-finite loss at step 5" in result.message and "step-000004" in result.message
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert checkpoint.name == "step-000004"
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["message"]


class SometimesTerm(Counting):
    """Supervised, reporting an ``extra`` term (the step number) on steps 3, 6, 9, ... only."""

    name = "sometimes_term"

    def change(self, losses):
        if self.calls % 3 == 0:
            losses["extra"] = torch.tensor(float(self.calls))
        return losses


def test_a_term_reported_on_some_steps_is_averaged_over_those_steps(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(METHODS, "sometimes_term", SometimesTerm)
    tiny_config["method"] = "sometimes_term"
    tiny_config["trainer"].update(max_steps=12, checkpoint_every=12, log_every=6)
    train(load_config(tiny_config), tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    # Steps 1-6 report extra at 3 and 6 (mean 4.5), steps 7-12 at 9 and 12 (mean 10.5): not diluted by the steps
    # without it (which would give 1.5 and 3.5).
    assert [(r["step"], r["loss/extra"]) for r in train_records] == [(6, 4.5), (12, 10.5)]


class NanThenInterrupt(NanAfterFour):
    """NaN from the 5th step on, and Ctrl-C at the 7th, before the loop has checked the loss again."""

    name = "nan_then_interrupt"

    def training_step(self, batch):
        if self.calls == 6:
            raise KeyboardInterrupt
        return super().training_step(batch)


def test_interrupt_after_an_unchecked_non_finite_loss_stops_cleanly(tmp_path, tiny_config, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from labelwise.cli import app

    monkeypatch.setitem(METHODS, "nan_then_interrupt", NanThenInterrupt)
    tiny_config["method"] = "nan_then_interrupt"
    tiny_config["trainer"].update(max_steps=20, checkpoint_every=4, log_every=10)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(run)])
    assert result.exit_code == 1, result.output  # not completed
    assert result.exception is None or isinstance(result.exception, SystemExit)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["step"] == 6  # where it stopped, as for a failed run
    assert summary["message"].startswith("interrupted at step 6; non-finite loss at step 5")
    assert "step-000004" in summary["message"]
    assert latest_checkpoint(run / "checkpoints").name == "step-000004"  # nothing written after the bad step
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000004"]
    assert not (run / "metrics.jsonl").exists()  # log_every 10: no record was due before the stop
    assert 'class="status status-stopped"' in (run / "report.html").read_text()


def test_segmentation_run(tmp_path, tiny_config):
    tiny_config["data"]["task"] = "segmentation"
    tiny_config["model"] = {"name": "unet", "channels": [4, 8], "norm": "instance"}
    result = train(load_config(tiny_config), tmp_path / "run")
    assert result.status == "completed"
    assert 0 <= result.test["dice"] <= 1
    samples = np.load(tmp_path / "run" / "predictions" / "samples.npz")
    assert samples["prediction"].shape == samples["image"].shape[:1] + samples["image"].shape[2:]
    assert str(samples["task"]) == "segmentation"


def test_classifier_for_segmentation_is_refused(tmp_path, tiny_config):
    from labelwise.errors import ConfigError

    tiny_config["data"]["task"] = "segmentation"
    with pytest.raises(ConfigError, match="model.name: 'resnet10' is a classification network"):
        train(load_config(tiny_config), tmp_path / "run")


def test_learning_rate_schedule(tiny_config):
    tiny_config["optimizer"] = {"lr": 1.0, "scheduler": "cosine", "warmup_steps": 2}
    tiny_config["trainer"]["max_steps"] = 12
    config = load_config(tiny_config)
    lrs = [learning_rate(config, s) for s in range(12)]
    assert lrs[:2] == [0.5, 1.0]
    assert lrs[2] == pytest.approx(1.0) and lrs[7] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_select_best_tests_the_best_validation_weights(tmp_path, tiny_config):
    """Validation at steps 2, 4, 6 and the end: the test split is scored once, with the weights of the step whose
    validation loss was lowest, and ``labelwise predict``/``explain`` load those weights."""
    from labelwise.inference import load_run

    tiny_config["trainer"].update(val_every=2, select_best="loss", max_steps=6)
    tiny_config["optimizer"] = {"lr": 0.05}  # large steps: the validation loss moves around
    result = train(load_config(tiny_config), tmp_path / "run")
    run = tmp_path / "run"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["loss"] for r in records if r["split"] == "val"}
    best_step = min(val, key=val.get)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"] == {"step": best_step, "metric": "loss", "value": pytest.approx(val[best_step])}
    test = [r for r in records if r["split"] == "test"]
    assert len(test) == 1 and test[0]["step"] == best_step
    best = load_file(str(run / "checkpoints" / "best" / "model.safetensors"))
    last = load_file(str(latest_checkpoint(run / "checkpoints") / "model.safetensors"))
    if best_step != 6:
        assert summary["tested_step"] == best_step
        assert any(not torch.equal(best[k], last[k]) for k in best)
        trained = load_run(run)
        weights = {f"model.{k}": v for k, v in trained.model.state_dict().items()}
        assert all(torch.equal(weights[k], best[k]) for k in best)
    assert result.test["loss"] == pytest.approx(test[0]["loss"])


def test_select_best_names_an_unknown_metric(tmp_path, tiny_config):
    tiny_config["trainer"].update(val_every=3, select_best="dice")
    with pytest.raises(Exception, match="select_best.*no 'dice'"):
        train(load_config(tiny_config), tmp_path / "run")


def test_a_fresh_start_over_a_killed_run_keeps_only_its_own_log(tmp_path, tiny_config):
    run = tmp_path / "run"
    run.mkdir()
    # A run killed before its first checkpoint: a log reaching step 40, no checkpoint.
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "split": "train", "loss": 9.0}) + "\n" for s in (20, 40))
    )
    train(load_config(tiny_config), run)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_a_fresh_start_over_a_run_with_checkpoints_is_refused(tmp_path, tiny_config):
    from labelwise.errors import LabelwiseError

    train(load_config(tiny_config), tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(LabelwiseError, match="holds a run's checkpoints already; resume it"):
        train(load_config(tiny_config), tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("select_best", [None, "dice"])
def test_validation_is_predicted_once_per_weights_and_calibrated_on_the_tested_ones(
    tmp_path, tiny_config, monkeypatch, select_best
):
    """``threshold: calibrate``: the end-of-run validation and the calibration share one prediction of the validation
    cases when they score the same weights; with ``select_best`` choosing an earlier step, the calibration predicts
    them again with the tested (best) weights. The threshold is that prediction's best (oracle: scikit-learn's F1 per
    case at every candidate, averaged; the one nearest 0.5 within the tolerance)."""
    from conftest import make_set
    from sklearn.metrics import f1_score

    from labelwise.engine.trainer import Trainer

    def fingerprint(tensors):
        return tuple(float(v.double().sum()) for _, v in sorted(tensors.items()))

    calls: list[tuple[str, tuple[float, ...], list[torch.Tensor], list[torch.Tensor]]] = []
    original = Trainer.predict_split

    def spy(self, split):
        outputs, target = original(self, split)
        calls.append((split, fingerprint(self.raw_networks["model"].state_dict()), outputs, target))
        return outputs, target

    monkeypatch.setattr(Trainer, "predict_split", spy)
    track = Trainer._track_best  # the validation Dice made best at step 2, so that select_best tests earlier weights
    monkeypatch.setattr(
        Trainer, "_track_best", lambda self, metrics, step: track(self, {"dice": float(step == 2)}, step)
    )
    manifest = make_set(
        tmp_path / "data", splits=("train",) * 3 + ("val",) * 3 + ("test",), unlabelled=(), shape=(8, 12, 12)
    )
    tiny_config["data"] = {"manifest": str(manifest), "task": "segmentation", "patch_size": [8, 8, 8], "batch_size": 2}
    tiny_config["model"] = {"name": "unet", "channels": [4, 8], "norm": "instance"}
    tiny_config["method"] = {"name": "supervised", "threshold": "calibrate"}
    tiny_config["trainer"].update(val_every=2, max_steps=6, select_best=select_best)
    config = load_config(tiny_config)
    train(config, tmp_path / "run")
    val = [(weights, outputs, target) for split, weights, outputs, target in calls if split == "val"]
    assert len(val) >= 3 and all(a[0] != b[0] for a, b in zip(val, val[1:]))  # never the same weights twice in a row
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary.get("tested_step") == (2 if select_best else None)
    tested = load_file(str(run / "checkpoints" / ("best" if select_best else "step-000006") / "model.safetensors"))
    weights, outputs, target = val[-1]  # the calibration's: the last prediction of the validation cases
    assert weights == pytest.approx(fingerprint(tested))
    probability = [(1 - o.float().softmax(0)[0]).numpy() for o in outputs]
    target = [t.numpy().ravel() > 0 for t in target]
    candidates = np.arange(1, 100) / 100
    scores = np.array(
        [
            np.mean([f1_score(y.ravel(), p.ravel() > t, zero_division=1.0) for p, y in zip(probability, target)])
            for t in candidates
        ]
    )
    near = candidates[scores >= scores.max() - 0.005]
    assert summary["calibration"]["threshold"] == pytest.approx(near[np.argmin(np.abs(near - 0.5))])
