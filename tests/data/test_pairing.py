"""`labelwise data manifest`: image and mask folders paired by name (whole names, else the tokens that differ from
file to file), splits drawn by seed, given, or taken from a CSV, --append, and the refusals naming the files."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_cli
from PIL import Image

from labelwise.data.manifest import read_manifest
from labelwise.data.pairing import assign_splits, file_keys, natural_key, pair_files
from labelwise.data.volumes import write_volume
from labelwise.errors import DataError

DRIVE = Path("/work/shared/data/drive")


def _picture(path: Path, value: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((8, 8), np.uint8)
    pixels[2:6, 2:6] = value
    Image.fromarray(pixels).save(path)
    return path


def _drive_like(root: Path, numbers, kind: str = "training") -> Path:
    """DRIVE's layout and names: KIND/images/21_training.png, KIND/1st_manual/21_manual1.gif,
    KIND/mask/21_training_mask.gif."""
    for n in numbers:
        _picture(root / kind / "images" / f"{n:02d}_{kind}.png", 200)
        _picture(root / kind / "1st_manual" / f"{n:02d}_manual1.gif")
        _picture(root / kind / "mask" / f"{n:02d}_{kind}_mask.gif")
    return root / kind


def _nifti_set(root: Path, names, labelled=None) -> Path:
    for name in names:
        write_volume(root / "images" / f"{name}.nii.gz", np.ones((4, 4, 3), np.float32))
        if labelled is None or name in labelled:
            write_volume(root / "labels" / f"{name}.nii.gz", np.ones((4, 4, 3), np.int64))
    return root


def _manifest(*args: str) -> tuple[int, str]:
    return invoke_cli("data", "manifest", *map(str, args))


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _splits(path: Path) -> dict[str, str]:
    return {c.id: c.split for c in read_manifest(path)}


def test_drive_layout_pairs_by_key_and_two_folder_sets_combine(tmp_path):
    training = _drive_like(tmp_path, range(21, 41), "training")
    test = _drive_like(tmp_path, range(1, 21), "test")
    out = tmp_path / "m.csv"
    code, text = _manifest(
        "--images",
        training / "images",
        "--labels",
        training / "1st_manual",
        "--roi",
        training / "mask",
        "--val",
        "0.1",
        "--test",
        "0",
        "--out",
        out,
    )
    assert code == 0, text
    assert f"wrote 20 cases (train 18, val 2, test 0) to {out}" in text
    code, text = _manifest(
        "--images",
        test / "images",
        "--labels",
        test / "1st_manual",
        "--roi",
        test / "mask",
        "--split",
        "test",
        "--append",
        "--out",
        out,
    )
    assert code == 0, text
    assert f"wrote 40 cases (train 18, val 2, test 20) to {out}" in text
    cases = read_manifest(out)
    assert [c.id for c in cases] == [f"{n:02d}" for n in range(1, 41)]
    assert Counter(c.split for c in cases) == {"train": 18, "val": 2, "test": 20}
    assert all(c.split == "test" for c in cases[:20])
    case = {c.id: c for c in cases}["21"]
    assert (case.image.name, case.label.name, case.roi.name) == (
        "21_training.png",
        "21_manual1.gif",
        "21_training_mask.gif",
    )
    row = _rows(out)[0]
    assert list(row) == ["id", "image", "label", "split", "roi"]
    assert row == {
        "id": "01",
        "image": "test/images/01_test.png",
        "label": "test/1st_manual/01_manual1.gif",
        "split": "test",
        "roi": "test/mask/01_test_mask.gif",
    }


def test_whole_names_pair_first_and_ids_sort_naturally(tmp_path):
    _nifti_set(tmp_path / "data", ["case10", "case2", "case1", "case3", "case20"])
    out = tmp_path / "manifests" / "m.csv"
    code, text = _manifest(
        "--images", tmp_path / "data" / "images", "--labels", tmp_path / "data" / "labels", "--out", out
    )
    assert code == 0, text
    assert "wrote 5 cases (train 3, val 1, test 1)" in text
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["case1", "case2", "case3", "case10", "case20"]
    assert rows[0]["image"] == os.path.join("..", "data", "images", "case1.nii.gz")
    assert rows[0]["label"] == os.path.join("..", "data", "labels", "case1.nii.gz")
    assert list(rows[0]) == ["id", "image", "label", "split"]


def test_the_key_rule():
    keys = file_keys([Path("21_training_mask.gif"), Path("22_training_mask.gif")])
    assert list(keys.values()) == [("21",), ("22",)]
    assert list(file_keys([Path("21_manual1.gif"), Path("22_manual1.gif")]).values()) == [("21",), ("22",)]
    assert list(file_keys([Path("p-3.scan_a.nii.gz"), Path("p-4.scan_b.nii.gz")]).values()) == [("3", "a"), ("4", "b")]
    assert list(file_keys([Path("21_training.tif")]).values()) == [("21", "training")]  # one file: nothing common
    assert sorted(["10", "2", "case10", "case9", "1"], key=natural_key) == ["1", "2", "10", "case9", "case10"]


def test_leading_zeros_and_case_do_not_matter(tmp_path):
    for n in (1, 2, 3):
        _picture(tmp_path / "img" / f"Img_{n}.png")
        _picture(tmp_path / "seg" / f"seg_{n:03d}.png")
    rows = pair_files(tmp_path / "img", tmp_path / "seg")
    assert [(r["id"], r["image"].name, r["label"].name) for r in rows] == [
        ("1", "Img_1.png", "seg_001.png"),
        ("2", "Img_2.png", "seg_002.png"),
        ("3", "Img_3.png", "seg_003.png"),
    ]


def test_one_image_pairs_with_one_label(tmp_path):
    _picture(tmp_path / "img" / "21_training.png")
    _picture(tmp_path / "seg" / "21_manual1.gif")
    rows = pair_files(tmp_path / "img", tmp_path / "seg")
    assert [(r["id"], r["label"].name) for r in rows] == [("21_training", "21_manual1.gif")]


def test_unpaired_files_are_refused_with_their_names(tmp_path):
    training = _drive_like(tmp_path, range(21, 25))
    _picture(training / "1st_manual" / "41_manual1.gif")
    out = tmp_path / "m.csv"
    code, text = _manifest("--images", training / "images", "--labels", training / "1st_manual", "--out", out)
    assert code == 2 and "no image for 41_manual1.gif" in text and "(keys 41;" in text
    (training / "1st_manual" / "41_manual1.gif").unlink()
    (training / "1st_manual" / "23_manual1.gif").unlink()
    (training / "mask" / "24_training_mask.gif").unlink()
    code, text = _manifest(
        "--images", training / "images", "--labels", training / "1st_manual", "--roi", training / "mask", "--out", out
    )
    assert code == 2 and "no file in --labels" in text and "23_training.png" in text and "--unlabelled" in text
    assert "no file in --roi" in text and "24_training.png" in text
    assert not out.exists()


def test_unlabelled_images_become_unlabelled_training_cases(tmp_path):
    _nifti_set(tmp_path, [f"case{i}" for i in range(6)], labelled={"case0", "case1", "case2", "case3"})
    out = tmp_path / "m.csv"
    code, text = _manifest(
        "--images",
        tmp_path / "images",
        "--labels",
        tmp_path / "labels",
        "--unlabelled",
        "--val",
        "0.25",
        "--test",
        "0.25",
        "--out",
        out,
    )
    assert code == 0, text
    cases = {c.id: c for c in read_manifest(out)}
    assert cases["case4"].label is None and cases["case5"].label is None
    assert cases["case4"].split == cases["case5"].split == "train"
    labelled = Counter(c.split for c in cases.values() if c.labelled)
    assert labelled == {"train": 2, "val": 1, "test": 1}  # shares of the 4 labelled cases
    code, text = _manifest(
        "--images",
        tmp_path / "images",
        "--labels",
        tmp_path / "labels",
        "--unlabelled",
        "--split",
        "test",
        "--out",
        tmp_path / "t.csv",
    )
    assert code == 2 and "unlabelled cases cannot be in the val or test split" in text and "case4" in text


def test_ambiguous_names_are_refused_with_both_files(tmp_path):
    training = _drive_like(tmp_path, range(21, 24))
    _picture(training / "images" / "21-training.tif")
    code, text = _manifest(
        "--images", training / "images", "--labels", training / "1st_manual", "--out", tmp_path / "m.csv"
    )
    assert code == 2 and "ambiguous" in text and "21-training.tif" in text and "21_training.png" in text
    (training / "images" / "21-training.tif").unlink()
    _picture(training / "1st_manual" / "22_manual1.png")
    code, text = _manifest(
        "--images", training / "images", "--labels", training / "1st_manual", "--out", tmp_path / "m.csv"
    )
    assert code == 2 and "ambiguous" in text and "22_manual1.gif" in text and "22_manual1.png" in text


def test_empty_folders_same_folders_and_skipped_files(tmp_path):
    training = _drive_like(tmp_path, range(21, 24))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("x")
    code, text = _manifest("--images", training / "images", "--labels", tmp_path / "empty", "--out", tmp_path / "m.csv")
    assert code == 2 and "no image files" in text and "empty" in text
    code, text = _manifest(
        "--images", training / "images", "--labels", training / "images", "--out", tmp_path / "m.csv"
    )
    assert code == 2 and "--images and --labels name the same folder" in text
    (training / "images" / "notes.txt").write_text("x")
    (training / "images" / ".hidden.png").write_text("x")
    heard = []
    rows = pair_files(training / "images", training / "1st_manual", warn=heard.append)
    assert len(rows) == 3 and len(heard) == 1 and "notes.txt" in heard[0] and ".hidden" not in heard[0]


def test_seeded_splits_are_stable(tmp_path):
    _nifti_set(tmp_path, [f"case{i}" for i in range(1, 11)])
    outs = []
    for name, seed in (("a.csv", "0"), ("b.csv", "0"), ("c.csv", "3")):
        outs.append(tmp_path / name)
        code, text = _manifest(
            "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--seed", seed, "--out", outs[-1]
        )
        assert code == 0 and "(train 7, val 1, test 2)" in text, text
    assert outs[0].read_text() == outs[1].read_text()
    assert _splits(outs[0]) != _splits(outs[2])
    # the draw depends on the seed and the ids only, fixed here so that a change of it is noticed
    drawn = _splits(outs[0])
    assert sorted((i for i, s in drawn.items() if s != "train"), key=natural_key) == ["case3", "case5", "case7"]
    assert drawn["case5"] == "val"
    rows = [{"id": r["id"], "label": r["label"]} for r in pair_files(tmp_path / "images", tmp_path / "labels")]
    assert {r["id"]: r["split"] for r in assign_splits(rows[::-1])} == drawn  # order of the rows does not matter


def test_at_least_one_case_per_split_and_shares_checked(tmp_path):
    rows = [{"id": f"c{i}", "label": "x"} for i in range(3)]
    assert Counter(r["split"] for r in assign_splits(rows)) == {"train": 1, "val": 1, "test": 1}
    assert Counter(r["split"] for r in assign_splits(rows[:2])) == {"train": 2}
    assert Counter(r["split"] for r in assign_splits(rows, val=0.1, test=0)) == {"train": 2, "val": 1}
    with pytest.raises(DataError, match="leave no training cases"):
        assign_splits(rows, val=0.5, test=0.5)
    with pytest.raises(DataError, match="one or the other"):
        assign_splits(rows, val=0.2, split="train")
    with pytest.raises(DataError, match="--split 'training'"):
        assign_splits(rows, split="training")


def test_split_from_an_earlier_manifest(tmp_path):
    _nifti_set(tmp_path, [f"case{i}" for i in range(1, 11)])
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    assert (
        _manifest("--images", tmp_path / "images", "--labels", tmp_path / "labels", "--seed", "5", "--out", first)[0]
        == 0
    )
    code, text = _manifest(
        "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--split-from", first, "--out", second
    )
    assert code == 0, text
    assert _splits(second) == _splits(first)
    lines = first.read_text().splitlines()
    first.write_text("\n".join(line for line in lines if not line.startswith("case7,")) + "\n")
    code, text = _manifest(
        "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--split-from", first, "--out", second
    )
    assert code == 2 and "no split for 1 case(s): case7" in text


def test_append_refuses_duplicate_ids_and_prefix_separates_them(tmp_path):
    _nifti_set(tmp_path / "a", ["case1", "case2", "case3"])
    _nifti_set(tmp_path / "b", ["case1", "case2"])
    out = tmp_path / "m.csv"
    code, text = _manifest(
        "--images",
        tmp_path / "b" / "images",
        "--labels",
        tmp_path / "b" / "labels",
        "--split",
        "test",
        "--append",
        "--out",
        out,
    )
    assert code == 2 and "does not exist" in text
    assert _manifest("--images", tmp_path / "a" / "images", "--labels", tmp_path / "a" / "labels", "--out", out)[0] == 0
    before = out.read_text()
    code, text = _manifest(
        "--images",
        tmp_path / "b" / "images",
        "--labels",
        tmp_path / "b" / "labels",
        "--split",
        "test",
        "--append",
        "--out",
        out,
    )
    assert code == 2 and "already has the id(s) case1, case2" in text and "--prefix" in text
    assert out.read_text() == before
    code, text = _manifest(
        "--images",
        tmp_path / "b" / "images",
        "--labels",
        tmp_path / "b" / "labels",
        "--split",
        "test",
        "--prefix",
        "b_",
        "--append",
        "--out",
        out,
    )
    assert code == 0, text
    assert "wrote 5 cases" in text and "(2 added)" in text
    cases = read_manifest(out)
    assert [c.id for c in cases] == ["b_case1", "b_case2", "case1", "case2", "case3"]
    assert cases[0].image == tmp_path / "b" / "images" / "case1.nii.gz" and cases[0].split == "test"


@pytest.mark.skipif(not DRIVE.is_dir(), reason="the DRIVE data set is not on this machine")
def test_real_drive_manifest(tmp_path):
    out = tmp_path / "drive.csv"
    code, text = _manifest(
        "--images",
        DRIVE / "training" / "images",
        "--labels",
        DRIVE / "training" / "1st_manual",
        "--roi",
        DRIVE / "training" / "mask",
        "--val",
        "0.1",
        "--test",
        "0",
        "--out",
        out,
    )
    assert code == 0, text
    code, text = _manifest(
        "--images",
        DRIVE / "test" / "images",
        "--labels",
        DRIVE / "test" / "1st_manual",
        "--roi",
        DRIVE / "test" / "mask",
        "--split",
        "test",
        "--append",
        "--out",
        out,
    )
    assert code == 0, text
    assert "wrote 40 cases (train 18, val 2, test 20)" in text
    cases = {c.id: c for c in read_manifest(out)}
    assert Counter(c.split for c in cases.values()) == {"train": 18, "val": 2, "test": 20}
    assert (cases["21"].image.name, cases["21"].label.name, cases["21"].roi.name) == (
        "21_training.tif",
        "21_manual1.gif",
        "21_training_mask.gif",
    )
    assert cases["01"].label.name == "01_manual1.gif" and cases["01"].split == "test"


def test_a_manifest_that_fails_its_check_is_not_written(tmp_path):
    _nifti_set(tmp_path, ["case1", "case2"])
    out = tmp_path / "m.csv"
    out.write_text("id,image,label,split\ngone,images/gone.nii.gz,,train\n")
    before = out.read_text()
    code, text = _manifest(
        "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--split", "train", "--append", "--out", out
    )
    assert code == 2 and f"{out}:4: image of gone not found" in text  # rows sorted: case1, case2, gone
    assert out.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["images", "labels", "m.csv"]


def test_match_references_by_name_name_ending_and_key(tmp_path):
    """The one matcher of predict --reference and evaluate segmentation: whole name first, then a name ending
    (_mask, _seg, _label, _gt, _roi), then the manifest's key; inputs without a match left out; the inputs
    themselves are no candidates; a single file pairs with a single input whatever its name."""
    from labelwise.data.pairing import match_references

    inputs = [_picture(tmp_path / "in" / name) for name in ("01_test.png", "02_test.png", "03_test.png", "x.png")]
    refs = tmp_path / "ref"
    for name in ("01_test.png", "01_test_mask.png", "02_test_seg.gif"):
        _picture(refs / name)
    assert match_references(inputs, refs) == {inputs[0]: refs / "01_test.png", inputs[1]: refs / "02_test_seg.gif"}
    keyed = tmp_path / "manual"  # keys over each whole folder: 01, 02, 03 (test dropped) and 03, 04 (manual1 dropped)
    for name in ("03_manual1.gif", "04_manual1.gif"):
        _picture(keyed / name)
    assert match_references(inputs[:3], keyed) == {inputs[2]: keyed / "03_manual1.gif"}
    assert match_references(inputs, tmp_path / "in") == {}  # a folder of the inputs alone
    assert match_references(inputs[:1], keyed / "04_manual1.gif") == {inputs[0]: keyed / "04_manual1.gif"}
    assert match_references(inputs, refs / "01_test_mask.png") == {inputs[0]: refs / "01_test_mask.png"}


@pytest.mark.parametrize(
    "inputs, names, message",
    [
        (("a.png", "b.png"), ("a.png", "a.nii.gz"), r"several reference masks for a\.png: a\.nii\.gz, a\.png"),
        (
            ("a.png", "b.png"),
            ("a_mask.png", "a_seg.png"),
            r"several reference masks for a\.png: a_mask\.png, a_seg\.png",
        ),
        (
            ("03_test.png", "01_test.png"),
            ("3_manual1.gif", "03_manual1.gif", "1_manual1.gif"),
            r"several reference masks for 03_test\.png, all of key 03: 03_manual1\.gif, 3_manual1\.gif",
        ),
    ],
)
def test_match_references_refuses_ambiguous_matches_naming_the_files(tmp_path, inputs, names, message):
    from labelwise.data.pairing import match_references

    inputs = [_picture(tmp_path / "in" / name) for name in inputs]
    for name in names:
        if name.endswith(".nii.gz"):
            write_volume(tmp_path / "ref" / name, np.zeros((8, 8), np.uint8))
        else:
            _picture(tmp_path / "ref" / name)
    with pytest.raises(DataError, match=message):
        match_references(inputs, tmp_path / "ref")


def test_match_references_refuses_two_inputs_of_one_key(tmp_path):
    from labelwise.data.pairing import match_references

    inputs = [_picture(tmp_path / "in" / name) for name in ("1_test.png", "01_test.png", "2_test.png")]
    _picture(tmp_path / "ref" / "01_manual1.gif")
    _picture(tmp_path / "ref" / "02_manual1.gif")
    with pytest.raises(DataError, match=r"ambiguous, 01_test\.png, 1_test\.png have the same key"):
        match_references(inputs, tmp_path / "ref")
    with pytest.raises(DataError, match="no such file or folder"):
        match_references(inputs, tmp_path / "nowhere")
