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
    m[8 + shift : 8 + shift + width, 9 : 9 + width, 2:16] = 1
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
    m[3 + shift : 7 + shift, 3:7] = 1
    return m


def write_cases(tmp_path, cases: dict[str, tuple[np.ndarray, np.ndarray]]):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    for cid, (p, t) in cases.items():
        write_volume(pred / f"{cid}.png", p)
        write_volume(truth / f"{cid}.png", t)
    return pred, truth


def test_empty_masks_are_counted_and_their_distances_left_out_of_the_means(tmp_path):
    empty = np.zeros((12, 12), np.uint8)
    pred, truth = write_cases(
        tmp_path,
        {
            "a": (square(), square()),  # HD95 0, ASSD 0
            "b": (square(1), square()),  # one row down: of the 12 surface pixels of each side 6 are 1 away, 6 touch
            "c": (empty, square()),
            "d": (empty, square(2)),  # empty predictions
            "e": (square(), empty),  # empty reference
            "f": (empty, empty),
        },
    )  # both empty
    result = evaluate_segmentation(pred, truth)
    assert result["cases"][1]["hd95"] == 1.0 and result["cases"][1]["assd"] == 0.5  # (6 x 1 + 6 x 1) / 24
    assert (result["empty_prediction"], result["empty_reference"], result["both_empty"]) == (2, 1, 1)
    assert result["count"] == {
        "dice": 5,
        "iou": 5,
        "precision": 3,
        "sensitivity": 4,
        "volumetric_similarity": 5,
        "hd95": 2,
        "assd": 2,
        "cldice": 5,
    }
    assert result["mean"]["hd95"] == 0.5 and result["mean"]["assd"] == 0.25  # over a and b only
    assert result["mean"]["dice"] == pytest.approx((1 + 0.75 + 0 + 0 + 0) / 5)  # an empty prediction counts as 0
    assert result["notes"] == [
        "HD95/ASSD: 4 of 6 cases have an empty mask (2 an empty prediction, 1 an empty reference, 1 both masks "
        "empty); the distances are undefined there (nan, as MONAI's HD95 gives; its ASSD gives inf with one mask "
        "empty) and their mean is over 2 cases"
    ]
    parsed = json.loads(to_json(result))
    assert parsed["empty_prediction"] == 2 and parsed["count"]["hd95"] == 2 and parsed["cases"][2]["hd95"] is None
    mean_row = dict(zip(format_table(result)[0], format_table(result)[-1], strict=True))
    assert mean_row["HD95 (pixels)"] == "0.50 ± 0.71 (n=2)" and mean_row["Dice"] == "0.350 ± 0.487 (n=5)"
    assert mean_row["case"] == "mean ± std (n=6)"


def test_cli_says_how_many_predictions_are_empty(tmp_path, capsys, monkeypatch):
    from labelwise.cli import main

    monkeypatch.setenv("COLUMNS", "300")  # the whole table on one line per row

    empty = np.zeros((12, 12), np.uint8)
    pred, truth = write_cases(
        tmp_path,
        {"a": (square(), square()), "b": (square(1), square()), "c": (empty, square()), "d": (empty, square(1))},
    )
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth), "--json", str(tmp_path / "s.json")]
        )
    assert exit_info.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert (
        "note: HD95/ASSD: 2 of 4 cases have an empty prediction; the distances are undefined there (nan, as "
        "MONAI's HD95 gives; its ASSD gives inf with one mask empty) and their mean is over 2 cases"
    ) in out
    assert "│ 0.50 ± 0.71 (n=2) │" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert (saved["empty_prediction"], saved["empty_reference"], saved["both_empty"]) == (2, 0, 0)
    assert saved["count"]["hd95"] == 2 and saved["count"]["dice"] == 4 and saved["n"] == 4


def label_map(shape=(16, 18, 12), shift=0, classes=(1, 2, 3)) -> np.ndarray:
    """Boxes of labels ``classes`` (1: a slab, 2: a tube, 3: a cube), class 1 moved by ``shift`` voxels."""
    m = np.zeros(shape, np.uint8)
    if 1 in classes:
        m[2 + shift : 6 + shift, 2:14, 2:10] = 1
    if 2 in classes:
        m[9:11, 3:15, 4:6] = 2
    if 3 in classes:
        m[11:15, 12:16, 7:11] = 3
    return m


