"""Shared test helpers: a tiny config, a CLI runner that captures exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, driven by Playwright (no downloaded browser); CI installs it
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip without Debian's chromium here; fail without it in CI, which installs it (see .ci/run)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing, but CI installs Debian's chromium (see .ci/run)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium to run the browser test)")


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``labelwise ARGS`` in a fresh process (as a user would), capturing output."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LABELWISE_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "labelwise", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def invoke_cli(*args: str) -> tuple[int, str]:
    """``labelwise ARGS`` through the real CLI parser in this process (a fresh process costs seconds of imports),
    library errors mapped to exit code 2 as :func:`labelwise.cli.main` maps them: (exit code, output or message)."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from labelwise.errors import LabelwiseError

    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, LabelwiseError):
        return 2, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def bar(i: int, size: int = 32) -> np.ndarray:
    """Case ``i``'s mask of a small PNG set: a vertical bar, 4 pixels wide, its column moving with ``i``."""
    mask = np.zeros((size, size), np.uint8)
    mask[4:28, 6 + 2 * i % 18 : 10 + 2 * i % 18] = 1
    return mask


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


def make_set(
    folder,
    splits=("train", "train", "train", "val", "test"),
    unlabelled=(2,),
    shape=(20, 24, 28),
    spacing=(0.5, 0.6, 0.8),
    truth=False,
):
    """A small manifest of NIfTI volumes with a bright tube (label 1); case ``i`` in ``unlabelled`` has no label.
    With ``truth``, a ``truth`` column names a reference mask: the label with its first slice cleared."""
    rng = np.random.default_rng(0)
    from labelwise.data.volumes import write_volume

    rows = ["id,image,label,split" + (",truth" if truth else "")]
    for i, split in enumerate(splits):
        grid = np.indices(shape)
        mask = ((grid[1] - shape[1] // 2) ** 2 + (grid[2] - shape[2] // 2 - i) ** 2 < 6).astype(np.int64)
        image = (100 * mask + rng.normal(10, 3, shape)).astype(np.float32)
        write_volume(folder / "images" / f"case{i}.nii.gz", image, spacing=spacing)
        write_volume(folder / "labels" / f"case{i}.nii.gz", mask, spacing=spacing)
        label = "" if i in unlabelled else f"labels/case{i}.nii.gz"
        rows.append(f"case{i},images/case{i}.nii.gz,{label},{split}" + (f",truth/case{i}.nii.gz" if truth else ""))
        if truth:
            clean = mask.copy()
            clean[0] = 0
            write_volume(folder / "truth" / f"case{i}.nii.gz", clean, spacing=spacing)
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


# a 3D run of the synthetic vessels config in seconds: 16^3 patches, the narrowest U-Net MSS, 3 steps
TINY_2D = [  # a 2D vessel run of a few seconds (configs/drive-*.yaml on synthetic pictures)
    "data.patch_size=[32,32]",
    "data.patches_per_volume=4",
    "data.batch_size=2",
    "model.channels=[4,8,8,16,16]",
    "trainer.max_steps=6",
    "trainer.checkpoint_every=6",
    "trainer.val_every=0",
]

TINY_3D = [
    "data.patch_size=[16,16,16]",
    "data.patches_per_volume=2",
    "data.batch_size=2",
    "model.channels=[2,4,4,4,4]",
    "trainer.max_steps=3",
    "trainer.checkpoint_every=3",
    "trainer.val_every=0",
]


def assert_dice_by_hand(dice: float, truth: np.ndarray, predicted: np.ndarray) -> None:
    """A case's reported Dice against ``2 |T & P| / (|T| + |P|)`` of the boolean ``truth`` and ``predicted`` voxels it
    covers; nan only where the truth is empty."""
    expected = 2 * (truth & predicted).sum() / max(truth.sum() + predicted.sum(), 1)
    assert dice == pytest.approx(expected) or (np.isnan(dice) and not truth.any())
