"""benchmarks/noise_matrix.py's table, figure and RESULTS.md section, on hand-made results (no training)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import noise_matrix as nm

DICE = {
    ("clean", "unet-mss"): [0.80, 0.82, 0.81],
    ("clean", "noisy"): [0.805, 0.815, 0.812],
    ("thin", "unet-mss"): [0.70, 0.72, 0.71],
    ("thin", "noisy"): [0.76, 0.77, 0.78],
    ("drop", "unet-mss"): [0.75],
    ("drop", "noisy"): [0.74, 0.79],
}


def results() -> dict:
    out = {"noise": {"drive": {"thin": {"dice": 0.84}}}}
    for (kind, method), values in DICE.items():
        for seed, dice in enumerate(values):
            out[f"drive/{kind}/{method}/steps100/seed{seed}"] = {
                "dice": dice,
                "cldice": dice - 0.1,
                "precision": 0.8,
                "sensitivity": None if seed == 1 else 0.7,
                "wall_minutes": 2.0 + seed,
                "default_steps": True,
            }
    out["drive/thin/unet-mss/steps50/seed0"] = {
        "dice": 0.1,
        "cldice": 0.1,
        "precision": 0.1,
        "sensitivity": 0.1,
        "wall_minutes": 1.0,
        "default_steps": False,
    }  # other steps: not read
    return out


def cells() -> dict:
    return nm.summarise(
        results(), ["drive"], ["clean", "thin", "drop", "erode"], ["unet-mss", "noisy"], [0, 1, 2], steps=100
    )


def test_cells_hold_each_seed_and_list_the_missing_ones():
    table = cells()
    assert table["drive", "thin", "noisy"]["dice"] == DICE["thin", "noisy"]
    assert table["drive", "thin", "unet-mss"]["dice"] == DICE["thin", "unet-mss"]  # the 50-step run is not mixed in
    assert table["drive", "clean", "noisy"]["sensitivity"] == [0.7, 0.7]  # an undefined score is left out
    assert nm.missing_cells(table) == [
        "drive / drop / unet-mss: seed 1, 2",
        "drive / drop / noisy: seed 2",
        "drive / erode / unet-mss: all seeds",
        "drive / erode / noisy: all seeds",
    ]


def test_mean_and_sample_std_over_seeds():
    values = DICE["thin", "noisy"]
    assert nm.fmt(values) == f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    assert nm.fmt([0.75]) == "0.750" and nm.fmt([]) == "-"


def test_paired_difference_and_verdict():
    table = cells()
    diffs = nm.paired(table, "drive", "thin", "noisy", "unet-mss")
    assert diffs == pytest.approx([0.06, 0.05, 0.07])
    assert nm.verdict("thin", diffs) == "**wins**"
    assert nm.paired(table, "drive", "drop", "noisy", "unet-mss") == pytest.approx([-0.01])  # seeds both have
    assert nm.verdict("drop", [-0.01]) == "one seed"
    assert nm.verdict("clean", nm.paired(table, "drive", "clean", "noisy", "unet-mss")) == "holds"
    assert nm.verdict("clean", [-0.01, -0.02]) == "loses > 0.005"
    assert nm.verdict("thin", [0.01, -0.01, 0.02]) == "within std"


def test_markdown_table_rows_and_noise_level():
    text = nm.markdown_table(
        cells(), results()["noise"], ["drive"], ["clean", "thin"], ["unet-mss", "noisy"], ("noisy", "unet-mss")
    )
    assert "| drive | thin (0.840) | noisy | 0.770 ± 0.010 |" in text
    assert "| drive | thin | 0.060 ± 0.010 | 3 | **wins** |" in text


def test_heat_map_writes_a_png_with_missing_cells(tmp_path):
    path = nm.heat_map(
        cells(),
        results()["noise"],
        ["drive"],
        ["clean", "thin", "drop", "erode"],
        ["unet-mss", "noisy"],
        tmp_path / "matrix.png",
        ("noisy", "unet-mss"),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_section_is_replaced_between_the_markers_idempotently():
    before = "# Benchmark results\n\n## Other\n\ntext\n"
    first = nm.replace_section(before, nm.section(["python benchmarks/noise_matrix.py"], "| a |", [], "x.png"))
    assert first.startswith(before.rstrip("\n")) and first.count(nm.START) == 1
    again = nm.replace_section(first, nm.section(["python benchmarks/noise_matrix.py"], "| a |", [], "x.png"))
    assert again == first
    later = first + "\n## After\n"
    updated = nm.replace_section(later, nm.section([], "| b |", ["drive / thin / noisy: all seeds"], "x.png"))
    assert "| b |" in updated and "| a |" not in updated and updated.endswith("## After\n")
    assert "- drive / thin / noisy: all seeds" in updated and updated.count(nm.END) == 1


def test_options_tag_variants_and_scale_pixel_strengths():
    args = nm.parse_args(["--set", "noisy:method.loss=dice_ce", "--tag", "ce", "--methods", "unet-mss", "noisy"])
    assert args.methods == ["unet-mss", "noisy-ce"] and args.compare == ["noisy-ce", "unet-mss"]
    assert nm.base_method("noisy-ce") == "noisy" and nm.base_method("unet-mss") == "unet-mss"
    with pytest.raises(SystemExit):
        nm.parse_args(["--set", "noisy:method.loss=dice_ce"])  # a variant needs a tag
    args = nm.parse_args([])
    assert nm.strength_of("thin", "drive175", args) == 5.0  # round(3 x 1.75): whole pixels
    assert nm.strength_of("erode", "drive175", args) == 2.0 and nm.strength_of("mixed", "drive175", args) == 1.75
    assert nm.strength_of("thin", "drive", args) is None and nm.strength_of("drop", "drive175", args) is None
    assert nm.strength_of("thin", "drive175", nm.parse_args(["--no-scale-strength"])) is None
    args = nm.parse_args(["--strength", "erode=2"])
    assert nm.strength_of("erode", "drive175", args) == 2.0 and nm.kind_key("erode", args) == "erode@2"


def test_noisy_shares_unet_mss_training_only_where_no_mask_is_sparse(tmp_path):
    """A noisy-mask config that differs from drive-unet-mss.yaml only in the threshold and data.sparse_masks: one
    training serves both cells unless some training mask is sparse (then the two train different cases)."""
    import numpy as np

    from labelwise.data.volumes import write_volume

    def manifest(sparse: bool) -> Path:
        folder = tmp_path / ("sparse" if sparse else "full")
        rows = ["id,image,label,split"]
        for i, split in enumerate(["train", "train", "train", "val", "test"]):
            mask = np.zeros((16, 16), np.int64)
            mask[4:12, 6 + i % 2] = 1  # 8 pixels
            if sparse and i == 1:
                mask[:] = 0
            write_volume(folder / f"i{i}.png", mask.astype(np.float32) * 0.5)
            write_volume(folder / f"m{i}.png", mask)
            rows.append(f"c{i},i{i}.png,m{i}.png,{split}")
        (folder / "m.csv").write_text("\n".join(rows) + "\n")
        return folder / "m.csv"

    assert (
        nm.sparse_training_masks(manifest(True), 0.1) == ["c1"] and nm.sparse_training_masks(manifest(False), 0.1) == []
    )
    # the shipped default also predicts magnified (method.scales), so its saved probabilities are not U-Net MSS's
    assert not nm.shares_training("drive", "noisy", "unet-mss", nm.parse_args(["--datasets", "drive"]), manifest(False))
    args = nm.parse_args(["--datasets", "drive", "--set", "noisy:method.scales=[1.0]", "--tag", "one"])
    assert nm.shares_training("drive", "noisy", "unet-mss", args, manifest(False))
    assert not nm.shares_training("drive", "noisy", "unet-mss", args, manifest(True))
    assert not nm.shares_training("drive", "noisy", "unet-mss", args)  # manifest unknown: train both
