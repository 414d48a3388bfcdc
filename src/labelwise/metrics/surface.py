"""Binary-mask segmentation scores for one case, 2D or 3D, in numpy/scipy, distances in physical units.

``pred`` and ``truth`` are arrays (numpy or torch) of the same shape ``(*spatial)`` with 2 or 3 axes; the
foreground is ``value > 0`` (label maps with several labels are scored as one foreground). ``spacing`` gives the
physical size of a voxel along each axis (one number: isotropic; ``None``: 1), e.g. the NIfTI zooms in mm::

    scores = segmentation_scores(pred, truth, spacing=(0.3, 0.3, 0.6))
    # {"dice": ..., "iou": ..., "precision": ..., "sensitivity": ..., "volumetric_similarity": ...,
    #  "hd95": ... (mm), "assd": ... (mm), "cldice": ...}

Definitions (TP, FP, FN, TN voxel counts from :func:`confusion`):

* Dice ``2TP / (2TP + FP + FN)``, IoU ``TP / (TP + FP + FN)``, precision ``TP / (TP + FP)``, sensitivity
  ``TP / (TP + FN)``, volumetric similarity ``1 - |FN - FP| / (2TP + FP + FN)`` (1 when both volumes are equal,
  wherever they are). They are spacing-invariant and agree with :func:`labelwise.metrics.segmentation.dice`/``iou``.
* Surface voxels: foreground voxels with at least one face neighbour (4 in 2D, 6 in 3D) in the background or
  outside the image, i.e. ``mask & ~binary_erosion(mask)`` with scipy's default structuring element, as MONAI's
  ``get_mask_edges`` (without subvoxels). A one-voxel-thick tube is all surface.
* :func:`hd95`: the larger of the two directed 95th percentiles (linear interpolation, as ``np.percentile`` and
  ``torch.quantile``) of the distances from each surface voxel of one mask to the nearest surface voxel of the
  other, i.e. MONAI's ``compute_hausdorff_distance(percentile=95, directed=False)``.
* :func:`assd`: the mean of all those distances from both sides pooled together (so the larger surface weighs
  more), i.e. MONAI's ``compute_average_surface_distance(symmetric=True)``.
* :func:`cldice`: ``2 Tprec Tsens / (Tprec + Tsens)`` with ``Tprec = |S(pred) ∩ truth| / |S(pred)|`` and
  ``Tsens = |S(truth) ∩ pred| / |S(truth)|``, ``S`` the skeleton by :func:`skimage.morphology.skeletonize`
  (Zhang in 2D, Lee in 3D) (Shit et al., CVPR 2021). It measures whether the centre lines are covered, the
  right question for thin tubes where a one-voxel offset halves the Dice.

Empty masks (``nan`` where a ratio is 0/0, so that a ``nanmean`` over cases skips it):

* both empty: every score is nan (as :func:`labelwise.metrics.segmentation.dice`; MONAI's ``compute_dice``
  gives nan with its default ``ignore_empty=True`` and 1 with ``ignore_empty=False``);
* prediction empty, truth not: Dice, IoU, sensitivity, volumetric similarity, clDice 0; precision nan
  (no predicted voxel; as MONAI's confusion-matrix metrics); HD95, ASSD nan;
* truth empty, prediction not: Dice, IoU, precision, volumetric similarity, clDice 0; sensitivity nan;
  HD95, ASSD nan. (MONAI's ``compute_dice`` with ``ignore_empty=True`` gives nan here, with ``False`` 0.)

Precision and sensitivity follow MONAI's confusion-matrix metrics in all three cases (scikit-learn gives 0 with a
warning instead of nan).

Distances with one empty mask are nan: a surface distance to nothing is undefined, and inf would make every mean
over cases inf. A failed case still shows as Dice 0, and the evaluation
(:func:`labelwise.evaluation.segmentation.summarize_cases`) counts the cases behind each mean and those with an empty
prediction or reference, and says so. MONAI (checked with 1.6.1) agrees for HD95:
``compute_hausdorff_distance(percentile=95)`` gives nan (its ``torch.quantile`` of all-inf distances) with an empty
prediction or reference, with a warning; it gives inf for the plain (100th-percentile) Hausdorff distance and
``compute_average_surface_distance`` inf for ASSD; with both masks empty all three are nan.

Speed: everything runs on the bounding box of the union of both masks (plus a one-voxel margin), which is exact;
the nearest-surface distances use a KD-tree over surface voxels when the surfaces are sparse in that box (thin
tubes) and ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)`` otherwise; each mask is skeletonised
once. A 128³ case with thin vessels takes well under a second.

Several classes (label maps ``0..K``, 0 the background): :func:`class_scores` gives the scores above for each class
``k >= 1`` on the pair of masks ``(pred == k, truth == k)``, besides those of the whole foreground (``label > 0``).
A class absent from both masks of a case gets nan for every score, the both-empty convention above: a ``nanmean``
over cases leaves that case out of the class's mean, and
:func:`~labelwise.evaluation.segmentation.summarize_cases` counts it under ``both_empty`` (the cases behind each
class's mean are its ``count``). A class present in one mask only follows the one-empty conventions (Dice 0, nan
distances). MONAI's ``DiceMetric(include_background=False)`` on one-hot masks gives the same per-class Dice
wherever the class is in the truth; where it is not, MONAI's default ``ignore_empty=True`` gives nan (here: 0 when
predicted, nan when absent from both).

One scorer per case: :func:`score_case` is what every place that scores a segmentation case calls (the validation
Dice of ``Method.evaluate``, the end-of-run ``segmentation.json``, ``labelwise predict --reference`` and
``labelwise evaluate segmentation``), with the one roi masking (:func:`inside`) and the one class detection
(:func:`scored_classes`); ``distances=False`` gives its overlap scores alone, for the validations that run often.

Voxels that carry no label (``data.ignore``): a truth voxel of label :data:`IGNORE` (-1, what training reads an
ignore value as) or of one of the values in ``score_case(..., ignore=[255])`` counts nowhere: both masks are
background there, as outside a roi (:func:`split_ignored`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from labelwise.errors import DataError

__all__ = [
    "IGNORE",
    "OVERLAP_NAMES",
    "SCORE_NAMES",
    "Confusion",
    "assd",
    "class_scores",
    "cldice",
    "confusion",
    "hd95",
    "highest_label",
    "inside",
    "precision",
    "score_case",
    "scored_classes",
    "mark_ignored",
    "segmentation_scores",
    "sensitivity",
    "split_ignored",
    "surface_distances",
    "volumetric_similarity",
]

SCORE_NAMES = ("dice", "iou", "precision", "sensitivity", "volumetric_similarity", "hd95", "assd", "cldice")
OVERLAP_NAMES = SCORE_NAMES[:5]  # from the voxel counts alone: what distances=False computes
IGNORE = -1  # the label of a voxel that carries none (data.ignore): no loss, no score

_KDTREE_FRACTION = 0.05  # KD-tree when the surface voxels are fewer than this fraction of the box


class Confusion(NamedTuple):
    """Voxel counts of a binary prediction against the truth."""

    tp: int
    fp: int
    fn: int
    tn: int


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _binary(mask, what: str) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected a numeric or boolean mask, got dtype {array.dtype}")
    return array > 0


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p, t = _binary(pred, "prediction"), _binary(truth, "truth")
    if p.shape != t.shape:
        raise DataError(f"prediction and truth shapes differ: {p.shape} vs {t.shape}")
    if p.ndim not in (2, 3):
        raise DataError(f"masks must be 2D or 3D (*spatial), got shape {p.shape}")
    return p, t


def _spacing(spacing: float | Sequence[float] | np.ndarray | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim or not np.all(np.isfinite(values)) or not np.all(values > 0):
        raise DataError(f"spacing must be one positive number or {ndim} (one per spatial axis), got {spacing!r}")
    return values


def _box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` (clipped to the image); None when empty."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def confusion(pred, truth) -> Confusion:
    """True/false positives/negatives, counted over voxels (foreground ``> 0``)."""
    p, t = _pair(pred, truth)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return Confusion(tp, fp, fn, p.size - tp - fp - fn)


def _overlap_scores(c: Confusion) -> dict[str, float]:
    union = c.tp + c.fp + c.fn
    return {
        "dice": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "iou": _ratio(c.tp, union),
        "precision": _ratio(c.tp, c.tp + c.fp),
        "sensitivity": _ratio(c.tp, c.tp + c.fn),
        "volumetric_similarity": 1.0 - _ratio(abs(c.fn - c.fp), 2 * c.tp + c.fp + c.fn),
    }


def precision(pred, truth) -> float:
    """``TP / (TP + FP)``; nan for an empty prediction."""
    return _overlap_scores(confusion(pred, truth))["precision"]


def sensitivity(pred, truth) -> float:
    """Recall ``TP / (TP + FN)``; nan for an empty truth."""
    return _overlap_scores(confusion(pred, truth))["sensitivity"]


def volumetric_similarity(pred, truth) -> float:
    """``1 - |FN - FP| / (2TP + FP + FN)`` = ``1 - |V_pred - V_truth| / (V_pred + V_truth)``; nan when both empty."""
    return _overlap_scores(confusion(pred, truth))["volumetric_similarity"]


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # here, not at import: loading a run to predict with it needs no scipy

    return mask & ~ndimage.binary_erosion(mask)  # face connectivity, outside the image counts as background


def _nearest(
    points_from: np.ndarray, surface_to: np.ndarray, points_to: np.ndarray, spacing: np.ndarray, use_kdtree: bool
) -> np.ndarray:
    """Distance from each of ``points_from`` (voxel indices) to the nearest voxel of ``surface_to``."""
    if use_kdtree:
        from scipy.spatial import KDTree

        tree = KDTree(points_to * spacing, leafsize=32)
        return np.asarray(tree.query(points_from * spacing, k=1)[0])
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~surface_to, sampling=spacing)
    return distance[tuple(points_from.T)]


def surface_distances(
    pred, truth, spacing: float | Sequence[float] | np.ndarray | None = None, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (physical units, float64) from each surface voxel of ``pred`` to the nearest surface voxel of
    ``truth``, and from each surface voxel of ``truth`` to ``pred``'s surface. Empty arrays when either mask is
    empty. ``method``: ``"kdtree"``, ``"edt"`` (both exact) or ``"auto"`` (KD-tree for sparse surfaces)."""
    p, t = _pair(pred, truth)
    s = _spacing(spacing, p.ndim)
    if method not in ("auto", "kdtree", "edt"):
        raise ValueError(f"method must be 'auto', 'kdtree' or 'edt', got {method!r}")
    box = _box(p | t)
    if box is None or not p.any() or not t.any():
        return np.empty(0), np.empty(0)
    p, t = p[box], t[box]
    sp, st = _surface(p), _surface(t)
    ip, it = np.argwhere(sp), np.argwhere(st)
    use_kdtree = method == "kdtree" or (method == "auto" and len(ip) + len(it) < _KDTREE_FRACTION * p.size)
    return (
        _nearest(ip, st, it, s, use_kdtree).astype(np.float64),
        _nearest(it, sp, ip, s, use_kdtree).astype(np.float64),
    )


