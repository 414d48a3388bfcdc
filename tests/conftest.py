"""Shared test helpers: a tiny config, a CLI runner that captures exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``labelwise ARGS`` in a fresh process (as a user would), capturing output."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LABELWISE_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "labelwise", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture
def tiny_config() -> dict:
    """A config dict that trains in about a second."""
    return {
        "name": "tiny",
        "seed": 0,
        "method": "supervised",
        "data": {"synth": {"n": 120, "size": 16, "num_classes": 3}, "task": "classification", "batch_size": 8},
        "model": {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "group"},
        "trainer": {"max_steps": 6, "checkpoint_every": 3, "log_every": 1},
    }
