"""Label quality: where a label disagrees with a model's out-of-sample probabilities (confident learning).

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021) in numpy, for class labels and for masks:

- each class ``k`` has a threshold ``t_k``, the mean probability of ``k`` over the samples labelled ``k`` (the model's
  own confidence in that class, so a class the model is shy of is not drowned by a confident one);
- a sample's *confident class* is, of the classes whose probability reaches their threshold, the most probable one
  (none where no class reaches its threshold);
- the *confident joint* ``C[i, j]`` counts the samples labelled ``i`` whose confident class is ``j``.

For class labels, :func:`class_issues` flags, for every pair ``i != j``, as many samples labelled ``i`` as the
calibrated joint puts in ``C[i, j]``: those with the largest margin ``p_j - p_i`` (pruning by noise rate). For masks
every pixel is a sample; :func:`mask_thresholds` pools the thresholds over all the cases (a case alone is too few
thin-structure pixels). The quality of a mask is the soft Dice of its foreground with the model's probabilities inside
the roi: a mask the model agrees with scores 1.

Each pixel also gets a *suspicion*, the probability that its label is wrong, to rank pixels by. The masks' noise is
estimated from the pooled confident joint (:func:`mask_noise`: ``T[i, j]``, the share of the pixels truly of class ``j``
that are labelled ``i``), and a pixel labelled ``i`` with out-of-sample probabilities ``p`` is wrong with the posterior
probability ``1 - p_i T[i, i] / sum_j p_j T[i, j]``. With two classes, within one label this orders the pixels as their
self-confidence ``p_i`` does; across classes it weighs each by how often that label was found wrong, so masks drawn too
wide rank their labelled foreground first and masks that miss structure their background. :func:`mask_suspects` flags
a pixel where the posterior makes another class likelier than its label (Bayes' decision under the estimated noise;
without an estimate, where its confident class is not its label) and corrects it to that class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ClassAudit",
    "MaskAudit",
    "class_issues",
    "class_thresholds",
    "confident_class",
    "confident_joint",
    "mask_noise",
    "mask_suspects",
    "mask_thresholds",
    "multilabel_issues",
    "recentred",
]

MISSED, EXTRA, SWAPPED = 1, 2, 3  # values of a suspect map: 0 where the label is believed


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"expected probabilities (N, K) and labels (N,), got {probs.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}], got {labels.min()}..{labels.max()}")
    return probs, labels.astype(np.int64)


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(K,)``: the mean probability of each class over the samples labelled with it; 1 for a class nobody has (it
    is then confident nowhere, its threshold out of reach for all but a certain sample)."""
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_class(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(N,)``: each sample's confident class, -1 where no class reaches its threshold."""
    probs = np.asarray(probs, dtype=np.float64)
    above = probs >= np.asarray(thresholds)[None, :]
    best = np.where(above, probs, -np.inf).argmax(axis=1)
    return np.where(above.any(axis=1), best, -1)


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """``(K, K)`` int: samples labelled ``i`` (row) whose confident class is ``j`` (column)."""
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    confident = confident_class(probs, class_thresholds(probs, labels) if thresholds is None else thresholds)
    kept = confident >= 0
    return np.bincount(labels[kept] * k + confident[kept], minlength=k * k).reshape(k, k)


def _calibrated(joint: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The confident joint with each row scaled to its class's label count, so the off-diagonal counts estimate how
    many labels of class ``i`` are truly ``j``."""
    rows = joint.sum(axis=1, keepdims=True)
    return np.where(rows > 0, joint / np.maximum(rows, 1) * counts[:, None], 0.0)


@dataclass(frozen=True)
class ClassAudit:
    """Per sample: ``issue`` (bool), ``quality`` (the probability of the given label: low is suspect) and ``likely``
    (the confident class where the sample is flagged, else the given label); ``joint``, the confident joint."""

    issue: np.ndarray
    quality: np.ndarray
    likely: np.ndarray
    joint: np.ndarray


def class_issues(probs: np.ndarray, labels: np.ndarray) -> ClassAudit:
    """Confident learning on single-label samples: ``probs`` ``(N, K)`` out-of-sample class probabilities, ``labels``
    ``(N,)`` the given classes. Flags by noise rate (see the module's docstring)."""
    probs, labels = _check(probs, labels)
    n, k = probs.shape
    thresholds = class_thresholds(probs, labels)
    joint = confident_joint(probs, labels, thresholds)
    calibrated = _calibrated(joint, np.bincount(labels, minlength=k))
    given = probs[np.arange(n), labels]
    issue = np.zeros(n, dtype=bool)
    likely = labels.copy()
    best_margin = np.full(n, -np.inf)
    for i in range(k):
        members = np.flatnonzero(labels == i)
        for j in range(k):
            take = min(int(round(calibrated[i, j])), len(members)) if i != j else 0
            if take <= 0:
                continue
            margin = probs[members, j] - given[members]
            chosen = members[np.argsort(-margin, kind="stable")[:take]]
            issue[chosen] = True
            better = probs[chosen, j] - given[chosen] > best_margin[chosen]
            likely[chosen[better]] = j
            best_margin[chosen[better]] = probs[chosen[better], j] - given[chosen[better]]
    return ClassAudit(issue=issue, quality=given, likely=likely, joint=joint)


def multilabel_issues(probs: np.ndarray, labels: np.ndarray) -> ClassAudit:
    """Confident learning on multi-label samples, one binary problem per class: ``probs`` and ``labels`` ``(N, K)``
    (probability and 0/1 label of each class). A sample is flagged where any of its classes is; ``likely`` is its
    ``(N, K)`` label set with the flagged classes flipped; ``quality`` the smallest probability of a given label
    (or its absence) over the classes; ``joint`` is ``(K, 2, 2)``."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape:
        raise ValueError(
            f"expected probabilities and 0/1 labels of one shape (N, K), got {probs.shape}, {labels.shape}"
        )
    flags, qualities, joints = [], [], []
    for c in range(probs.shape[1]):
        binary = class_issues(np.stack([1 - probs[:, c], probs[:, c]], axis=1), (labels[:, c] > 0).astype(np.int64))
        flags.append(binary.issue)
        qualities.append(binary.quality)
        joints.append(binary.joint)
    flipped = np.stack(flags, axis=1)
    likely = np.where(flipped, 1 - (labels > 0), labels > 0).astype(np.int64)
    return ClassAudit(
        issue=np.asarray(flipped.any(axis=1)),
        quality=np.stack(qualities, axis=1).min(axis=1),
        likely=likely,
        joint=np.stack(joints),
    )


def _pixels(probs: np.ndarray, label: np.ndarray, roi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K)`` probabilities and ``(N,)`` labels of the pixels inside ``roi``; ``probs`` is ``(K, *spatial)`` or,
    for two classes, the foreground's ``spatial`` map."""
    probs = np.asarray(probs, dtype=np.float64)
    label = np.asarray(label)
    if probs.shape == label.shape:  # one foreground map
        probs = np.stack([1 - probs, probs])
    if probs.shape[1:] != label.shape:
        raise ValueError(f"probabilities {probs.shape} do not match the mask {label.shape}")
    inside = np.ones(label.shape, dtype=bool) if roi is None else np.asarray(roi, dtype=bool)
    if inside.shape != label.shape:
        raise ValueError(f"roi {inside.shape} does not match the mask {label.shape}")
    return probs[:, inside].T, label[inside].astype(np.int64)


def recentred(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """``(K, *spatial)`` class probabilities reweighed so that 0.5 decides as ``threshold`` did: a run that calls a
    pixel foreground where ``1 - p_0 > threshold`` (the run's threshold, :meth:`labelwise.methods.base.Method.
    segment_threshold`) calls it so where the reweighed ``1 - p_0 > 0.5``. The background's odds are multiplied by
    ``threshold / (1 - threshold)`` and the classes renormalised (with two classes: the foreground's logit minus the
    threshold's). A run whose threshold was calibrated on validation masks of the quality wanted learnt the training
    masks' systematic error (borders too wide or too narrow) as a shift of its probabilities; the reweighing takes the
    shift out, so that confident learning weighs the labels against the masks wanted rather than the masks given.
    ``threshold`` None (an argmax) or 0.5 leaves ``probs`` as they are."""
    probs = np.asarray(probs)
    if threshold is None or threshold == 0.5:
        return probs
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a threshold strictly between 0 and 1 is needed, got {threshold}")
    weights = np.ones((probs.shape[0],) + (1,) * (probs.ndim - 1), dtype=np.float64)
    weights[0] = threshold / (1 - threshold)
    weighed = probs.astype(np.float64) * weights
    return (weighed / np.maximum(weighed.sum(axis=0, keepdims=True), 1e-300)).astype(probs.dtype)


def mask_thresholds(cases) -> np.ndarray:
    """Per-class thresholds pooled over ``cases``, an iterable of ``(probs, label, roi)`` as :func:`mask_suspects`
    takes them (read one at a time: the masks of a data set need not fit in memory together)."""
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    for probs, label, roi in cases:
        p, y = _pixels(probs, label, roi)
        k = p.shape[1]
        if sums is None or counts is None:
            sums, counts = np.zeros(k), np.zeros(k)
        sums += np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k)[:k]
        counts += np.bincount(y, minlength=k)[:k]
    if sums is None or counts is None:
        raise ValueError("no cases to take the thresholds from")
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def mask_noise(cases, thresholds: np.ndarray) -> np.ndarray:
    """``(K, K)`` estimated label noise of the masks: ``T[i, j]``, the share of the pixels truly of class ``j`` that
    are labelled ``i`` (each column sums to 1). From the confident joint of the pixels of ``cases`` (read as
    :func:`mask_thresholds` reads them) under ``thresholds``, calibrated to the label counts, with one pseudo-pixel
    in every cell so that no kind of error is ruled out."""
    joint: np.ndarray | None = None
    counts: np.ndarray | None = None
    for probs, label, roi in cases:
        p, y = _pixels(probs, label, roi)
        k = p.shape[1]
        if joint is None or counts is None:
            joint, counts = np.zeros((k, k)), np.zeros(k)
        joint += confident_joint(p, y, thresholds)
        counts += np.bincount(y, minlength=k)[:k]
    if joint is None or counts is None:
        raise ValueError("no cases to estimate the noise from")
    calibrated = _calibrated(joint, counts) + 1.0
    return calibrated / calibrated.sum(axis=0, keepdims=True)


@dataclass(frozen=True)
class MaskAudit:
    """One mask's audit: ``suspects`` (the mask's shape, uint8: 0 believed, 1 missed structure (labelled background,
    likelier foreground), 2 extra (labelled foreground, likelier background), 3 swapped between foreground classes);
    ``score`` per pixel (the probability of the label given: low is suspect; 1 outside the roi); ``suspicion`` (the
    probability that the label is wrong; 0 outside the roi); ``quality``, the soft Dice of the labelled foreground
    with the model's (nan where both are empty); ``corrected``, the mask with every suspect given its likeliest
    class."""

    suspects: np.ndarray
    score: np.ndarray
    suspicion: np.ndarray
    quality: float
    corrected: np.ndarray

    @property
    def missed(self) -> int:
        return int((self.suspects == MISSED).sum())

    @property
    def extra(self) -> int:
        return int((self.suspects == EXTRA).sum())


def mask_suspects(
    probs: np.ndarray,
    label: np.ndarray,
    thresholds: np.ndarray,
    roi: np.ndarray | None = None,
    noise: np.ndarray | None = None,
) -> MaskAudit:
    """Audit one mask ``label`` (integer classes, 0 background) against out-of-sample ``probs`` (the foreground map,
    or ``(K, *spatial)``) with the data set's ``thresholds`` (:func:`mask_thresholds`) and ``noise``
    (:func:`mask_noise`; without it the suspicion is one minus the self-confidence and the suspects are the pixels
    whose confident class is not their label), inside ``roi``."""
    label = np.asarray(label)
    p, y = _pixels(probs, label, roi)
    inside = np.ones(label.shape, dtype=bool) if roi is None else np.asarray(roi, dtype=bool)
    rows = np.arange(len(y))
    given = p[rows, y]
    if noise is None:
        wrong = 1 - given
        likeliest = confident_class(p, thresholds)
        flagged = (likeliest >= 0) & (likeliest != y)
    else:
        likely = p * np.asarray(noise)[y]  # p_j T[label, j]: how likely each true class made this label
        posterior = likely / np.maximum(likely.sum(axis=1, keepdims=True), 1e-12)
        wrong = 1 - posterior[rows, y]
        likeliest = posterior.argmax(axis=1)
        flagged = posterior[rows, likeliest] > posterior[rows, y]  # Bayes' decision: another class is likelier
    code = np.where(y == 0, MISSED, np.where(likeliest == 0, EXTRA, SWAPPED))
    suspects = np.zeros(label.shape, dtype=np.uint8)
    suspects[inside] = np.where(flagged, code, 0)
    score = np.ones(label.shape)
    score[inside] = given
    suspicion = np.zeros(label.shape)
    suspicion[inside] = wrong
    foreground = 1 - p[:, 0]
    labelled = (y > 0).astype(np.float64)
    total = foreground.sum() + labelled.sum()
    quality = float(2 * (foreground * labelled).sum() / total) if total > 0 else float("nan")
    corrected = label.copy()
    corrected[inside] = np.where(flagged, likeliest, y)
    return MaskAudit(suspects=suspects, score=score, suspicion=suspicion, quality=quality, corrected=corrected)
