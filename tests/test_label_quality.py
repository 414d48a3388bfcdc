"""Confident learning for class labels and masks, against hand computations and cases whose answer is known."""

import numpy as np
import pytest

from labelwise.metrics.label_quality import (
    EXTRA,
    MISSED,
    SWAPPED,
    class_issues,
    class_thresholds,
    confident_class,
    confident_joint,
    mask_noise,
    mask_suspects,
    mask_thresholds,
    multilabel_issues,
    recentred,
)

PROBS = np.array(
    [
        [0.9, 0.1],  # labelled 0, agrees
        [0.8, 0.2],  # labelled 0, agrees
        [0.3, 0.7],  # labelled 0, confidently 1: a flip
        [0.2, 0.8],  # labelled 1, agrees
        [0.4, 0.6],  # labelled 1, agrees
        [0.55, 0.45],  # labelled 1: below both thresholds? t1 = (0.8 + 0.6 + 0.45) / 3 = 0.6167; p0 0.55 < t0
    ]
)
LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_thresholds_and_joint_by_hand():
    t = class_thresholds(PROBS, LABELS)
    np.testing.assert_allclose(t, [(0.9 + 0.8 + 0.3) / 3, (0.8 + 0.6 + 0.45) / 3])
    # t0 = 0.6667, t1 = 0.6167: row 2 is confident 1; row 5 reaches neither threshold
    np.testing.assert_array_equal(confident_class(PROBS, t), [0, 0, 1, 1, -1, -1])
    np.testing.assert_array_equal(confident_joint(PROBS, LABELS), [[2, 1], [0, 1]])


def test_class_issues_flag_the_flip_and_name_its_class():
    audit = class_issues(PROBS, LABELS)
    # calibrated row 0: [2, 1] / 3 * 3 = [2, 1]: one sample labelled 0 goes, the largest margin p1 - p0 (row 2)
    np.testing.assert_array_equal(audit.issue, [False, False, True, False, False, False])
    np.testing.assert_array_equal(audit.likely, [0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(audit.quality, PROBS[np.arange(6), LABELS])


def test_class_issues_find_known_flips():
    """A model that knows the truth (confident but not certain) finds exactly the labels that were flipped."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=400)
    probs = np.full((400, 4), 0.1)
    probs[np.arange(400), truth] = 0.7
    labels = truth.copy()
    flipped = rng.choice(400, size=60, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, 4, size=60)) % 4
    audit = class_issues(probs, labels)
    np.testing.assert_array_equal(np.flatnonzero(audit.issue), np.sort(flipped))
    np.testing.assert_array_equal(audit.likely, truth)


def test_class_issues_refuse_bad_input():
    with pytest.raises(ValueError, match="labels must lie"):
        class_issues(PROBS, LABELS + 1)
    with pytest.raises(ValueError, match="expected probabilities"):
        class_issues(PROBS[:, 0], LABELS)


def test_multilabel_flags_the_class_that_was_dropped():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, size=(300, 3))
    probs = np.where(truth > 0, 0.8, 0.15)
    labels = truth.copy()
    dropped = rng.choice(np.flatnonzero(truth[:, 1]), size=20, replace=False)
    labels[dropped, 1] = 0
    audit = multilabel_issues(probs, labels)
    np.testing.assert_array_equal(np.flatnonzero(audit.issue), np.sort(dropped))
    np.testing.assert_array_equal(audit.likely, truth)


def vessel_case(shape=(40, 40)):
    """A bar of foreground; the model's probabilities are 0.9 on it and 0.05 elsewhere."""
    truth = np.zeros(shape, dtype=np.uint8)
    truth[10:30, 18:22] = 1
    probs = np.where(truth > 0, 0.9, 0.05)
    return truth, probs


def test_mask_suspects_find_missed_and_extra_pixels():
    truth, probs = vessel_case()
    label = truth.copy()
    label[10:20, 18:22] = 0  # half the bar missed
    label[0:2, 0:5] = 1  # a blob that is not there
    t = mask_thresholds([(probs, label, None)])
    # foreground threshold: mean p over labelled foreground = (40 * 0.9 + 10 * 0.05) / 50
    np.testing.assert_allclose(t, [((1600 - 50 - 40) * 0.95 + 40 * 0.1) / (1600 - 50), (40 * 0.9 + 10 * 0.05) / 50])
    audit = mask_suspects(probs, label, t)
    np.testing.assert_array_equal(audit.suspects == MISSED, (truth > 0) & (label == 0))
    np.testing.assert_array_equal(audit.suspects == EXTRA, (label > 0) & (truth == 0))
    assert (audit.missed, audit.extra) == (40, 10)
    # soft Dice of the label with the model: 2 * sum(p * y) / (sum p + sum y)
    p = probs
    expected = 2 * (p * label).sum() / (p.sum() + label.sum())
    assert audit.quality == pytest.approx(expected)


def test_mask_noise_is_the_calibrated_confident_joint_by_hand():
    truth, probs = vessel_case()
    label = truth.copy()
    label[10:20, 18:22] = 0  # 40 foreground pixels labelled background
    label[0:2, 0:5] = 1  # 10 background pixels labelled foreground
    t = mask_thresholds([(probs, label, None)])
    # confident classes: the 40 missed (p 0.9 >= t_1) are 1, the 10 extra (p_0 0.95 >= t_0) are 0, so the joint is
    # [[1510, 40], [10, 40]] (rows: label; already summing to the label counts), plus one pixel per cell
    noise = mask_noise([(probs, label, None)], t)
    np.testing.assert_allclose(noise, [[1511 / 1522, 41 / 82], [11 / 1522, 41 / 82]])
    with pytest.raises(ValueError, match="no cases"):
        mask_noise([], t)


def test_suspicion_is_the_posterior_of_a_wrong_label():
    """Bayes' rule, checked by drawing: a pixel's true class from ``p``, its label from the noise ``T[:, true]``;
    among the pixels given label i, the share whose true class is not i is the suspicion."""
    rng = np.random.default_rng(0)
    noise = np.array([[0.95, 0.30], [0.05, 0.70]])  # 30% of the foreground unlabelled, 5% of background added
    p1 = np.array([0.05, 0.3, 0.5, 0.8, 0.95])
    probs = np.stack([1 - p1, p1])[:, None, :]  # (K, 1, 5)
    t = np.array([0.5, 0.5])
    for given in (0, 1):
        audit = mask_suspects(probs, np.full((1, 5), given), t, noise=noise)
        n = 400_000
        true = (rng.random((n, 5)) < p1).astype(int)
        labels = (rng.random((n, 5)) < noise[1, true]).astype(int)
        chosen = labels == given
        wrong = ((true != given) & chosen).sum(axis=0) / chosen.sum(axis=0)
        np.testing.assert_allclose(audit.suspicion[0], wrong, atol=0.01)
    # without a noise estimate: one minus the probability of the label
    audit = mask_suspects(probs, np.zeros((1, 5), int), t)
    np.testing.assert_allclose(audit.suspicion[0], p1)


def test_recentred_decides_at_one_half_as_the_threshold_did():
    """Two classes: the foreground's logit minus the threshold's, by hand; three classes: ``1 - p_0 > 0.5`` after
    exactly where ``1 - p_0 > t`` before, the foreground classes keep their ratios and every pixel sums to 1."""
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0.001, 0.999, (7, 9))
    t = 0.9
    shifted = recentred(np.stack([1 - p1, p1]), t)
    logit = np.log(p1 / (1 - p1)) - np.log(t / (1 - t))
    np.testing.assert_allclose(shifted[1], 1 / (1 + np.exp(-logit)), rtol=1e-10)
    np.testing.assert_allclose(shifted.sum(axis=0), 1)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(50, 40)).transpose(2, 0, 1)  # (3, 50, 40)
    for t in (0.05, 0.3, 0.7, 0.97):
        moved = recentred(probs, t)
        np.testing.assert_array_equal(1 - moved[0] > 0.5, 1 - probs[0] > t)
        np.testing.assert_allclose(moved.sum(axis=0), 1)
        np.testing.assert_allclose(moved[1] / moved[2], probs[1] / probs[2])
    assert recentred(probs, None) is probs and recentred(probs, 0.5) is probs
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        recentred(probs, 1.0)


