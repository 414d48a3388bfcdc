"""The package's imports run downwards through its layers (docs/architecture.md), and the checker finds those that
do not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from labelwise.tools.layers import check


def test_the_package_imports_only_downwards():
    assert [str(v) for v in check()] == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    package = root / "labelwise"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "metrics/__init__.py": "",
            "metrics/dice.py": (
                "def f():\n    from labelwise.inference.run import load_run  # a lazy import still counts\n"
            ),
            "engine/__init__.py": "",
            "engine/trainer.py": "from labelwise.methods import METHODS\n",
            "methods/__init__.py": "METHODS = {}\n",
            "inference/__init__.py": "from labelwise.explain.outputs import _png\n",
            "explain/__init__.py": "",
            "explain/outputs.py": "from labelwise.data import reader\n",
            "data/__init__.py": "",
            "data/reader.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from labelwise.config import Config\n"
                "from labelwise.explain import outputs\n"
            ),
            "config.py": "from labelwise.methods import METHODS\n",
        },
    )
    found = [str(v) for v in check(package)]
    assert any(v.startswith("labelwise/metrics/dice.py:2:") and "a higher layer" in v for v in found)
    assert any(v.startswith("labelwise/engine/trainer.py:1:") and "through its interface" in v for v in found)
    assert any(v.startswith("labelwise/inference/__init__.py:1:") and "private name(s) _png" in v for v in found)
    assert any("labelwise.data -> labelwise.explain -> labelwise.data" in v for v in found)
    # a type-only import counts: data (layer 1) reaching up to config (layer 3)
    assert any(v.startswith("labelwise/data/reader.py:3:") and "labelwise.config (layer 3)" in v for v in found)
    assert len(found) == 5


def test_the_checker_finds_cycles_of_any_length_inside_a_package(tmp_path):
    package = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "data/datasets.py": "def f():\n    from labelwise.data.cache import CaseCache\n",
            "data/cache.py": "from labelwise.data import patches\n",
            "data/patches.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from labelwise.data.datasets import Bundle\n"
            ),
            "data/volumes.py": "from labelwise.data.patches import read\n",  # downwards only: not in the cycle
            "engine/__init__.py": "",
            "engine/trainer.py": "from labelwise.methods.base import Method\n",  # the interface is allowed
            "methods/__init__.py": "",
            "methods/base.py": "class Method: ...\n",
        },
    )
    found = [str(v) for v in check(package)]
    assert found == [
        "labelwise/data/cache.py:1: the modules import each other: labelwise.data.cache -> labelwise.data.patches -> "
        "labelwise.data.datasets -> labelwise.data.cache (labelwise/data/cache.py:1, labelwise/data/patches.py:3, "
        "labelwise/data/datasets.py:2)"
    ]


def test_the_command_says_the_package_is_clean():
    result = subprocess.run([sys.executable, "-m", "labelwise.tools.layers"], capture_output=True, text=True)
    assert result.returncode == 0 and "every import runs downwards" in result.stdout
