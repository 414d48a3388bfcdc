"""Several raters' masks of one case (the manifest's ``label``, ``label_2``, ...), made into one training target
(``data.raters``):

- ``consensus``: STAPLE (Warfield et al. 2004), in its multi-class form (the Dawid-Skene EM): each rater ``j`` has
  a confusion matrix ``theta_j[true class, class said]`` (for two classes: its sensitivity ``theta_j[1, 1]`` and
  specificity ``theta_j[0, 0]``) and the classes a prior; the EM alternates the posterior of every voxel's true
  class given what the raters said, and the matrices and prior given the posteriors, from the majority vote's
  posteriors until they change by less than 1e-7 (at most 200 rounds). The target is the class of highest
  posterior. A voxel's posterior depends only on what each rater said there, so the EM runs on the counts of the
  distinct vote patterns (at most ``K ** R`` for ``K`` classes and ``R`` raters), pooled over the training cases:
  exact, and its cost does not grow with the volumes.
- ``majority``: the class most raters said (ties: the lowest class among the tied, so background).
- ``mean``: binary masks: the share of raters who said foreground, a soft target (trained as ``data.soft_labels``;
  scored where more than half said foreground, the majority).
- ``sample``: each training step trains every case against one of its raters drawn at random (the case's ``votes``
  map holds what each rater said, :func:`vote_codes`); scored, and its patches centred, on the majority.
- ``first``: the first rater's (``label``) alone: the others serve only evaluation.

Counts are taken inside each case's roi where it has one; the fit of the training cases makes the targets of the
validation and test cases too (their consensus is what the run is scored against; the raters' own scores, and
their agreement, are given beside it). With ``first`` the label stays the first rater's, and the scores against
each rater are given all the same (DRIVE's second observer as ``label_2`` of the test cases: the model beside the
human agreement).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.manifest import Case
from labelwise.data.volumes import Volume, read_volume, suffix_of, write_volume
from labelwise.errors import DataError

__all__ = ["RaterModel", "fit_raters", "fuse", "fuse_cases", "rater_label", "read_raters", "vote_codes"]

TOLERANCE = 1e-7
ROUNDS = 200
EPS = 1e-6  # confusion entries and priors are kept above it: a class never seen keeps a finite log


@dataclass
class RaterModel:
    """The fitted fusion: ``method``, ``classes`` ``K``; ``confusion`` ``(R, K, K)`` (STAPLE: each rater's
    ``theta[true, said]``) and ``prior`` ``(K,)``; None for ``majority``."""

    method: str
    classes: int
    confusion: np.ndarray | None = None
    prior: np.ndarray | None = None
    rounds: int = 0

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"method": self.method, "classes": self.classes}
        if self.confusion is not None and self.prior is not None:
            record.update(
                rounds=self.rounds,
                prior=[round(float(v), 6) for v in self.prior],
                confusion=np.round(self.confusion, 6).tolist(),
            )
            if self.classes == 2:
                record["sensitivity"] = [round(float(c[1, 1]), 6) for c in self.confusion]
                record["specificity"] = [round(float(c[0, 0]), 6) for c in self.confusion]
        return record


def read_raters(case: Case) -> tuple[list[np.ndarray], np.ndarray | None, Volume]:
    """The raters' masks of ``case`` (every one the same shape), its roi (bool, or None) and the first rater's
    mask as read (its spacing and affine are the fused mask's)."""
    volumes = [read_volume(path, mask=True) for path in case.raters]
    masks = [np.asarray(v.array) for v in volumes]
    if len({m.shape for m in masks}) > 1:
        shapes = ", ".join(f"{p.name} {m.shape}" for p, m in zip(case.raters, masks))
        raise DataError(f"{case.id}: its raters' masks differ in shape ({shapes})")
    if any(m.min() < 0 for m in masks):
        raise DataError(f"{case.id}: a rater's mask has negative values")
    roi = read_volume(case.roi, mask=True).array > 0 if case.roi is not None else None
    return masks, roi, volumes[0]


def vote_codes(masks: Sequence[np.ndarray], classes: int) -> np.ndarray:
    """One integer per voxel for what the raters said there: ``sum_j label_j * K ** j`` (rater ``j``'s label is
    ``code // K ** j % K``; :func:`rater_label`)."""
    code = np.zeros(masks[0].shape, np.int64)
    for j, mask in enumerate(masks):
        code += mask.astype(np.int64) * classes**j
    return code


def rater_label(codes: Any, rater: Any, classes: int) -> Any:
    """Rater ``rater``'s labels from :func:`vote_codes` (numpy arrays or torch tensors, ``rater`` broadcast)."""
    return codes // classes**rater % classes


def _patterns(codes: np.ndarray, raters: int, classes: int) -> np.ndarray:
    """The labels ``(P, R)`` of each pattern code."""
    return (codes[:, None] // classes ** np.arange(raters)[None]) % classes


def _majority(patterns: np.ndarray, classes: int) -> np.ndarray:
    """Vote shares ``(P, K)`` of each pattern."""
    return np.stack([(patterns == k).mean(1) for k in range(classes)], axis=1)


def fit_raters(counts: dict[int, int], raters: int, classes: int, method: str) -> RaterModel:
    """The fusion ``method`` fitted on ``counts`` (voxels per vote-pattern code, pooled over cases)."""
    if method in ("majority", "mean", "sample"):
        return RaterModel(method, classes)
    if method != "consensus":
        raise DataError(f"data.raters: expected first, majority, mean, sample or consensus, got {method!r}")
    codes = np.array(sorted(counts), dtype=np.int64)
    weight = np.array([counts[c] for c in codes], dtype=np.float64)
    patterns = _patterns(codes, raters, classes)
    posterior = _majority(patterns, classes)
    confusion = np.zeros((raters, classes, classes))
    prior = np.zeros(classes)
    rounds = 0
    while rounds < ROUNDS:
        rounds += 1
        mass = posterior * weight[:, None]  # (P, K): voxels of each pattern in each true class
        prior = np.maximum(mass.sum(0) / weight.sum(), EPS)
        prior /= prior.sum()
        for j in range(raters):
            said = np.stack([mass[patterns[:, j] == k].sum(0) for k in range(classes)], axis=1)  # (true, said)
            confusion[j] = np.maximum(said / np.maximum(said.sum(1, keepdims=True), EPS), EPS)
            confusion[j] /= confusion[j].sum(1, keepdims=True)
        new = _posterior(patterns, confusion, prior)
        change = float(np.abs(new - posterior).max())
        posterior = new
        if change < TOLERANCE:
            break
    return RaterModel("consensus", classes, confusion, prior, rounds)


def _posterior(patterns: np.ndarray, confusion: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``P(true class | pattern)`` ``(P, K)``."""
    log = np.log(prior)[None].repeat(len(patterns), 0)
    for j in range(confusion.shape[0]):
        log += np.log(confusion[j][:, patterns[:, j]]).T
    log -= log.max(1, keepdims=True)
    p = np.exp(log)
    return p / p.sum(1, keepdims=True)


def fuse(masks: Sequence[np.ndarray], model: RaterModel) -> np.ndarray:
    """One case's target from its raters' ``masks`` by the fitted ``model``: int64 labels, the masks' shape;
    ``mean``: float32, the share of raters who said foreground."""
    classes, raters = model.classes, len(masks)
    if model.method == "mean":
        return np.asarray(np.mean([np.asarray(m) == 1 for m in masks], axis=0), dtype=np.float32)
    codes = vote_codes(masks, classes)
    unique, inverse = np.unique(codes.ravel(), return_inverse=True)
    patterns = _patterns(unique, raters, classes)
    if model.method in ("majority", "sample"):
        scores = _majority(patterns, classes)
    else:
        assert model.confusion is not None and model.prior is not None
        scores = _posterior(patterns, model.confusion, model.prior)
    return scores.argmax(1)[inverse].reshape(codes.shape).astype(np.int64)  # argmax: the lowest class of a tie


def fuse_cases(
    cases: Sequence[Case],
    train: Sequence[int],
    method: str,
    folder: Path,
    ignore: Sequence[int] = (),
    quiet: bool = False,
) -> tuple[list[Case], dict[str, Any] | None]:
    """``cases`` with the label of every case that has several raters replaced by their fused mask (``method``:
    ``consensus``, ``majority`` or ``mean``, a probability map to be read with ``data.soft_labels``; ``first``
    changes nothing), fitted on the cases at positions ``train`` (where none of them has several raters, as when only
    the test set was traced twice: on the cases that have). The fused masks are written under ``folder`` (3D, or the
    raters' masks NIfTI: NIfTI with the first rater's geometry; else PNG, ``mean``: float32 ``.npy``), named by a
    digest of the raters' files and the fit, so a later run with the same ones reuses them (and the case cache its
    entries); ``sample`` also writes each training case's vote codes (:func:`vote_codes`, int32) and sets its
    ``Case.votes``. Returns the cases and the record of the fit (None when no case has several raters or ``method``
    is ``first``)."""
    from labelwise.data.cache import _stamp

    rated = [i for i, c in enumerate(cases) if len(c.raters) > 1]
    if method == "first" or not rated:
        return list(cases), None
    if ignore:
        raise DataError(
            "data.raters with data.ignore: fusing raters' masks with voxels some leave unlabelled is not supported; "
            "set data.raters: first, or give masks without ignore values"
        )
    counts_raters = {len(cases[i].raters) for i in rated}
    if len(counts_raters) > 1 and method == "consensus":
        raise DataError(
            f"data.raters: consensus: the cases have different numbers of raters ({sorted(counts_raters)}); STAPLE "
            "fits each rater's sensitivity and specificity (majority, mean and sample take any number per case)"
        )
    raters = max(counts_raters)
    if method == "sample":  # a step draws one of every training case's raters: the same number for every one
        drawn = {len(cases[i].raters) for i in train if cases[i].labelled}
        if len(drawn) != 1 or min(drawn) < 2:
            raise DataError(
                "data.raters: sample draws one of every labelled training case's raters; they have "
                f"{', '.join(map(str, sorted(drawn)))} mask(s) (every one needs the same number, at least two)"
            )
        raters = drawn.pop()
    drawn_from = set(train)
    fitted = set([i for i in train if i in set(rated)] or rated)  # raters of the test cases only: fitted on those
    # first pass, one case in memory at a time: the classes, each case's format, and (consensus) how often each
    # pattern of votes occurs, as label tuples (the codes' base is the classes of all cases, known only at the end)
    top, nifti = 1, {}
    patterns: dict[tuple[int, ...], int] = {}
    for i in rated:
        masks, roi, _ = read_raters(cases[i])
        here = max(2, 1 + max(int(m.max(initial=0)) for m in masks))
        top = max(top, here - 1)
        nifti[i] = masks[0].ndim == 3 or suffix_of(cases[i].raters[0]) in (".nii", ".nii.gz")  # keeps its spacing
        if i in fitted and method == "consensus":
            codes = vote_codes(masks, here)
            unique, number = np.unique(codes[roi] if roi is not None else codes, return_counts=True)
            for labels, n in zip(_patterns(unique, len(masks), here).tolist(), number.tolist()):
                patterns[tuple(labels)] = patterns.get(tuple(labels), 0) + n
        del masks, roi
    classes = top + 1
    if method == "sample" and classes**raters > 2**24:
        raise DataError(f"data.raters: sample: {raters} raters of {classes} classes are too many to store")
    if method == "mean" and classes > 2:
        raise DataError(
            f"data.raters: mean makes a soft target of binary masks; the raters' masks hold {classes} classes "
            "(use consensus or majority)"
        )
    counts = {sum(label * classes**j for j, label in enumerate(labels)): n for labels, n in patterns.items()}
    model = fit_raters(counts, raters, classes, method)
    record = {**model.to_json(), "raters": raters, "fitted_on": len(fitted), "cases": len(rated)}
    key = hashlib.sha256(json.dumps([record, [[_stamp(p) for p in cases[i].raters] for i in rated]]).encode())
    out = list(cases)
    for i in rated:  # second pass: each fused mask (and vote codes) written once, one case in memory at a time
        case = cases[i]
        suffix = ".nii.gz" if nifti[i] else ".npy" if method == "mean" else ".png"
        path = folder / f"{case.id}-{key.hexdigest()[:12]}{suffix}"
        votes = None
        if method == "sample" and i in drawn_from:  # only training draws raters
            votes = folder / f"{case.id}-{key.hexdigest()[:12]}-votes{'.nii.gz' if nifti[i] else '.npy'}"
        if not path.is_file() or (votes is not None and not votes.is_file()):
            masks, _, first = read_raters(case)
            if not path.is_file():
                fused = fuse(masks, model)
                write_volume(path, fused if method == "mean" else fused.astype(np.uint8), first.spacing, first.affine)
            if votes is not None and not votes.is_file():
                write_volume(votes, vote_codes(masks, classes).astype(np.int32), first.spacing, first.affine)
            del masks
        out[i] = replace(case, label=path, votes=votes)
    if not quiet:
        said = (
            ", ".join(f"rater {j + 1} {s:.3f}/{t:.3f}" for j, (s, t) in enumerate(zip(record["sensitivity"],
                                                                                      record["specificity"])))
            if "sensitivity" in record
            else ""
        )  # fmt: skip
        print(
            f"labelwise: data.raters: {method} of {raters} raters on {len(rated)} case(s)"
            + (f" (sensitivity/specificity: {said})" if said else ""),
            file=sys.stderr,
            flush=True,
        )
    return out, record
