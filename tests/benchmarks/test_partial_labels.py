"""benchmarks/partial_labels.py's partly annotated masks and table, on hand-made data (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import partial_labels as pl

from labelwise.data.manifest import read_manifest
from labelwise.data.volumes import read_volume, write_volume


def test_training_masks_keep_one_band_and_the_rest_is_ignored_or_background(tmp_path):
    rows = ["id,image,label,split"]
    for i, split in enumerate(["train", "train", "val"]):
        label = (np.random.default_rng(i).random((40, 30)) < 0.3).astype(np.uint8)
        write_volume(tmp_path / f"i{i}.png", np.full((40, 30), 0.5))
        write_volume(tmp_path / f"m{i}.png", label)
        rows.append(f"c{i},i{i}.png,m{i}.png,{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert pl.partial_manifest(tmp_path / "m.csv", "full", 0.3) == tmp_path / "m.csv"
    for variant, rest in (("ignore", pl.IGNORED), ("naive", 0)):
        cases = {c.id: c for c in read_manifest(pl.partial_manifest(tmp_path / "m.csv", variant, 0.3))}
        for i in range(3):
            label = read_volume(cases[f"c{i}"].label, mask=True, ignore=[pl.IGNORED]).array
            clean = read_volume(tmp_path / f"m{i}.png", mask=True).array
            if i == 2:  # val masks stay whole
                np.testing.assert_array_equal(label, clean)
                continue
            band = pl.band_rows(f"c{i}", 40, 0.3)
            assert band.stop - band.start == 12 and band == pl.band_rows(f"c{i}", 40, 0.3)
            np.testing.assert_array_equal(label[band], clean[band])
            outside = np.ones(40, bool)
            outside[band] = False
            assert (label[outside] == rest).all()


def test_the_table_pairs_each_variant_with_full_on_the_same_seed():
    results = {}
    for seed, (full, ignore, naive) in enumerate([(0.80, 0.79, 0.70), (0.82, 0.80, 0.72)]):
        for variant, dice in (("full", full), ("ignore", ignore), ("naive", naive)):
            results[f"{variant}/share0.3/steps100/seed{seed}"] = {
                "dice": dice,
                "cldice": dice,
                "precision": dice,
                "sensitivity": dice,
                "wall_minutes": 1.0,
            }
    text = pl.table(results, 0.3, 100, [0, 1])
    ignore_row = next(line for line in text.splitlines() if line.startswith("| ignore"))
    assert "0.795 ± 0.007" in ignore_row and "-0.015 ± 0.007" in ignore_row
    assert text.splitlines()[2].startswith("| full") and text.splitlines()[2].endswith("| - | 2 |")
    assert pytest.approx(-0.10) == float(
        next(line for line in text.splitlines() if line.startswith("| naive")).split("|")[7].split("±")[0]
    )
