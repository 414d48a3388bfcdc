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
    assert any("labelwise.data and labelwise.explain import each other" in v for v in found)
    assert not any("config" in v for v in found)  # under TYPE_CHECKING (data), or downwards (config -> methods)
    assert len(found) == 4


def test_the_command_says_the_package_is_clean():
    result = subprocess.run([sys.executable, "-m", "labelwise.tools.layers"], capture_output=True, text=True)
    assert result.returncode == 0 and "every import runs downwards" in result.stdout