@pytest.fixture
def class_folders(tmp_path):
    """Three 3D NIfTI cases with labels 1-3; class 3 is absent from both masks of case c3."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    cases = {
        "c1": (label_map(shift=1), label_map()),
        "c2": (label_map(classes=(1, 2)), label_map()),
        "c3": (label_map(classes=(1, 2)), label_map(classes=(1, 2))),
    }
    for cid, (p, t) in cases.items():
        write_volume(pred / f"{cid}.nii.gz", p, spacing=SPACING)
        write_volume(truth / f"{cid}.nii.gz", t, spacing=SPACING)
    return pred, truth, cases


def test_per_class_json_csv_and_table_from_the_cli(class_folders, tmp_path, monkeypatch):
    from labelwise.metrics.surface import class_scores
    from tests.conftest import invoke_cli

    monkeypatch.setenv("COLUMNS", "300")
    pred, truth, cases = class_folders
    names = ["artery", "vein", "nerve"]
    code, out = invoke_cli(
        "evaluate",
        "segmentation",
        "--pred",
        str(pred),
        "--truth",
        str(truth),
        "--class-names",
        "artery,vein,nerve",
        "--json",
        str(tmp_path / "s.json"),
        "--csv",
        str(tmp_path / "s.csv"),
    )
    assert code == 0, out
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["classes"] == names and result["n"] == 3
    for case in result["cases"]:
        p, t = cases[case["id"]]
        expected = class_scores(p, t, SPACING, names=names)
        assert {n: case[n] for n in SCORE_NAMES} == pytest.approx(segmentation_scores(p, t, SPACING))
        assert list(case["per_class"]) == names
        for name in names:
            assert case["per_class"][name] == pytest.approx(
                {k: None if math.isnan(v) else v for k, v in expected["per_class"][name].items()}, nan_ok=True
            )
    # class 3 ("nerve"): missed in c2 (Dice 0), absent from both masks of c3 (nan, left out of the mean)
    nerve = result["per_class"]["nerve"]
    assert result["cases"][1]["per_class"]["nerve"]["dice"] == 0.0
    assert all(v is None for v in result["cases"][2]["per_class"]["nerve"].values())
    assert nerve["count"]["dice"] == 2 and nerve["mean"]["dice"] == pytest.approx(0.5)
    assert (nerve["empty_prediction"], nerve["empty_reference"], nerve["both_empty"]) == (1, 0, 1)
    vein = result["per_class"]["vein"]
    assert vein["count"]["dice"] == 3 and vein["mean"]["dice"] == 1.0 and vein["std"]["dice"] == 0.0
    artery = [c["per_class"]["artery"]["dice"] for c in result["cases"]]
    assert result["per_class"]["artery"]["mean"]["dice"] == pytest.approx(np.mean(artery))
    assert result["per_class"]["artery"]["std"]["dice"] == pytest.approx(np.std(artery, ddof=1))
    assert any("labels above 1" in note and "artery, vein, nerve" in note for note in result["notes"])

    rows = list(csv.reader(io.StringIO((tmp_path / "s.csv").read_text())))
    assert rows[0] == ["id", "pred", "truth", *SCORE_NAMES, "class"]
    # the whole foreground first (as without classes), then one block of cases + mean + std per class
    assert [(r[0], r[-1]) for r in rows[1:6]] == [("c1", ""), ("c2", ""), ("c3", ""), ("mean", ""), ("std", "")]
    for b, name in enumerate(names):
        block = rows[6 + 5 * b : 11 + 5 * b]
        assert [(r[0], r[-1]) for r in block] == [
            ("c1", name),
            ("c2", name),
            ("c3", name),
            ("mean", name),
            ("std", name),
        ]
        assert float(block[3][3]) == pytest.approx(result["per_class"][name]["mean"]["dice"])
    assert len(rows) == 6 + 5 * 3 and rows[18][0] == "c3" and rows[18][3] == ""  # c3's nerve Dice: nan, an empty cell

    text = " ".join(out.split())
    assert "│ class artery │" in text and "│ class vein │ 1.000 ± 0.000 │" in text
    assert "│ class nerve │ 0.500 ± 0.707 (n=2) │" in text
    assert text.index("mean ± std (n=3)") < text.index("class artery") < text.index("class nerve")


def test_per_class_default_names_and_refusals(class_folders, tmp_path):
    pred, truth, _ = class_folders
    result = evaluate_segmentation(pred, truth)  # labels above 1 found: per class, named by label
    assert result["classes"] == ["1", "2", "3"] and list(result["per_class"]) == ["1", "2", "3"]
    table = format_table(result)
    assert [row[0] for row in table[-3:]] == ["class 1", "class 2", "class 3"]
    with pytest.raises(DataError, match=r"case c1 .*holds label 3, but there are 3 classes .*2 class names given"):
        evaluate_segmentation(pred, truth, class_names=["artery", "vein"])
    binary = evaluate_segmentation(*write_cases(tmp_path / "binary", {"a": (square(), square(1))}))
    assert binary["classes"] == [] and binary["per_class"] == {} and "per_class" not in binary["cases"][0]
    assert to_csv(binary).splitlines()[0] == ",".join(["id", "pred", "truth", *SCORE_NAMES])
    named = evaluate_segmentation(tmp_path / "binary" / "pred", tmp_path / "binary" / "truth", class_names=["lesion"])
    assert named["classes"] == ["lesion"] and named["per_class"]["lesion"]["mean"]["dice"] == binary["mean"]["dice"]
    from tests.conftest import invoke_cli

    code, message = invoke_cli(
        "evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth), "--class-names", "a,,b"
    )
    assert code == 2 and "--class-names 'a,,b'" in message


def blob_set(folder, n=6, size=(32, 32), roi=False):
    """2D PNG cases: a bright disc (label 1) and a dimmer square (label 2) on a dark background; 4 train, 1 val,
    1 test (c5); with ``roi``, a region of interest (``x < 24``) that cuts both."""
    rng = np.random.default_rng(0)
    yy, xx = np.indices(size)
    rows = ["id,image,label,split" + (",roi" if roi else "")]
    for i in range(n):
        cy, cx = 8 + i % 3 * 3, 9 + i % 2 * 4
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
        box = (np.abs(yy - 22 + i % 2) <= 3) & (np.abs(xx - 21 - i % 3) <= 3)
        labels = np.where(disc, 1, np.where(box, 2, 0)).astype(np.uint8)
        image = 0.1 + 0.8 * disc + 0.45 * box + rng.normal(0, 0.03, size)
        write_volume(folder / "images" / f"c{i}.png", np.clip(image, 0, 1).astype(np.float32))
        write_volume(folder / "labels" / f"c{i}.png", labels)
        split = "train" if i < 4 else "val" if i == 4 else "test"
        row = f"c{i},images/c{i}.png,labels/c{i}.png,{split}"
        if roi:
            write_volume(folder / "roi" / f"c{i}_roi.png", (xx < 24).astype(np.uint8))
            row += f",roi/c{i}_roi.png"
        rows.append(row)
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def train_blobs(tmp_path, steps, roi=False):
    """A 3-class U-Net run of ``steps`` steps on :func:`blob_set` through the CLI; its run folder."""
    from tests.conftest import invoke_cli

    manifest = blob_set(tmp_path / "data", roi=roi)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
name: blobs
seed: 0
method: {{name: supervised, loss: dice_ce}}
data: {{manifest: {manifest}, task: segmentation, batch_size: 2, eval_batch_size: 1}}
model: {{name: unet, channels: [8, 16, 32]}}
trainer: {{max_steps: {steps}, checkpoint_every: {steps}, val_every: 0}}
""")
    run = tmp_path / "run"
    code, text = invoke_cli("train", str(config), "--run-dir", str(run))
    assert code == 0, text
    return run


