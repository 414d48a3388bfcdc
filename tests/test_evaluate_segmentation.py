"""Folder evaluation of segmentation masks (labelwise.evaluation.segmentation) end to end on NIfTI/PNG/npy files."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from labelwise.data.volumes import write_volume
from labelwise.errors import DataError
from labelwise.evaluation.segmentation import (
    evaluate_segmentation,
    format_table,
    to_csv,
    to_json,
)
from labelwise.metrics.surface import SCORE_NAMES, segmentation_scores

SPACING = (0.5, 0.5, 0.8)


def tube(shape=(20, 22, 18), shift=0, width=2) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[8 + shift:8 + shift + width, 9:9 + width, 2:16] = 1
    return m


@pytest.fixture
def folders(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    cases = {"case01": (tube(shift=1), tube()), "case02": (tube(width=3), tube()), "case03": (tube(), tube())}
    for cid, (p, t) in cases.items():
        write_volume(pred / f"{cid}.nii.gz", p, spacing=SPACING)
        write_volume(truth / f"{cid}.nii.gz", t, spacing=SPACING)
    return pred, truth, cases


def test_end_to_end(folders, tmp_path):
    pred, truth, cases = folders
    result = evaluate_segmentation(pred, truth)
    assert result["n"] == 3 and result["spacing_unit"] == "mm" and result["notes"] == []
    assert [c["id"] for c in result["cases"]] == ["case01", "case02", "case03"]
    for case in result["cases"]:
        p, t = cases[case["id"]]
        assert case["pred"].endswith(f"pred/{case['id']}.nii.gz") and case["truth"].endswith(f"{case['id']}.nii.gz")
        assert case["spacing"] == pytest.approx(SPACING)
        assert {n: case[n] for n in SCORE_NAMES} == pytest.approx(segmentation_scores(p, t, SPACING))
    dices = [c["dice"] for c in result["cases"]]
    assert result["mean"]["dice"] == pytest.approx(np.mean(dices))
    assert result["std"]["dice"] == pytest.approx(np.std(dices, ddof=1))
    assert result["count"]["hd95"] == 3 and result["cases"][2]["hd95"] == 0.0

    parsed = json.loads(to_json(result, tmp_path / "out" / "scores.json"))
    assert parsed == json.loads((tmp_path / "out" / "scores.json").read_text())
    assert parsed["mean"]["dice"] == pytest.approx(result["mean"]["dice"])

    rows = list(csv.reader(io.StringIO(to_csv(result))))
    assert rows[0] == ["id", "pred", "truth", *SCORE_NAMES]
    assert [r[0] for r in rows[1:]] == ["case01", "case02", "case03", "mean", "std"]
    assert float(rows[4][3]) == pytest.approx(result["mean"]["dice"])

    table = format_table(result)
    assert table[0][0] == "case" and "HD95 (mm)" in table[0] and len(table) == 5
    assert all(len(row) == len(table[0]) for row in table)
    assert table[-1][0].startswith("mean ± std") and " ± " in table[-1][1]


def test_masks_subfolder_nan_and_labels(tmp_path):
    pred, truth = tmp_path / "run", tmp_path / "truth"
    empty = np.zeros((16, 18), np.uint8)
    write_volume(pred / "masks" / "a.png", empty)
    write_volume(truth / "a.png", empty)  # both empty: every score nan
    labels = tube((16, 18, 6))[:, :, 5] * 2
    write_volume(pred / "masks" / "b.npy", labels.astype(np.int64))  # label 2 counts as foreground
    write_volume(truth / "b.png", labels > 0)
    (pred / "masks" / "notes.txt").write_text("not a mask")  # other files are ignored
    result = evaluate_segmentation(pred, truth)
    assert result["spacing_unit"] == "pixels" and result["n"] == 2
    a, b = result["cases"]
    assert all(math.isnan(a[n]) for n in SCORE_NAMES)
    assert b["dice"] == 1.0 and b["hd95"] == 0.0
    assert result["mean"]["dice"] == 1.0 and math.isnan(result["std"]["dice"]) and result["count"]["dice"] == 1
    assert any("b.npy" in note and "label > 0" in note for note in result["notes"])
    parsed = json.loads(to_json(result))  # strict JSON: nan -> null
    assert parsed["cases"][0]["dice"] is None and parsed["std"]["dice"] is None
    assert format_table(result)[1][1] == "-"
    assert to_csv(result).splitlines()[1].endswith(",,,,,,,")


def test_missing_cases(folders, tmp_path):
    pred, truth, _ = folders
    write_volume(pred / "extra.nii.gz", tube(), spacing=SPACING)
    (truth / "case03.nii.gz").unlink()
    (pred / "case02.nii.gz").unlink()
    expected = r"2 predicted .*without truth .*case03, extra; 1 truth .*without prediction .*case02"
    with pytest.raises(DataError, match=expected):
        evaluate_segmentation(pred, truth)
    result = evaluate_segmentation(pred, truth, allow_missing=True)
    assert [c["id"] for c in result["cases"]] == ["case01"]
    assert result["skipped"] == {"pred_only": ["case03", "extra"], "truth_only": ["case02"]}
    assert "skipped 2" in result["notes"][0] and "skipped 1" in result["notes"][1]
    many = tmp_path / "many"
    for i in range(13):
        write_volume(many / f"m{i:02d}.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"13 predicted .* and 3 more"):
        evaluate_segmentation(many, truth)


def test_mismatches_name_the_files(folders):
    pred, truth, _ = folders
    write_volume(pred / "case02.nii.gz", tube(shape=(20, 22, 17)), spacing=SPACING)
    expected = r"shape mismatch: .*pred/case02\.nii\.gz.*\(20, 22, 17\).*truth/case02\.nii\.gz.*\(20, 22, 18\)"
    with pytest.raises(DataError, match=expected):
        evaluate_segmentation(pred, truth)
    write_volume(pred / "case02.nii.gz", tube(), spacing=(0.5, 0.5, 0.8004))  # within 1e-3 relative
    assert evaluate_segmentation(pred, truth)["n"] == 3
    write_volume(pred / "case02.nii.gz", tube(), spacing=(0.5, 0.5, 1.0))
    with pytest.raises(DataError, match=r"spacing mismatch: .*pred/case02\.nii\.gz.*1\.0.*truth/case02\.nii\.gz.*0\.8"):
        evaluate_segmentation(pred, truth)


def test_bad_folders(folders, tmp_path):
    pred, truth, _ = folders
    with pytest.raises(DataError, match="not found"):
        evaluate_segmentation(tmp_path / "nope", truth)
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no mask files"):
        evaluate_segmentation(tmp_path / "void", truth)
    np.save(pred / "case01.npy", tube())
    with pytest.raises(DataError, match="two files for case 'case01'"):
        evaluate_segmentation(pred, truth)


def square(shift: int = 0) -> np.ndarray:
    """A 4 x 4 square in a 12 x 12 picture, moved down by ``shift`` rows."""
    m = np.zeros((12, 12), np.uint8)
    m[3 + shift:7 + shift, 3:7] = 1
    return m


def write_cases(tmp_path, cases: dict[str, tuple[np.ndarray, np.ndarray]]):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    for cid, (p, t) in cases.items():
        write_volume(pred / f"{cid}.png", p)
        write_volume(truth / f"{cid}.png", t)
    return pred, truth


def test_empty_masks_are_counted_and_their_distances_left_out_of_the_means(tmp_path):
    empty = np.zeros((12, 12), np.uint8)
    pred, truth = write_cases(tmp_path, {
        "a": (square(), square()),  # HD95 0, ASSD 0
        "b": (square(1), square()),  # one row down: of the 12 surface pixels of each side 6 are 1 away, 6 touch
        "c": (empty, square()), "d": (empty, square(2)),  # empty predictions
        "e": (square(), empty),  # empty reference
        "f": (empty, empty)})  # both empty
    result = evaluate_segmentation(pred, truth)
    assert result["cases"][1]["hd95"] == 1.0 and result["cases"][1]["assd"] == 0.5  # (6 x 1 + 6 x 1) / 24
    assert (result["empty_prediction"], result["empty_reference"], result["both_empty"]) == (2, 1, 1)
    assert result["count"] == {"dice": 5, "iou": 5, "precision": 3, "sensitivity": 4, "volumetric_similarity": 5,
                               "hd95": 2, "assd": 2, "cldice": 5}
    assert result["mean"]["hd95"] == 0.5 and result["mean"]["assd"] == 0.25  # over a and b only
    assert result["mean"]["dice"] == pytest.approx((1 + 0.75 + 0 + 0 + 0) / 5)  # an empty prediction counts as 0
    assert result["notes"] == [
        "HD95/ASSD: 4 of 6 cases have an empty mask (2 an empty prediction, 1 an empty reference, 1 both masks "
        "empty); the distances are undefined there (nan, as MONAI's HD95 gives; its ASSD gives inf with one mask "
        "empty) and their mean is over 2 cases"]
    parsed = json.loads(to_json(result))
    assert parsed["empty_prediction"] == 2 and parsed["count"]["hd95"] == 2 and parsed["cases"][2]["hd95"] is None
    mean_row = dict(zip(format_table(result)[0], format_table(result)[-1], strict=True))
    assert mean_row["HD95 (pixels)"] == "0.50 ± 0.71 (n=2)" and mean_row["Dice"] == "0.350 ± 0.487 (n=5)"
    assert mean_row["case"] == "mean ± std (n=6)"


def test_cli_says_how_many_predictions_are_empty(tmp_path, capsys, monkeypatch):
    from labelwise.cli import main

    monkeypatch.setenv("COLUMNS", "300")  # the whole table on one line per row

    empty = np.zeros((12, 12), np.uint8)
    pred, truth = write_cases(tmp_path, {"a": (square(), square()), "b": (square(1), square()),
                                         "c": (empty, square()), "d": (empty, square(1))})
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth), "--json", str(tmp_path / "s.json")])
    assert exit_info.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert ("note: HD95/ASSD: 2 of 4 cases have an empty prediction; the distances are undefined there (nan, as "
            "MONAI's HD95 gives; its ASSD gives inf with one mask empty) and their mean is over 2 cases") in out
    assert "│ 0.50 ± 0.71 (n=2) │" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert (saved["empty_prediction"], saved["empty_reference"], saved["both_empty"]) == (2, 0, 0)
    assert saved["count"]["hd95"] == 2 and saved["count"]["dice"] == 4 and saved["n"] == 4
