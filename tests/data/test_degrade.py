"""`labelwise data degrade`: each label-noise simulator on hand-made masks, and the command from a manifest on disk
to the degraded manifest the data loader reads."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from conftest import invoke_cli
from test_roi_intensity import fundus_set

from labelwise.config import DataConfig
from labelwise.data import load_data
from labelwise.data.degrade import degrade_mask, dilate, drop, erode, semi_automatic, thin
from labelwise.data.manifest import read_manifest
from labelwise.data.volumes import read_volume
from labelwise.errors import ConfigError, DataError


def bars(widths=(1, 2, 3, 5), length=40, gap=6):
    """Horizontal bars of the given widths (rows), each ``length`` long, on a 2D mask; returns mask, bar rows."""
    height = sum(widths) + gap * (len(widths) + 1)
    mask = np.zeros((height, length + 2 * gap), np.int64)
    rows, top = [], gap
    for w in widths:
        mask[top:top + w, gap:gap + length] = 1
        rows.append(slice(top, top + w))
        top += w + gap
    return mask, rows


def test_thin_removes_exactly_the_narrower_vessels():
    mask, rows = bars()
    kept = thin(mask, 3)
    inner = slice(10, 40)  # away from the bar ends, where the skeleton stops short
    for w, r in zip((1, 2, 3, 5), rows):
        assert kept[r, inner].all() == (w >= 3) and kept[r, inner].any() == (w >= 3), w
    assert not (kept & (mask == 0)).any()
    assert (thin(mask, 5) <= kept).all()  # a larger width removes more, never adds
    np.testing.assert_array_equal(thin(mask, 1), mask)


def test_thin_keeps_a_trunk_and_drops_its_thin_branch():
    mask = np.zeros((40, 40), np.int64)
    mask[18:23, 2:38] = 1  # a 5-wide trunk
    mask[2:18, 20] = 1  # a 1-wide branch leaving it
    kept = thin(mask, 3)
    np.testing.assert_array_equal(kept[18:23, 6:34], 1)
    assert not kept[2:15, 20].any()


def test_thin_in_3d_measures_tube_diameters():
    zz, yy, xx = np.indices((20, 24, 30))
    thick = ((yy - 6) ** 2 + (zz - 10) ** 2) <= 2.5 ** 2  # diameter 5
    fine = (np.abs(yy - 17) == 0) & (np.abs(zz - 10) == 0)  # a one-voxel line
    kept = thin((thick | fine).astype(np.int64), 3)
    assert kept[:, :, 8:22][thick[:, :, 8:22]].all()
    assert not kept[fine].any()


def test_erode_and_dilate_move_the_border_by_a_ball():
    square = np.zeros((11, 11), np.int64)
    square[2:9, 2:9] = 1
    expected = np.zeros_like(square)
    expected[3:8, 3:8] = 1
    np.testing.assert_array_equal(erode(square, 1), expected)
    dot = np.zeros((9, 9), np.int64)
    dot[4, 4] = 1
    grown = dilate(dot, 2)
    assert grown.sum() == 13  # lattice points with x^2 + y^2 <= 4
    assert grown[4, 2] == 1 and grown[2, 2] == 0
    line = np.zeros((9, 20), np.int64)
    line[4, 2:18] = 1
    assert not erode(line, 1).any()  # a vessel thinner than twice the shift vanishes


def test_drop_removes_the_share_of_components_reproducibly():
    mask = np.zeros((5, 40), np.int64)
    mask[2, ::4] = 1  # 10 separate dots
    a = drop(mask, 0.3, np.random.default_rng(0))
    assert a.sum() == 7 and (a <= mask).all()
    np.testing.assert_array_equal(a, drop(mask, 0.3, np.random.default_rng(0)))
    draws = {drop(mask, 0.3, np.random.default_rng(s)).tobytes() for s in range(5)}
    assert len(draws) > 1
    np.testing.assert_array_equal(drop(mask, 0.0, np.random.default_rng(0)), mask)
    assert not drop(mask, 1.0, np.random.default_rng(0)).any()


def test_semi_automatic_follows_the_image_channel_and_polarity_and_ignores_the_roi_border():
    rng = np.random.default_rng(0)
    yy, xx = np.indices((64, 64))
    vessels = ((np.abs(yy - 20) <= 1) | (np.abs(xx - 40) <= 1)) & (yy > 8) & (yy < 56) & (xx > 8) & (xx < 56)
    roi = ((yy - 32) ** 2 + (xx - 32) ** 2) <= 30 ** 2
    image = np.stack([rng.normal(0.5, 0.05, (64, 64)),  # channel 0: noise only
                      np.where(vessels, 0.3, 0.7) + rng.normal(0, 0.02, (64, 64))])  # channel 1: dark vessels
    image = np.where(roi, image, 0.0).astype(np.float32)  # a dark outside: a strong edge on the roi border
    out = semi_automatic(image, vessels.astype(np.int64), min_size=10, roi=roi)
    dice = 2 * (out.astype(bool) & vessels).sum() / (out.sum() + vessels.sum())
    assert dice > 0.7
    ring = roi & ~(((yy - 32) ** 2 + (xx - 32) ** 2) <= 24 ** 2)
    assert not (out.astype(bool) & ring & ~vessels).any()
    flipped = semi_automatic(1.0 - image[1:], vessels.astype(np.int64), min_size=10, roi=roi)  # bright vessels
    assert 2 * (flipped.astype(bool) & vessels).sum() / (flipped.sum() + vessels.sum()) > 0.7


def test_bad_input_is_refused_in_one_line():
    mask, _ = bars()
    with pytest.raises(ConfigError, match="unknown kind 'blur'"):
        degrade_mask("blur", mask)
    with pytest.raises(ConfigError, match="drop .* must be in \\[0, 1\\]"):
        degrade_mask("drop", mask, 1.5)
    with pytest.raises(ConfigError, match="needs? the image|pass image"):
        degrade_mask("semi-automatic", mask)
    with pytest.raises(DataError, match="several foreground classes"):
        degrade_mask("thin", mask * np.arange(mask.shape[1]) % 3)


def test_the_command_writes_a_manifest_the_loader_reads(tmp_path):
    """Training masks are the degraded ones, truth keeps the clean masks, val and test keep their references; the
    degraded PNGs read back as 0/1 through the data loader."""
    manifest = fundus_set(tmp_path / "set")
    code, text = invoke_cli("data", "degrade", "--manifest", str(manifest), "--kind", "dilate", "--out",
                            str(tmp_path / "noisy"))
    assert code == 0, text
    out = tmp_path / "noisy" / "manifest.csv"
    def cases(path):
        return {c.id: dataclasses.replace(c, **{k: getattr(c, k) and getattr(c, k).resolve()
                                    for k in ("image", "label", "truth", "roi")}) for c in read_manifest(path)}

    before, after = cases(manifest), cases(out)
    assert before.keys() == after.keys()
    for cid, case in after.items():
        old = before[cid]
        assert case.split == old.split and case.image == old.image and case.roi == old.roi
        if case.split == "train":
            assert case.label.parent == (tmp_path / "noisy" / "labels").resolve() and case.truth == old.label
            np.testing.assert_array_equal(read_volume(case.label, mask=True).array,
                                          dilate(read_volume(old.label, mask=True).array, 1))
        else:
            assert case.label == old.label and case.truth is None
    data = load_data(DataConfig(manifest=out, task="segmentation"))
    train = data.split("train")
    for i, case in enumerate(c for c in after.values() if c.split == "train"):
        np.testing.assert_array_equal(train.target[i].numpy(), read_volume(case.label, mask=True).array)
    with out.open(newline="") as handle:
        assert list(csv.DictReader(handle))[0]["label"].startswith("labels/")  # relative: the folder can move

    code, text = invoke_cli("data", "degrade", "--manifest", str(manifest), "--kind", "thin", "--strength", "-1",
                            "--out", str(tmp_path / "bad"))
    assert code == 2 and "thin" in text and ">= 0" in text
    assert not (tmp_path / "bad" / "manifest.csv").exists()