def test_a_three_class_run_scores_its_test_cases_per_class(tmp_path):
    """A short dice_ce run on a 3-class manifest: segmentation.json and the report have per-class rows, each class
    scored label k against label k on the saved masks."""
    from labelwise.data.volumes import read_volume
    from labelwise.metrics.surface import class_scores

    run = train_blobs(tmp_path, 4)
    saved = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    assert saved["classes"] == ["1", "2"]
    label = saved["references"]["label"]
    assert list(label["per_class"]) == ["1", "2"] and set(label["per_class"]["1"]) >= {"mean", "std", "count"}
    (case,) = label["cases"]
    mask = read_volume(run / "predictions" / "test" / "masks" / "c5.png", mask=True).array
    truth = read_volume(tmp_path / "data" / "labels" / "c5.png", mask=True).array
    expected = class_scores(mask, truth, num_classes=3)
    for name in ("1", "2"):
        assert case["per_class"][name]["dice"] == pytest.approx(expected["per_class"][name]["dice"], nan_ok=True)
        assert label["per_class"][name]["count"]["dice"] == 1
    assert case["dice"] == pytest.approx(expected["foreground"]["dice"], nan_ok=True)

    html = (run / "report.html").read_text()
    assert 'id="segmentation-per-class"' in html
    assert html.count('class="segmentation-class"') == 2
    assert "label · class 1" in html and "label · class 2" in html


