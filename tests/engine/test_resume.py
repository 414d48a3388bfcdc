"""Resume after SIGKILL: the resumed run ends with weights bitwise identical to an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import REPO, SMOKE, run_cli
from safetensors.torch import load_file

SETTINGS = [
    "--set",
    "trainer.max_steps=60",
    "--set",
    "trainer.checkpoint_every=5",
    "--set",
    "trainer.val_every=0",
    "--no-report",
]


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 60
    return load_file(str(run_dir / "checkpoints" / latest["path"] / "model.safetensors"))


def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(tmp_path):
    straight = tmp_path / "straight"
    result = run_cli("train", str(SMOKE), "--run-dir", str(straight), *SETTINGS)
    assert result.returncode == 0, result.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelwise", "train", str(SMOKE), "--run-dir", str(killed), *SETTINGS],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 10:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = json.loads(pointer.read_text())["step"]
    assert 10 <= killed_at < 60
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"

    resumed = run_cli("train", "--resume", str(killed), "--no-report")
    assert resumed.returncode == 0, resumed.stderr

    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # The log has each step once, and the resumed run's losses equal the straight run's.
    def losses(run: Path) -> dict[int, float]:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in lines if r["split"] == "train"]
        assert len({r["step"] for r in train}) == len(train)
        return {r["step"]: r["loss"] for r in train}

    assert losses(straight) == losses(killed)
