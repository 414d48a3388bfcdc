"""Classification metrics that do not punish a valid answer when an image holds several classes.

Single-label classifiers scored against multi-label sets (Beyer et al. 2020, "Are we done with ImageNet?";
Anzaku et al., arXiv 2412.18409, "Re-assessing ImageNet"), and the usual multi-label model metrics
(mAP, F1, subset accuracy, Hamming loss, label ranking average precision), equal to scikit-learn's.

Conventions: ``scores`` (N, C) are logits or probabilities (any float dtype, float16 included; only their
order matters except where a ``threshold`` is used); ``label_sets`` (N, C) bool is the multi-hot matrix of
each image's valid classes (:func:`label_set_matrix` builds it from lists); ``top`` (N, k) int64 are class
indices by decreasing score (:func:`top_predictions`). Per-image functions return (N,) float tensors with
1/0 (or a fraction) and ``nan`` where an image is not scored (an empty label set), so that means, subgroup
means and bootstrap intervals all skip the same images. Inputs may be numpy arrays (memory-mapped too) or
torch tensors on any device; no Python loop runs over images.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from labelwise.metrics.aggregate import bootstrap_ci, bootstrap_interval
from labelwise.metrics.classification import f1_from_counts

__all__ = [
    "asma",
    "f1_score",
    "hamming_loss",
    "label_ranking_average_precision",
    "label_set_matrix",
    "mean_average_precision",
    "real_correct",
    "subgroup_accuracy",
    "subset_accuracy",
    "summarize",
    "top_predictions",
    "topk_correct",
    "variable_topk_correct",
]

_CHUNK_ELEMENTS = 1 << 24  # rows are processed in chunks of about this many scores (bounded memory)


#: Integer dtypes torch stores but cannot compare, sort or reduce (``"min_all" not implemented for 'UInt16'``).
_UNSUPPORTED_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _tensor(x: Tensor | np.ndarray) -> Tensor:
    """A tensor view of ``x`` without a copy (numpy arrays and read-only memory maps included); uint16, uint32
    and uint64 values (e.g. class predictions saved as uint16) become an int64 copy, which torch can compute with."""
    if not isinstance(x, Tensor):
        with warnings.catch_warnings():  # torch warns on read-only arrays; these functions never write to them
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(np.asarray(x))
    return x.long() if x.dtype in _UNSUPPORTED_UNSIGNED else x


def _rows(width: int) -> int:
    """How many rows of ``width`` values make one chunk."""
    return max(1, _CHUNK_ELEMENTS // max(1, width))


def label_set_matrix(sets: Sequence[Sequence[int]], num_classes: int) -> Tensor:
    """Lists of class indices (one list per image, possibly empty) -> bool (N, C) multi-hot matrix."""
    lengths = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    flat = np.fromiter((c for s in sets for c in s), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
        bad = int(np.flatnonzero((flat < 0) | (flat >= num_classes))[0])
        row = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
        raise ValueError(f"label set of row {row} holds class {int(flat[bad])}, outside [0, {num_classes})")
    matrix = torch.zeros(len(sets), num_classes, dtype=torch.bool)
    matrix[torch.from_numpy(np.repeat(np.arange(len(sets)), lengths)), torch.from_numpy(flat)] = True
    return matrix


def top_predictions(scores: Tensor | np.ndarray, k: int) -> Tensor:
    """Indices (N, k) int64 of the ``k`` highest scores of each row, highest first (chunked over rows)."""
    scores = _tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    n, k = scores.shape[0], min(k, scores.shape[1])
    if n == 0:
        return torch.empty(0, k, dtype=torch.long)
    step = _rows(scores.shape[1])
    return torch.cat([torch.topk(scores[i : i + step], k, dim=1).indices for i in range(0, n, step)])


def topk_correct(top: Tensor, labels: Tensor | np.ndarray, k: int) -> Tensor:
    """1 where the single ``labels`` (N,) is among the first ``k`` of ``top`` (N, >=k); float (N,).
    Labels below 0 mean 'unknown' and give nan."""
    labels = _tensor(labels).to(top.device).long()
    hit = (top[:, :k] == labels[:, None]).any(dim=1).float()
    return torch.where(labels >= 0, hit, torch.full_like(hit, float("nan")))


def real_correct(top: Tensor, label_sets: Tensor, k: int = 1) -> Tensor:
    """ReaL top-k (Beyer et al. 2020): 1 where any of the first ``k`` predictions is in the image's label
    set, nan where the set is empty (those images are left out); float (N,)."""
    label_sets = _tensor(label_sets).to(top.device)
    hit = label_sets.gather(1, top[:, :k]).any(dim=1).float()
    return torch.where(label_sets.any(dim=1), hit, torch.full_like(hit, float("nan")))


def variable_topk_correct(
    top: Tensor, label_sets: Tensor, scoring: str = "subset", label_count: Tensor | None = None
) -> Tensor:
    """Variable top-k (Anzaku et al.): with k = the size of the image's label set, compare the k first
    predictions with the set. ``scoring="subset"``: 1 if all k labels are among them; ``"fraction"``:
    |top-k ∩ labels| / k. nan for an empty set; ``top`` needs at least max-set-size columns. Float (N,).
    ``label_count`` (N,), the set sizes, may be passed when already known."""
    if scoring not in ("subset", "fraction"):
        raise ValueError(f"scoring must be 'subset' or 'fraction', got {scoring!r}")
    label_sets = _tensor(label_sets).to(top.device)
    k = label_sets.sum(dim=1, dtype=torch.int32) if label_count is None else label_count.to(top.device)
    need = int(k.max()) if k.numel() else 0
    if top.shape[1] < need:
        raise ValueError(f"top has {top.shape[1]} columns but a label set holds {need} classes")
    width = min(top.shape[1], max(need, 1))
    within = torch.arange(width, device=top.device)[None, :] < k[:, None]
    hits = (label_sets.gather(1, top[:, :width]) & within).sum(dim=1)
    value = (hits == k).float() if scoring == "subset" else hits / k.clamp_min(1)
    return torch.where(k > 0, value.float(), torch.full_like(value, float("nan"), dtype=torch.float32))


def subgroup_accuracy(correct: Tensor, label_count: Tensor) -> dict[int, tuple[int, float]]:
    """Mean of per-image ``correct`` (N,) within each subgroup of images with the same ``label_count``
    (N,) (images with nan are left out): ``{count: (n, mean)}`` for every count >= 1 that occurs."""
    correct, label_count = _tensor(correct).float().cpu(), _tensor(label_count).long().cpu()
    keep = ~torch.isnan(correct) & (label_count > 0)
    count, value = label_count[keep], correct[keep]
    if count.numel() == 0:
        return {}
    n = torch.bincount(count)
    total = torch.bincount(count, weights=value.double())
    return {int(c): (int(n[c]), float(total[c] / n[c])) for c in torch.nonzero(n).flatten().tolist()}


def asma(correct: Tensor, label_count: Tensor, aggregation: Callable[[np.ndarray], float] = np.mean) -> float:
    """ASMA, aggregate subgroup model accuracy: ``aggregation`` (default the unweighted mean) of the
    subgroup accuracies of :func:`subgroup_accuracy`, so that each label count weighs the same however
    many images it has. nan when no image is scored."""
    groups = subgroup_accuracy(correct, label_count)
    return float(aggregation(np.array([mean for _, mean in groups.values()]))) if groups else float("nan")


# --- multi-label model metrics (scikit-learn's definitions, vectorised) ---------------------------------


def _group_end_positions(sorted_values: Tensor, dim: int) -> Tensor:
    """For values sorted (descending) along ``dim``: the index of the last element of each element's run
    of equal values (its tie group)."""
    n = sorted_values.shape[dim]
    index = torch.arange(n, device=sorted_values.device)
    shape = [1] * sorted_values.ndim
    shape[dim] = n
    index = index.view(shape).expand_as(sorted_values)
    nxt = sorted_values.narrow(dim, 1, n - 1) if n > 1 else sorted_values.narrow(dim, 0, 0)
    differs = torch.cat(
        [
            sorted_values.narrow(dim, 0, n - 1) != nxt,
            torch.ones_like(sorted_values.narrow(dim, 0, 1), dtype=torch.bool),
        ],
        dim=dim,
    )
    end = torch.where(differs, index, torch.full_like(index, n))
    return end.flip(dim).cummin(dim).values.flip(dim)


def mean_average_precision(scores: Tensor | np.ndarray, targets: Tensor | np.ndarray, average: str = "macro") -> Tensor:
    """Average precision per class (scikit-learn's ``average_precision_score``: tied scores form one
    threshold; a class without positives scores 0) and its ``"macro"`` mean, or ``average=None`` for the
    (C,) vector. ``targets`` (N, C) binary."""
    scores = _tensor(scores)
    targets = _tensor(targets).to(scores.device)
    n, c = scores.shape
    width = _rows(n)  # columns per chunk
    ap = torch.cat(
        [
            _average_precision(scores[:, j : j + width].float(), targets[:, j : j + width].bool())
            for j in range(0, c, width)
        ]
    )
    return ap.float() if average is None else ap.mean().float()


def _average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """AP of each column of ``scores`` (N, c) against ``targets`` (N, c); float64 (c,)."""
    order = scores.argsort(dim=0, descending=True, stable=True)
    s = scores.gather(0, order)
    positive = targets.gather(0, order).double()
    end = _group_end_positions(s, dim=0)
    precision = positive.cumsum(0) / torch.arange(1, s.shape[0] + 1, device=s.device, dtype=torch.float64)[:, None]
    n_pos = positive.sum(0)
    ap = (positive * precision.gather(0, end)).sum(0) / n_pos.clamp_min(1)
    return torch.where(n_pos > 0, ap, torch.zeros_like(ap))


def label_ranking_average_precision(scores: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> Tensor:
    """scikit-learn's ``label_ranking_average_precision_score``: per image, the mean over its true labels
    of (true labels scored >= it) / (labels scored >= it); 1 for an image with no or all labels true."""
    scores, targets = _tensor(scores), _tensor(targets)
    total, n = torch.zeros((), dtype=torch.float64), scores.shape[0]
    step = _rows(scores.shape[1])
    for i in range(0, n, step):
        s = scores[i : i + step].float()
        t = targets[i : i + s.shape[0]].bool().to(s.device)
        s_sorted, order = s.sort(dim=1, descending=True, stable=True)
        rel = t.gather(1, order).double()
        end = _group_end_positions(s_sorted, dim=1)
        rank = (end + 1).double()  # labels scored >= this one, ties included
        true_above = rel.cumsum(1).gather(1, end)
        n_true = rel.sum(1)
        per_image = (rel * true_above / rank).sum(1) / n_true.clamp_min(1)
        trivial = (n_true == 0) | (n_true == s.shape[1])
        total += torch.where(trivial, torch.ones_like(per_image), per_image).sum().cpu()
    return (total / max(n, 1)).float()


def _binary(predictions: Tensor | np.ndarray, threshold: float | None) -> Tensor:
    p = _tensor(predictions)
    return p >= threshold if threshold is not None and p.is_floating_point() else p.bool()


def f1_score(
    predictions: Tensor | np.ndarray,
    targets: Tensor | np.ndarray,
    average: str = "macro",
    threshold: float | None = 0.5,
) -> Tensor:
    """F1 of multi-label predictions (scores thresholded at ``>= threshold``, or binary) against binary
    ``targets`` (N, C); ``average`` is ``"micro"``, ``"macro"`` or ``"samples"``, as scikit-learn with
    ``zero_division=0``."""
    p = _binary(predictions, threshold)
    t = _tensor(targets).bool().to(p.device)
    dims: dict[str, int | None] = {"micro": None, "macro": 0, "samples": 1}
    if average not in dims:
        raise ValueError(f"average must be 'micro', 'macro' or 'samples', got {average!r}")
    dim = dims[average]
    tp = (p & t).sum(dim=dim) if dim is not None else (p & t).sum()
    predicted, actual = (p.sum(dim=dim), t.sum(dim=dim)) if dim is not None else (p.sum(), t.sum())
    return f1_from_counts(tp.double(), predicted, actual, zero_division=0.0).mean().float()


def subset_accuracy(
    predictions: Tensor | np.ndarray, targets: Tensor | np.ndarray, threshold: float | None = 0.5
) -> Tensor:
    """Fraction of images whose thresholded prediction equals the label set exactly."""
    p = _binary(predictions, threshold)
    return (p == _tensor(targets).bool().to(p.device)).all(dim=1).float().mean()


def hamming_loss(
    predictions: Tensor | np.ndarray, targets: Tensor | np.ndarray, threshold: float | None = 0.5
) -> Tensor:
    """Fraction of (image, class) entries where the thresholded prediction and the label set disagree."""
    p = _binary(predictions, threshold)
    return (p != _tensor(targets).bool().to(p.device)).float().mean()


# --- one call for a whole evaluation ---------------------------------------------------------------------

ASMA_DEFINITION = "unweighted mean, over the subgroups of images with 1, 2, 3, ... labels, of each subgroup's {metric}"


def summarize(
    outputs: Tensor | np.ndarray,
    label_sets: Tensor,
    single_labels: Tensor | np.ndarray | None = None,
    topk: Sequence[int] = (1, 5),
    label_count: Tensor | None = None,
    threshold: float | None = None,
    asma_metric: str = "variable_topk_subset",
    asma_aggregation: Callable[[np.ndarray], float] = np.mean,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """Every multi-label-aware score of one model, as plain numbers (fractions in [0, 1]).

    ``outputs``: scores (N, C) or predicted classes (N,) (then only the top-1 family is computed and the rest
    is listed under ``"unavailable"``). ``label_sets`` (N, C) bool. ``single_labels`` (N,) the original single
    label (optional). ``label_count`` (N,): the set sizes, when known (saves a pass over the label sets when
    many models are scored). ``threshold``: also the multi-label model metrics (mAP, LRAP, and F1, subset
    accuracy and Hamming loss of ``scores >= threshold``) over the images with a non-empty set.
    ``bootstrap``: that many resamples of the images give 95% intervals under ``"ci"``."""
    outputs, label_sets = _tensor(outputs), _tensor(label_sets).bool()
    n, c = label_sets.shape
    if outputs.shape[0] != n:
        raise ValueError(f"outputs have {outputs.shape[0]} rows but there are {n} label sets")
    if label_count is None:
        label_count = label_sets.sum(dim=1, dtype=torch.int32)
    scored = label_count > 0
    is_scores = outputs.ndim == 2
    if is_scores and outputs.shape[1] != c:
        raise ValueError(f"{outputs.shape[1]} classes but the label sets have {c}")
    if not is_scores and outputs.numel() and (int(outputs.min()) < 0 or int(outputs.max()) >= c):
        bad = int(torch.nonzero((outputs < 0) | (outputs >= c))[0, 0])
        raise ValueError(f"row {bad + 1} predicts class {int(outputs[bad])}, outside [0, {c})")

    ks = sorted({int(k) for k in topk})
    need = max(ks + [int(label_count.max()) if n else 1])
    top = top_predictions(outputs, need) if is_scores else outputs.long().view(-1, 1)
    per_image: dict[str, Tensor] = {}
    unavailable: dict[str, str] = {}
    for k in ks:
        if k > top.shape[1]:
            why = "the predictions are classes, not scores" if not is_scores else f"only {c} classes"
            for key in (f"top{k}", f"real_top{k}"):
                unavailable[key] = why
            continue
        if single_labels is not None:
            per_image[f"top{k}"] = topk_correct(top, single_labels, k)
        else:
            unavailable[f"top{k}"] = "no single labels (give --labels, or ids with class folders)"
        per_image[f"real_top{k}"] = real_correct(top, label_sets, k)
    if is_scores:
        per_image["variable_topk_subset"] = variable_topk_correct(top, label_sets, "subset", label_count)
        per_image["variable_topk_fraction"] = variable_topk_correct(top, label_sets, "fraction", label_count)
    else:
        for key in ("variable_topk_subset", "variable_topk_fraction"):
            unavailable[key] = "the predictions are classes, not scores"

    result: dict = {"n_images": n}
    for key, values in per_image.items():
        result[key] = float(torch.nanmean(values)) if (~torch.isnan(values)).any() else float("nan")
    for key in unavailable:
        result[key] = None
    result["n_real_scored"] = int(scored.sum())
    result["n_empty_label_sets"] = n - int(scored.sum())
    result["multi_label_fraction"] = float((label_count >= 2).sum() / scored.sum().clamp_min(1))

    groups: dict[str, dict] = {}
    for key, values in per_image.items():
        for count, (size, mean) in subgroup_accuracy(values, label_count).items():
            groups.setdefault(str(count), {"n": size})[key] = mean
    result["subgroup_accuracy"] = dict(sorted(groups.items(), key=lambda item: int(item[0])))
    if asma_metric in per_image:
        result["asma"] = asma(per_image[asma_metric], label_count, asma_aggregation)
    else:
        result["asma"] = None
        unavailable["asma"] = f"{asma_metric} is unavailable"
    result["asma_definition"] = ASMA_DEFINITION.format(metric=asma_metric)

    if is_scores and threshold is not None:
        keep = scored.to(outputs.device)
        s, t = outputs[keep], label_sets[keep]
        result.update(
            {
                "threshold": threshold,
                "map": float(mean_average_precision(s, t)),
                "f1_micro": float(f1_score(s, t, "micro", threshold)),
                "f1_macro": float(f1_score(s, t, "macro", threshold)),
                "f1_samples": float(f1_score(s, t, "samples", threshold)),
                "subset_accuracy": float(subset_accuracy(s, t, threshold)),
                "hamming_loss": float(hamming_loss(s, t, threshold)),
                "lrap": float(label_ranking_average_precision(s, t)),
            }
        )
    if bootstrap:
        result["ci"] = {
            key: list(bootstrap_ci(values, n_resamples=bootstrap, seed=seed)) for key, values in per_image.items()
        }
        if result["asma"] is not None:
            result["ci"]["asma"] = list(
                _asma_interval(per_image[asma_metric], label_count, bootstrap, seed, asma_aggregation)
            )
    result["unavailable"] = unavailable
    return result


def _asma_interval(
    correct: Tensor, label_count: Tensor, n_resamples: int, seed: int, aggregation: Callable[[np.ndarray], float]
) -> tuple[float, float]:
    """95% percentile interval of ASMA over resampled images (:func:`labelwise.metrics.aggregate.bootstrap_interval`;
    the subgroup means of each resample by bincount)."""
    keep = ~torch.isnan(correct) & (label_count > 0)
    value, count = correct[keep].double().cpu().numpy(), label_count[keep].cpu().numpy()
    groups, group = np.unique(count, return_inverse=True)

    def statistic(idx: np.ndarray) -> list[float]:
        r = idx.shape[0]
        flat = (np.arange(r)[:, None] * len(groups) + group[idx]).ravel()
        sums = np.bincount(flat, weights=value[idx].ravel(), minlength=r * len(groups)).reshape(r, -1)
        sizes = np.bincount(flat, minlength=r * len(groups)).reshape(r, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / sizes  # a subgroup missing from a resample is nan and left out of that resample
        return [aggregation(m[~np.isnan(m)]) for m in means]

    return bootstrap_interval(statistic, value.size, n_resamples, seed=seed)
