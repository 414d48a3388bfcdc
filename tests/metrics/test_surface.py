"""Binary-mask scores (labelwise.metrics.surface) against MONAI, scikit-learn and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.morphology import skeletonize
from sklearn.metrics import precision_score, recall_score

from labelwise.errors import DataError
from labelwise.metrics import dice, iou
from labelwise.metrics.surface import (
    SCORE_NAMES,
    assd,
    cldice,
    confusion,
    hd95,
    precision,
    segmentation_scores,
    sensitivity,
    surface_distances,
    volumetric_similarity,
)


def blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 3.0, threshold: float = 0.6) -> np.ndarray:
    x = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (x - x.min()) / (x.max() - x.min()) > threshold


CASES = [((64, 80), (0.7, 1.3)), ((40, 48, 36), (0.5, 0.8, 1.7))]


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_distances_match_monai(shape, spacing):
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
    )

    rng = np.random.default_rng(len(shape))
    for _ in range(3):
        p, t = blob(rng, shape), blob(rng, shape)
        pt, tt = torch.as_tensor(p)[None, None].float(), torch.as_tensor(t)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_hd = float(
                compute_hausdorff_distance(pt, tt, include_background=True, percentile=95, spacing=list(spacing))
            )
            ref_asd = float(
                compute_average_surface_distance(pt, tt, include_background=True, symmetric=True, spacing=list(spacing))
            )
        assert hd95(p, t, spacing) == pytest.approx(ref_hd, rel=1e-4)
        assert assd(p, t, spacing) == pytest.approx(ref_asd, rel=1e-4)
        # the two exact nearest-surface methods agree
        kdtree, edt = (surface_distances(p, t, spacing, method=m) for m in ("kdtree", "edt"))
        for a, b in zip(kdtree, edt):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_distances_by_hand():
    p, t = np.zeros((5, 8), bool), np.zeros((5, 8), bool)
    p[0, 0], t[0, 3] = True, True  # 3 pixels apart along axis 1, spacing 2 there
    assert hd95(p, t, (1.0, 2.0)) == pytest.approx(6.0)
    assert assd(p, t, (1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(p, t, 0.5) == pytest.approx(1.5)
    # a 3x3 square p and the 3x4 rectangle t that extends it by one column; surfaces: p all but its centre (8),
    # t all but (3, 3) and (3, 4) (10). p's (3, 4) is inside t: 1 from t's surface; t's column 5 is 1 from p's.
    p, t = np.zeros((7, 8), bool), np.zeros((7, 8), bool)
    p[2:5, 2:5] = True
    t[2:5, 2:6] = True
    d_pt, d_tp = surface_distances(p, t)
    assert sorted(d_pt) == [0.0] * 7 + [1.0]
    assert sorted(d_tp) == [0.0] * 7 + [1.0] * 3
    assert assd(p, t) == pytest.approx(4 / 18)
    assert hd95(p, t) == pytest.approx(1.0)  # max(0.65, 1): 95th percentiles of 8 and 10 values, interpolated
    assert hd95(t, p, percentile=95) == pytest.approx(1.0)


def test_overlap_against_sklearn_and_torch():
    rng = np.random.default_rng(0)
    for shape in [(30, 40), (12, 14, 16)]:
        p, t = rng.random(shape) > 0.6, rng.random(shape) > 0.5
        assert precision(p, t) == pytest.approx(precision_score(t.ravel(), p.ravel()))
        assert sensitivity(p, t) == pytest.approx(recall_score(t.ravel(), p.ravel()))
        scores = segmentation_scores(p, t)
        pt, tt = torch.as_tensor(p)[None, None], torch.as_tensor(t)[None, None]
        assert scores["dice"] == pytest.approx(float(dice(pt, tt)), rel=1e-6)
        assert scores["iou"] == pytest.approx(float(iou(pt, tt)), rel=1e-6)
        c = confusion(p, t)
        assert c.tp + c.fp + c.fn + c.tn == p.size
        assert c.tp == np.sum(p & t) and c.fp == np.sum(p & ~t) and c.fn == np.sum(~p & t)


def test_volumetric_similarity_by_hand():
    p, t = np.zeros(20, bool).reshape(4, 5), np.zeros(20, bool).reshape(4, 5)
    t[0, :4] = True  # |T| = 4
    p[0, 2:5] = True
    p[1, :3] = True  # |P| = 6, TP = 2, FP = 4, FN = 2
    assert confusion(p, t)[:3] == (2, 4, 2)
    assert volumetric_similarity(p, t) == pytest.approx(1 - 2 / 10)  # 1 - |FN - FP| / (2TP + FP + FN)
    assert volumetric_similarity(np.roll(t, 1, axis=0), t) == 1.0  # same volume elsewhere


def test_cldice_lines_by_hand():
    truth = np.zeros((9, 16), bool)
    truth[4, 2:12] = True  # a 10-pixel line
    assert np.array_equal(skeletonize(truth), truth)  # a one-pixel line is its own skeleton
    shorter = np.zeros_like(truth)
    shorter[4, 2:7] = True  # 5 pixels: Tprec = 5/5, Tsens = 5/10
    assert cldice(shorter, truth) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert cldice(np.roll(truth, 1, axis=0), truth) == 0.0  # shifted by one row: no overlap at all
    assert cldice(truth, truth) == 1.0


def test_cldice_tube_and_centreline_3d():
    tube = np.zeros((7, 7, 16), bool)
    tube[2:5, 2:5, 2:14] = True
    line = np.zeros_like(tube)
    line[3, 3, 2:14] = True
    skeleton = skeletonize(tube)
    assert skeleton.any() and np.all(line[skeleton])  # the tube's skeleton lies on its centre line
    assert cldice(line, tube) == pytest.approx(1.0)  # the centre line is all that clDice asks for
    assert segmentation_scores(line, tube)["dice"] == pytest.approx(2 * 12 / (108 + 12))


@pytest.mark.parametrize("shape", [(50, 60), (24, 28, 20)])
def test_cldice_self_is_one(shape):
    rng = np.random.default_rng(3)
    for _ in range(3):
        m = blob(rng, shape, threshold=0.55)
        assert cldice(m, m) == 1.0
        assert segmentation_scores(m, m, 0.5) == pytest.approx(
            {
                "dice": 1,
                "iou": 1,
                "precision": 1,
                "sensitivity": 1,
                "volumetric_similarity": 1,
                "hd95": 0,
                "assd": 0,
                "cldice": 1,
            }
        )


def test_empty_conventions():
    z = np.zeros((10, 12, 8), bool)
    m = z.copy()
    m[2:6, 3:7, 1:5] = True
    both = segmentation_scores(z, z)
    assert list(both) == list(SCORE_NAMES) and all(math.isnan(v) for v in both.values())
    no_pred = segmentation_scores(z, m)
    assert {k: v for k, v in no_pred.items() if not math.isnan(v)} == {
        "dice": 0,
        "iou": 0,
        "sensitivity": 0,
        "volumetric_similarity": 0,
        "cldice": 0,
    }
    no_truth = segmentation_scores(m, z)
    assert {k: v for k, v in no_truth.items() if not math.isnan(v)} == {
        "dice": 0,
        "iou": 0,
        "precision": 0,
        "volumetric_similarity": 0,
        "cldice": 0,
    }
    assert math.isnan(hd95(m, z)) and math.isnan(assd(z, m))


def test_inputs():
    m = np.zeros((6, 7), np.int64)
    m[1:4, 2:5] = 2  # labels > 1 count as foreground
    ref = segmentation_scores(m > 0, m > 0)
    assert segmentation_scores(m, m > 0) == ref
    assert segmentation_scores(torch.as_tensor(m), torch.as_tensor(m)) == ref
    whole = np.ones((5, 5), bool)  # touching every border: all border pixels are surface
    assert hd95(whole, whole) == 0.0
    with pytest.raises(DataError, match="shapes differ"):
        segmentation_scores(m, m[:, :6])
    with pytest.raises(DataError, match="spacing"):
        segmentation_scores(m, m, (1.0, 0.0))
    with pytest.raises(DataError, match="spacing"):
        hd95(m, m, (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="2D or 3D"):
        segmentation_scores(np.ones(5), np.ones(5))


def test_one_empty_mask_distances_vs_monai():
    """Distances to an empty mask are nan here. MONAI: HD95 nan too (torch.quantile of all-inf distances), but
    inf for the plain Hausdorff distance and for ASSD: the one documented difference."""
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
    )

    z = np.zeros((12, 12), bool)
    m = z.copy()
    m[3:7, 4:9] = True
    for p, t in ((m, z), (z, m)):
        pt, tt = torch.as_tensor(p)[None, None].float(), torch.as_tensor(t)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert math.isnan(float(compute_hausdorff_distance(pt, tt, include_background=True, percentile=95)))
            assert math.isinf(float(compute_hausdorff_distance(pt, tt, include_background=True)))
            assert math.isinf(float(compute_average_surface_distance(pt, tt, include_background=True, symmetric=True)))
        assert math.isnan(hd95(p, t)) and math.isnan(assd(p, t))
