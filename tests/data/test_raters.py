"""Several raters per case (``label``, ``label_2``, ... and ``data.raters``): STAPLE's EM against a per-voxel loop
and against the raters' known sensitivity and specificity, the majority's tie rule, the manifest's checks, and a
run trained on three raters' masks through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, run_cli

from labelwise.data.manifest import read_manifest
from labelwise.data.raters import fit_raters, fuse, vote_codes
from labelwise.errors import DataError

# (sensitivity, specificity) of three simulated raters: a careful one and two hasty ones, whose agreement outvotes
# the careful one in a majority but not in STAPLE's weighing
RATERS = ((0.98, 0.995), (0.6, 0.95), (0.65, 0.93))


def _simulated(n: int = 200_000, prevalence: float = 0.2, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prevalence
    raters = [np.where(truth, rng.random(n) < sens, rng.random(n) > spec).astype(np.int64) for sens, spec in RATERS]
    return truth, raters


def _counts(raters: list[np.ndarray], classes: int = 2) -> dict[int, int]:
    codes, number = np.unique(vote_codes(raters, classes), return_counts=True)
    return dict(zip(codes.tolist(), number.tolist()))


def _naive_staple(raters: list[np.ndarray], rounds: int = 500) -> tuple[np.ndarray, np.ndarray, float]:
    """Binary STAPLE as Warfield et al. write it, voxel by voxel: W_i = P(true foreground | decisions at i)."""
    d = np.stack(raters, 1).astype(np.float64)  # (N, R)
    w = d.mean(1)  # the majority's shares
    for _ in range(rounds):
        f = w.mean()
        p = (w[:, None] * d).sum(0) / w.sum()
        q = ((1 - w)[:, None] * (1 - d)).sum(0) / (1 - w).sum()
        a = f * np.prod(np.where(d > 0, p, 1 - p), axis=1)
        b = (1 - f) * np.prod(np.where(d > 0, 1 - q, q), axis=1)
        new = a / (a + b)
        if np.abs(new - w).max() < 1e-9:
            w = new
            break
        w = new
    return p, q, f


def test_staple_matches_the_voxel_by_voxel_em_and_finds_each_raters_quality():
    truth, raters = _simulated()
    model = fit_raters(_counts(raters), 3, 2, "consensus")
    record = model.to_json()
    p, q, f = _naive_staple(raters)
    np.testing.assert_allclose(record["sensitivity"], p, atol=1e-4)
    np.testing.assert_allclose(record["specificity"], q, atol=1e-4)
    assert record["prior"][1] == pytest.approx(f, abs=1e-4)
    # and both recover what the raters were made with (200,000 voxels: within 0.01)
    np.testing.assert_allclose(record["sensitivity"], [s for s, _ in RATERS], atol=0.01)
    np.testing.assert_allclose(record["specificity"], [t for _, t in RATERS], atol=0.01)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    consensus = fuse(raters, model) > 0
    majority = fuse(raters, fit_raters({}, 3, 2, "majority")) > 0
    assert dice(consensus, truth) >= max(dice(r > 0, truth) for r in raters) > dice(majority, truth) + 0.05


def test_majority_ties_go_to_the_lowest_class_and_identical_raters_are_their_own_consensus():
    a = np.array([[0, 1, 1, 2]])
    b = np.array([[1, 0, 1, 1]])
    np.testing.assert_array_equal(fuse([a, b], fit_raters({}, 2, 3, "majority")), [[0, 0, 1, 1]])
    same = [np.array([[0, 1, 1, 0, 2]])] * 3
    model = fit_raters(_counts(same, 3), 3, 3, "consensus")
    np.testing.assert_array_equal(fuse(same, model), same[0])
    with pytest.raises(DataError, match="first, majority, mean, sample or consensus"):
        fit_raters({}, 2, 2, "median")
    # mean: the share of raters who said foreground (a soft target)
    c = np.array([[1, 1, 0, 0]])
    np.testing.assert_allclose(fuse([a == 1, b, c], fit_raters({}, 3, 2, "mean")), [[2 / 3, 2 / 3, 2 / 3, 1 / 3]])


def _rated_pictures(folder, raters: int = 3, n: int = 6, size: int = 48):
    """``n`` PNG photographs with a bright bar, each with ``raters`` masks of it: the truth, one a pixel narrower on
    each side, one a pixel wider (train, train, train, train, val, test)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    columns = ["id", "image", "label", "split", "truth"] + [f"label_{k}" for k in range(2, raters + 1)]
    rows = [",".join(columns)]
    for i in range(n):
        left = 10 + 3 * i
        truth = np.zeros((size, size), np.uint8)
        truth[:, left : left + 7] = 255
        Image.fromarray((rng.random((size, size)) * 60 + truth * 0.6).astype(np.uint8)).save(folder / f"p{i}.png")
        Image.fromarray(truth).save(folder / f"p{i}_truth.png")
        masks = [truth, np.roll(truth, 0), truth.copy()]
        masks[1][:, left] = masks[1][:, left + 6] = 0
        masks[2][:, left - 1] = masks[2][:, left + 7] = 255
        for k, mask in enumerate(masks[:raters], start=1):
            Image.fromarray(mask).save(folder / f"p{i}_r{k}.png")
        split = ["train"] * 4 + ["val", "test"]
        rows.append(
            ",".join([f"p{i}", f"p{i}.png", f"p{i}_r1.png", split[i], f"p{i}_truth.png"]
                     + [f"p{i}_r{k}.png" for k in range(2, raters + 1)])
        )  # fmt: skip
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def test_the_manifest_reads_every_raters_mask_and_refuses_a_rater_without_the_first(tmp_path):
    manifest = _rated_pictures(tmp_path)
    case = read_manifest(manifest)[0]
    assert [p.name for p in case.raters] == ["p0_r1.png", "p0_r2.png", "p0_r3.png"] and case.label == case.raters[0]
    text = manifest.read_text().replace("p1_r1.png", "", 1)
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match="p1 has label_2, label_3 but no label"):
        read_manifest(tmp_path / "bad.csv")