def test_suspicion_ranks_the_class_the_masks_get_wrong_first():
    """Masks drawn too wide: half the rim is confidently background (so the noise estimate knows masks are too wide);
    the other half, which the model is unsure of, ranks above every background pixel, though the background beside
    the vessel is less self-confident (self-confidence alone ranks it first)."""
    truth, probs = vessel_case()
    probs = probs.copy()
    label = truth.copy()
    label[10:30, 17] = label[10:30, 22] = 1  # a rim drawn too wide on both sides
    probs[10:20, 17] = probs[10:20, 22] = 0.03  # confidently background
    probs[20:30, 17] = probs[20:30, 22] = 0.4  # unsure
    probs[10:30, 16] = 0.62  # background beside the vessel, a little more likely vessel than not
    cases = [(probs, label, None)]
    t = mask_thresholds(cases)
    noise = mask_noise(cases, t)
    # joint rows (label) [[1460, 0], [20, 80]] (20 rim pixels and 20 beside unconfident), calibrated to the label
    # counts 1480 and 120, plus one pixel per cell
    np.testing.assert_allclose(noise, [[1481 / 1506, 1 / 98], [25 / 1506, 97 / 98]])
    audit = mask_suspects(probs, label, t, noise=noise)
    unsure = np.zeros_like(label, dtype=bool)
    unsure[20:30, 17] = unsure[20:30, 22] = True
    assert audit.suspicion[unsure].min() > audit.suspicion[label == 0].max()
    plain = mask_suspects(probs, label, t)
    assert plain.suspicion[unsure].min() < plain.suspicion[label == 0].max()