def _hd(d_pt: np.ndarray, d_tp: np.ndarray, percentile: float) -> float:
    if d_pt.size == 0 or d_tp.size == 0:
        return math.nan
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def _assd(d_pt: np.ndarray, d_tp: np.ndarray) -> float:
    if d_pt.size == 0 or d_tp.size == 0:
        return math.nan
    return float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))


def hd95(pred, truth, spacing: float | Sequence[float] | None = None, percentile: float = 95.0) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces, in the units of ``spacing``; nan when
    either mask is empty (as MONAI 1.6's ``compute_hausdorff_distance(percentile=95)``; it gives inf for
    ``percentile=None``, the plain Hausdorff distance)."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    return _hd(*surface_distances(pred, truth, spacing), percentile)


def assd(pred, truth, spacing: float | Sequence[float] | None = None) -> float:
    """Average symmetric surface distance, in the units of ``spacing``; nan when either mask is empty (MONAI 1.6's
    ``compute_average_surface_distance``: inf with one mask empty, nan with both)."""
    return _assd(*surface_distances(pred, truth, spacing))


def _skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton of ``mask`` computed on its bounding box (zero margin of one voxel), as a full-size bool array."""
    from skimage.morphology import skeletonize

    out = np.zeros(mask.shape, dtype=bool)
    box = _box(mask)
    if box is not None:
        crop = np.pad(mask[box], 1)
        skeleton = skeletonize(crop)[(slice(1, -1),) * mask.ndim].astype(bool)
        # a non-empty component always keeps a voxel; keep the mask itself should the skeleton ever vanish
        out[box] = skeleton if skeleton.any() else mask[box]
    return out


def _cldice(p: np.ndarray, t: np.ndarray) -> float:
    p_any, t_any = bool(p.any()), bool(t.any())
    if not p_any and not t_any:
        return math.nan
    if not p_any or not t_any:
        return 0.0
    box = _box(p | t)
    p, t = p[box], t[box]
    sp, st = _skeleton(p), _skeleton(t)
    tprec = np.count_nonzero(sp & t) / np.count_nonzero(sp)
    tsens = np.count_nonzero(st & p) / np.count_nonzero(st)
    return 0.0 if tprec + tsens == 0 else float(2 * tprec * tsens / (tprec + tsens))


def cldice(pred, truth) -> float:
    """Centre-line Dice (skeleton-based); nan when both masks are empty, 0 when exactly one is."""
    return _cldice(*_pair(pred, truth))


def inside(mask, roi):
    """``mask`` (an array or a tensor) with background (0, False) outside the region of interest ``roi > 0`` (of
    the same kind and shape); ``mask`` itself where ``roi`` is None. The one roi masking of the package: scores
    inside a region and predicted masks written background outside it both go through it."""
    if roi is None:
        return mask
    if tuple(roi.shape) != tuple(mask.shape):
        raise DataError(f"roi shape {tuple(roi.shape)} differs from the masks' {tuple(mask.shape)}")
    return mask * (roi > 0)


def segmentation_scores(
    pred, truth, spacing: float | Sequence[float] | None = None, roi=None, *, distances: bool = True
) -> dict[str, float]:
    """All scores of one case: ``dice, iou, precision, sensitivity, volumetric_similarity, hd95, assd, cldice``
    (distances in the units of ``spacing``); see the module docstring for definitions and empty masks. With ``roi``
    (a mask of the same shape), both masks count as background outside it: scores inside the region of interest.
    ``distances=False``: the overlap scores only (:data:`OVERLAP_NAMES`: no surface distances, no skeletons)."""
    p, t = _pair(pred, truth)
    if roi is not None:
        r = _binary(roi, "roi")
        p, t = inside(p, r), inside(t, r)
    scores = _overlap_scores(confusion(p, t))
    if not distances:
        return {name: float(scores[name]) for name in OVERLAP_NAMES}
    s = _spacing(spacing, p.ndim)
    d_pt, d_tp = surface_distances(p, t, s)
    scores["hd95"] = _hd(d_pt, d_tp, 95.0)
    scores["assd"] = _assd(d_pt, d_tp)
    scores["cldice"] = _cldice(p, t)
    return {name: float(scores[name]) for name in SCORE_NAMES}


def _labels(mask, what: str) -> np.ndarray:
    """An integer label map (bool: 0/1) from an array or tensor; refuses fractional and negative labels."""
    if hasattr(mask, "detach"):  # torch tensor
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.dtype == bool:
        return array.astype(np.int64)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected an integer label map, got dtype {array.dtype}")
    if array.dtype.kind == "f" and (not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))):
        raise DataError(f"{what}: a label map must hold integer labels, found fractional or non-finite values")
    if array.size and array.min() < 0:
        raise DataError(f"{what}: a label map must hold labels >= 0, found {array.min()}")
    return array.astype(np.int64, copy=False)


def highest_label(*masks) -> int:
    """The highest label of integer label maps (arrays or tensors); 0 for empty ones; :data:`IGNORE` not counted."""
    return max([0, *(int(_labels(split_ignored(m)[0], "mask").max(initial=0)) for m in masks)])


def scored_classes(num_classes: int | None = None, names: Sequence[str] | None = None, highest: int = 0) -> list[str]:
    """The classes scored one by one, as the names of labels ``1..K``; ``[]``: one foreground (``label > 0``) only.
    The one class detection of the package.

    ``num_classes`` known (a run's, with the background): ``K = num_classes - 1`` classes when ``K > 1``, named
    ``names`` when there are ``K`` of them, else ``"1", "2", ...``; a binary run scores one foreground. Unknown
    (masks from anywhere): ``names`` when given (asked for, even for one class), else ``"1" .. str(highest)`` when
    the ``highest`` label found is above 1."""
    if num_classes is not None:
        if num_classes <= 2:
            return []
        given = [str(n) for n in names] if names is not None else []
        return given if len(given) == num_classes - 1 else [str(k) for k in range(1, num_classes)]
    if names:
        return [str(n) for n in names]
    return [str(k) for k in range(1, highest + 1)] if highest > 1 else []


def mark_ignored(label: np.ndarray, ignore: Sequence[int] = ()) -> np.ndarray:
    """``label`` (an integer label map) with the voxels of a value in ``ignore`` set to :data:`IGNORE` (as int64;
    the array itself when there are none): how a mask with ``data.ignore`` values is read for training and
    scoring."""
    if not len(ignore):
        return label
    unlabelled = np.isin(label, np.asarray(list(ignore), dtype=np.int64))
    return np.where(unlabelled, IGNORE, label.astype(np.int64, copy=False)) if unlabelled.any() else label


def split_ignored(truth, ignore: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """``truth`` (an integer label map, array or tensor) with its unlabelled voxels, those of label :data:`IGNORE`
    or of a value in ``ignore``, made background, and the mask of those voxels (None when there is none)."""
    if hasattr(truth, "detach"):  # torch tensor
        truth = truth.detach().cpu().numpy()
    array = np.asarray(truth)
    if array.dtype == bool or array.dtype.kind not in "iuf":
        return array, None
    array = mark_ignored(array, ignore)
    unlabelled = array < 0
    if not unlabelled.any():
        return array, None
    return np.where(unlabelled, 0, array), unlabelled


def score_case(
    pred,
    truth,
    spacing: float | Sequence[float] | None = None,
    roi=None,
    classes: Sequence[str] = (),
    *,
    distances: bool = True,
    ignore: Sequence[int] = (),
) -> dict[str, dict]:
    """The one per-case segmentation scorer: :func:`segmentation_scores` of the whole foreground (``label > 0``)
    and, for each of ``classes`` (the names of labels ``1..K``, from :func:`scored_classes`), of label ``k`` against
    label ``k``; both masks background outside ``roi`` (:func:`inside`). ``distances=False``: the overlap scores
    only (what a validation needs, fast).

    ``pred``, ``truth``: ``(*spatial)`` arrays or tensors; with ``classes`` integer label maps, a label above ``K``
    refused. Returns ``{"foreground": scores, "per_class": {name: scores}}`` (``per_class`` empty without
    classes); a class absent from both masks scores nan everywhere. Truth voxels of label :data:`IGNORE` or of a
    value in ``ignore`` count nowhere: outside the scored region, as outside ``roi`` (:func:`split_ignored`)."""
    truth, unlabelled = split_ignored(truth, ignore)
    if unlabelled is not None:
        for what, other in (("prediction", pred), ("roi", roi)):
            if other is not None and tuple(other.shape) != unlabelled.shape:
                raise DataError(f"{what} shape {tuple(other.shape)} differs from the truth's {unlabelled.shape}")
        roi = ~unlabelled if roi is None else _binary(roi, "roi") & ~unlabelled
    if not classes:
        return {"foreground": segmentation_scores(pred, truth, spacing, roi, distances=distances), "per_class": {}}
    p, t = _labels(pred, "prediction"), _labels(truth, "truth")
    if p.shape != t.shape:
        raise DataError(f"prediction and truth shapes differ: {p.shape} vs {t.shape}")
    if len(set(map(str, classes))) != len(classes):
        raise DataError(f"class names must differ from one another, got {', '.join(map(str, classes))}")
    top = max(int(p.max(initial=0)), int(t.max(initial=0)))
    if top > len(classes):
        which = "prediction" if int(p.max(initial=0)) == top else "truth"
        raise DataError(
            f"the {which} holds label {top}, but there are {len(classes) + 1} classes (labels 0 to {len(classes)})"
        )
    foreground = segmentation_scores(p > 0, t > 0, spacing, roi, distances=distances)
    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(classes, start=1):
        if k == 1 and top <= 1:  # a binary pair: class 1 is the whole foreground
            per_class[str(name)] = dict(foreground)
        else:
            per_class[str(name)] = segmentation_scores(p == k, t == k, spacing, roi, distances=distances)
    return {"foreground": foreground, "per_class": per_class}


def class_scores(
    pred,
    truth,
    spacing: float | Sequence[float] | None = None,
    num_classes: int | None = None,
    roi=None,
    names: Sequence[str] | None = None,
) -> dict[str, dict]:
    """The scores of :func:`segmentation_scores` of one case for the whole foreground and for each class
    (:func:`score_case` with every class ``1 .. num_classes - 1``, even for a binary pair).

    ``pred`` and ``truth``: integer label maps ``(*spatial)`` (0 the background; bool masks are label 1).
    ``num_classes``: the number of classes *with* the background (as :func:`labelwise.metrics.segmentation.dice` and a
    run's ``num_classes``), so the classes scored are ``1 .. num_classes - 1``; None: up to the highest label in
    either mask (at least 1). A label ``>= num_classes`` is refused. ``names``: one name per foreground class (``K``
    names for classes ``1..K``); default ``"1", "2", ...``. ``roi``: as in :func:`segmentation_scores`.

    Returns ``{"foreground": scores, "per_class": {name: scores}}`` (classes in label order), where
    ``foreground`` scores ``label > 0`` (equal to ``segmentation_scores(pred, truth, spacing, roi)``) and each class
    ``k`` the masks ``(pred == k, truth == k)``. A class absent from both masks scores nan everywhere (the both-empty
    convention of the module docstring), so a mean over cases skips it."""
    if num_classes is None:
        num_classes = (len(names) if names is not None else max(highest_label(pred, truth), 1)) + 1
    if num_classes < 2:
        raise DataError(f"num_classes counts the background too and must be at least 2, got {num_classes}")
    names = [str(k) for k in range(1, num_classes)] if names is None else [str(n) for n in names]
    if len(names) != num_classes - 1:
        raise DataError(
            f"{len(names)} class name(s) for {num_classes - 1} foreground classes (labels 1 to "
            f"{num_classes - 1}): {', '.join(names)}"
        )
    return score_case(pred, truth, spacing, roi, names)