@pytest.mark.parametrize("method", ["consensus", "majority", "first"])
def test_a_run_on_three_raters_through_the_cli(tmp_path, method):
    """The run trains on the fused masks (the majority of narrow, true and wide bars is the true bar, as is their
    consensus), writes raters.json (STAPLE: a sensitivity and specificity per rater) and scores its test case against
    the fusion, each rater and between the raters."""
    from labelwise.data.volumes import read_volume

    manifest = _rated_pictures(tmp_path)
    run = tmp_path / "run"
    sets = [
        f"data.manifest={manifest}",
        f"data.raters={method}",
        "data.patch_size=[32,32]",
        "data.patches_per_volume=2",
        "data.batch_size=2",
        "model.channels=[2,4,4,4,4]",
        "trainer.max_steps=2",
        "trainer.checkpoint_every=2",
        "trainer.val_every=0",
    ]
    report = ["--no-report"] if method == "majority" else []
    result = run_cli("train", str(REPO / "configs" / "drive-unet-mss.yaml"), "--run-dir", str(run),
                     *[a for s in sets for a in ("--set", s)], *report)  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())
    if method == "first":  # the first rater's masks, no fit; the test case is still scored against every rater
        assert not (run / "raters.json").exists()
        np.testing.assert_allclose(scores["raters"]["rater_vs_label"], [1.0, 2 * 5 / 12, 2 * 7 / 16], atol=1e-6)
        return
    record = json.loads((run / "raters.json").read_text())
    assert record["method"] == method and record["raters"] == 3 and record["fitted_on"] == 4
    if method == "consensus":
        assert len(record["sensitivity"]) == 3 and record["sensitivity"][2] == pytest.approx(1.0, abs=1e-3)
        assert record["specificity"][0] == pytest.approx(1.0, abs=1e-3) and record["sensitivity"][1] < 0.8
    fused = sorted((manifest.parent / ".labelwise-cache" / "raters").glob("p0-*.png"))
    assert len(fused) == 1
    np.testing.assert_array_equal(read_volume(fused[0], mask=True).array, read_volume(tmp_path / "p0_truth.png",
                                  mask=True).array)  # fmt: skip
    raters = scores["raters"]
    assert raters["cases"] == 1 and len(raters["model"]) == len(raters["rater_vs_label"]) == 3
    # a hand count: the narrow (5 px) and wide (9 px) bars against the true 7 px and each other
    np.testing.assert_allclose(raters["rater_vs_label"], [1.0, 2 * 5 / 12, 2 * 7 / 16], atol=1e-6)
    assert raters["between_raters"] == pytest.approx((2 * 5 / 12 + 2 * 7 / 16 + 2 * 5 / 14) / 3, abs=1e-6)
    if method == "consensus":  # the report shows the model beside the raters
        html = (run / "report.html").read_text()
        assert 'id="segmentation-raters"' in html and f"mean Dice of {raters['between_raters']:.4g}" in html