def test_drive_like_names_pair_by_the_manifest_rule(tmp_path):
    """Predictions named after the images (01_test.png) meet references (01_manual1.gif) and field-of-view masks
    (01_test_mask.gif) of other names; scores inside the roi equal a hand computation."""
    from PIL import Image

    from labelwise.evaluation.segmentation import evaluate_segmentation

    rng = np.random.default_rng(3)
    expected = {}
    for folder in ("pred", "truth", "roi"):
        (tmp_path / folder).mkdir()
    for i in (1, 2):
        pred, truth = rng.random((20, 24)) > 0.6, rng.random((20, 24)) > 0.6
        roi = np.zeros((20, 24), bool)
        roi[3:17, 4:20] = True
        Image.fromarray(pred.astype(np.uint8) * 255).save(tmp_path / "pred" / f"{i:02d}_test.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "truth" / f"{i:02d}_manual1.gif")
        Image.fromarray(roi.astype(np.uint8) * 255).save(tmp_path / "roi" / f"{i:02d}_test_mask.gif")
        p, t = pred & roi, truth & roi
        expected[f"{i:02d}_test"] = 2 * (p & t).sum() / (p.sum() + t.sum())
    result = evaluate_segmentation(tmp_path / "pred", tmp_path / "truth", roi=tmp_path / "roi")
    assert {c["id"]: c["dice"] for c in result["cases"]} == pytest.approx(expected)
    assert result["cases"][0]["truth"].endswith("01_manual1.gif") and result["cases"][0]["roi"].endswith(
        "01_test_mask.gif"
    )


def test_soft_truth_is_scored_as_its_mask_and_said_so_through_the_cli(tmp_path):
    """Probability references (--soft-truth): a float NIfTI foreground probability and 4D NIfTI class maps (through
    nibabel) are scored as their mask at 0.5 and their likeliest class, equal to scoring those hard masks; without
    the option a fractional reference is refused; several raters with soft truth are refused."""
    import nibabel as nib
    from conftest import invoke_cli

    rng = np.random.default_rng(4)
    affine = np.diag([*SPACING, 1.0])
    pred, soft, hard, classes, hard3 = (tmp_path / n for n in ("pred", "soft", "hard", "classes", "hard3"))
    for folder in (pred, soft, hard, classes, hard3):
        folder.mkdir()
    for cid in ("a", "b"):
        labels = rng.integers(0, 3, (10, 11, 9))
        probability = np.clip(rng.random(labels.shape) * 0.6 + 0.4 * (labels > 0), 0, 1).astype(np.float32)
        maps = np.stack([rng.random(labels.shape) + 2 * (labels == k) for k in range(3)]).astype(np.float32)
        maps /= maps.sum(axis=0)
        nib.save(nib.Nifti1Image(probability, affine), str(soft / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image((probability > 0.5).astype(np.uint8), affine), str(hard / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(np.moveaxis(maps, 0, -1), affine), str(classes / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(maps.argmax(0).astype(np.uint8), affine), str(hard3 / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(pred / f"{cid}.nii.gz"))
    for reference, as_hard in ((soft, hard), (classes, hard3)):
        code, text = invoke_cli(
            "evaluate", "segmentation", "--pred", str(pred), "--truth", str(reference), "--soft-truth",
            "--json", str(tmp_path / "soft.json"),
        )  # fmt: skip
        assert code == 0, text
        got = json.loads((tmp_path / "soft.json").read_text())
        assert got["soft_truth"]["threshold"] == 0.5
        expected = evaluate_segmentation(pred, as_hard)
        for case, oracle in zip(got["cases"], expected["cases"]):
            assert case["dice"] == pytest.approx(oracle["dice"]) and case["hd95"] == pytest.approx(oracle["hd95"])
        assert got["classes"] == expected["classes"]
    code, text = invoke_cli("evaluate", "segmentation", "--pred", str(pred), "--truth", str(soft))
    assert code == 2 and "fractional" in text
    code, text = invoke_cli(
        "evaluate", "segmentation", "--pred", str(pred), "--truth", str(soft), "--truth", str(hard), "--soft-truth"
    )
    assert code == 2 and "give each rater's own mask" in text