def test_with_a_noise_estimate_the_suspects_are_bayes_decision():
    """Given the noise, a pixel is a suspect where another class is likelier than its label under the posterior
    (two classes: where the suspicion exceeds one half), and the fix gives it that class; by hand on three classes,
    where the confident class would say otherwise."""
    p1 = np.linspace(0.02, 0.98, 49).reshape(7, 7)
    label = (np.indices((7, 7)).sum(axis=0) % 2).astype(np.int64)
    noise = np.array([[0.9, 0.4], [0.1, 0.6]])
    audit = mask_suspects(p1, label, np.array([0.5, 0.5]), noise=noise)
    np.testing.assert_array_equal(audit.suspects > 0, audit.suspicion > 0.5)
    np.testing.assert_array_equal(audit.corrected, np.where(audit.suspicion > 0.5, 1 - label, label))
    np.testing.assert_array_equal(
        audit.suspects[audit.suspicion > 0.5], np.where(label == 0, MISSED, EXTRA)[audit.suspicion > 0.5]
    )
    # three classes, one pixel each labelled 1: p = (0.2, 0.35, 0.45); T[1, :] = (0.05, 0.8, 0.3)
    probs = np.array([[0.2], [0.35], [0.45]])[:, :, None]  # (3, 1, 1)
    noise3 = np.array([[0.9, 0.1, 0.1], [0.05, 0.8, 0.3], [0.05, 0.1, 0.6]])
    likely = np.array([0.2 * 0.05, 0.35 * 0.8, 0.45 * 0.3])  # 0.01, 0.28, 0.135: class 1 stays likeliest
    audit = mask_suspects(probs, np.ones((1, 1), int), np.array([0.1, 0.3, 0.4]), noise=noise3)
    assert audit.suspects[0, 0] == 0 and audit.suspicion[0, 0] == pytest.approx(1 - likely[1] / likely.sum())
    # (the confident class, by the thresholds alone, is 2: 0.45 >= 0.4 and the most probable)
    assert confident_class(probs[:, 0, 0][None], np.array([0.1, 0.3, 0.4]))[0] == 2
    noise3[1] = [0.05, 0.3, 0.8]  # labels 1 that are truly 2 are common: 2 is now likeliest, a swap
    audit = mask_suspects(probs, np.ones((1, 1), int), np.array([0.1, 0.3, 0.4]), noise=noise3)
    assert audit.suspects[0, 0] == SWAPPED and audit.corrected[0, 0] == 2


def test_mask_suspects_stay_inside_the_roi_and_order_cases_by_quality():
    truth, probs = vessel_case()
    roi = np.zeros_like(truth, dtype=bool)
    roi[5:35, 5:35] = True
    good = truth.copy()
    bad = truth.copy()
    bad[10:25, 18:22] = 0
    outside = truth.copy()
    outside[0:2, 0:5] = 1  # an error outside the roi
    t = mask_thresholds([(probs, m, roi) for m in (good, bad, outside)])
    audits = [mask_suspects(probs, m, t, roi) for m in (good, bad, outside)]
    assert audits[0].missed == audits[0].extra == 0
    assert audits[2].extra == 0 and audits[2].quality == pytest.approx(audits[0].quality)
    assert audits[1].quality < audits[0].quality
    assert (audits[1].score[~roi] == 1).all() and (audits[1].suspicion[~roi] == 0).all()


def test_mask_suspects_take_class_maps():
    truth, probs = vessel_case()
    stacked = np.stack([1 - probs, probs])
    t = mask_thresholds([(probs, truth, None)])
    a, b = mask_suspects(probs, truth, t), mask_suspects(stacked, truth, t)
    np.testing.assert_array_equal(a.suspects, b.suspects)
    with pytest.raises(ValueError, match="do not match"):
        mask_suspects(probs[:-1], truth, t)


def test_class_issues_agree_with_cleanlab():
    """cleanlab's pruning by noise rate on random softmax outputs: the same confident joint up to the samples on a
    threshold or with one confident class that is not the argmax (cleanlab then counts the argmax), and the same
    flags up to a sample or two per data set."""
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    cleanlab_count = pytest.importorskip("cleanlab.count")
    rng = np.random.default_rng(0)
    differ = total = 0
    for _ in range(12):
        n, k = int(rng.integers(60, 500)), int(rng.integers(2, 7))
        probs = np.exp(rng.normal(size=(n, k)) * rng.uniform(0.5, 3))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = np.array([rng.choice(k, p=row) for row in probs])
        labels[:k] = np.arange(k)  # every class given at least once
        audit = class_issues(probs, labels)
        theirs = cleanlab_filter.find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
        joint = cleanlab_count.compute_confident_joint(labels, probs, calibrate=False)
        assert np.abs(audit.joint - joint).sum() <= 2
        assert (audit.issue != theirs).sum() <= max(3, n // 50)  # rounding the calibrated joint, cleanlab's way
        assert audit.issue.sum() > 0
        differ, total = differ + (audit.issue != theirs).sum(), total + n
    assert differ / total < 0.01