def test_raters_of_the_test_cases_alone_are_fitted_on_those(tmp_path):
    """Only the evaluation cases traced by several raters (DRIVE's test set has two observers): the fusion is fitted
    on them, the training cases keep their one mask."""
    from dataclasses import replace

    from labelwise.data.raters import fuse_cases

    cases = read_manifest(_rated_pictures(tmp_path))
    cases = [replace(c, raters=()) if c.split == "train" else c for c in cases]
    train = [i for i, c in enumerate(cases) if c.split == "train"]
    fused, record = fuse_cases(cases, train, "consensus", tmp_path / "fused", quiet=True)
    assert record is not None and record["fitted_on"] == record["cases"] == 2
    assert [c.label for c in fused[:4]] == [c.label for c in cases[:4]]  # training masks untouched
    assert all(c.label.parent == tmp_path / "fused" for c in fused[4:])
    assert fuse_cases(cases, train, "first", tmp_path / "none") == (cases, None)


def test_fused_volumes_keep_the_first_raters_geometry(tmp_path):
    """3D: the fused mask of NIfTI raters is a NIfTI with the first rater's affine (read back with nibabel), its
    values the majority of three volumes (a hand count per voxel)."""
    import nibabel as nib

    from labelwise.data.raters import fuse_cases

    rng = np.random.default_rng(1)
    affine = np.diag([0.8, 0.7, 1.5, 1.0])
    masks = [(rng.random((6, 7, 5)) > 0.6).astype(np.uint8) for _ in range(3)]
    rows = ["id,image,label,label_2,label_3,split"]
    nib.save(nib.Nifti1Image(rng.random((6, 7, 5)).astype(np.float32), affine), str(tmp_path / "v.nii.gz"))
    for k, mask in enumerate(masks, start=1):
        nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / f"r{k}.nii.gz"))
    rows.append("v,v.nii.gz,r1.nii.gz,r2.nii.gz,r3.nii.gz,train")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cases = read_manifest(tmp_path / "m.csv")
    (fused,), record = fuse_cases(cases, [0], "majority", tmp_path / "fused", quiet=True)
    written = nib.load(fused.label)
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), (sum(masks) >= 2).astype(np.uint8))
    assert record["method"] == "majority" and record["cases"] == 1


def test_consensus_pools_cases_of_different_classes_and_reuses_its_fused_masks(tmp_path, monkeypatch):
    """Cases fused one at a time: a case whose raters use classes 0-1 and one whose raters use 0-2 give the fit of
    the vote counts of both on one code base (a hand pooling); a second call with the fused masks in place reads
    each case's raters once (the fit) and writes nothing."""
    import nibabel as nib

    import labelwise.data.raters as raters_module
    from labelwise.data.raters import fuse_cases

    rng = np.random.default_rng(3)
    affine = np.eye(4)
    rows = ["id,image,label,label_2,label_3,split"]
    all_masks = []
    for case, classes in (("a", 2), ("b", 3)):
        truth = rng.integers(0, classes, (8, 9, 6))
        masks = [np.where(rng.random(truth.shape) < 0.85, truth, rng.integers(0, classes, truth.shape)) for _ in "xyz"]
        all_masks.append(masks)
        nib.save(nib.Nifti1Image(rng.random(truth.shape).astype(np.float32), affine), str(tmp_path / f"{case}.nii.gz"))
        for k, mask in enumerate(masks, start=1):
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(tmp_path / f"{case}{k}.nii.gz"))
        rows.append(f"{case},{case}.nii.gz,{case}1.nii.gz,{case}2.nii.gz,{case}3.nii.gz,train")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cases = read_manifest(tmp_path / "m.csv")
    fused, record = fuse_cases(cases, [0, 1], "consensus", tmp_path / "fused", quiet=True)
    pooled = _counts([np.concatenate([m[j].ravel() for m in all_masks]) for j in range(3)], classes=3)
    model = fit_raters(pooled, 3, 3, "consensus")
    assert record == {**model.to_json(), "raters": 3, "fitted_on": 2, "cases": 2}
    for case, masks in zip(fused, all_masks):
        np.testing.assert_array_equal(np.asarray(nib.load(case.label).dataobj), fuse(masks, model))
    reads = []
    original = raters_module.read_raters
    monkeypatch.setattr(raters_module, "read_raters", lambda case: reads.append(case.id) or original(case))
    stamps = {c.label: c.label.stat().st_mtime_ns for c in fused}
    again, _ = fuse_cases(cases, [0, 1], "consensus", tmp_path / "fused", quiet=True)
    assert [c.label for c in again] == [c.label for c in fused] and reads == ["a", "b"]
    assert {c.label: c.label.stat().st_mtime_ns for c in again} == stamps
