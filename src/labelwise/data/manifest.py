"""A manifest lists the cases of a dataset of image files: one CSV row per case.

Columns: ``id`` (unique), ``image`` (a NIfTI volume or a 2D picture), ``label`` (its mask; empty: the case is
unlabelled), ``split`` (``train``, ``val`` or ``test``), and optionally ``truth`` (a reference mask used only for
evaluation, e.g. the clean mask of a synthetic set whose ``label`` is noisy), ``roi`` (a region-of-interest mask:
scores are computed inside it, e.g. a fundus photograph's field of view), ``ignore`` (a mask of the voxels that carry
no label: they count in no loss and no score, as the values of ``data.ignore`` do), ``weight`` (a map of per-voxel
loss weights >= 0, e.g. low where the annotator was unsure) and ``label_2``, ``label_3``, ... (the masks of more
raters of the case, ``label`` being the first's: ``data.raters`` says how they make the training target,
:mod:`labelwise.data.raters`). Every mask and map has its image's shape and spacing. Paths are relative to the
manifest's folder or absolute. Which cases may use their label is said by the manifest, never inferred from file order::

    id,image,label,split,truth
    vessel_000,images/vessel_000.nii.gz,labels/vessel_000.nii.gz,train,truth/vessel_000.nii.gz
    vessel_001,images/vessel_001.nii.gz,,train,          <- unlabelled: used by semi-supervised methods only
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from labelwise.errors import DataError

__all__ = ["SPLITS", "Case", "read_manifest"]

SPLITS = ("train", "val", "test")
REQUIRED = ("id", "image", "split")
RATER = re.compile(r"label_([2-9]|[1-9][0-9]+)")  # label_2, label_3, ...: more raters' masks


@dataclass(frozen=True)
class Case:
    """One row of a manifest, paths resolved."""

    id: str
    image: Path
    label: Path | None
    split: str
    truth: Path | None = None
    roi: Path | None = None
    raters: tuple[Path, ...] = ()  # with label_2, ...: every rater's mask, the first the manifest's label
    ignore: Path | None = None  # a mask of the voxels without a label (> 0)
    weight: Path | None = None  # per-voxel loss weights
    # data.raters: sample: what each rater said per voxel (labelwise.data.raters writes it; not a column)
    votes: Path | None = None

    @property
    def labelled(self) -> bool:
        return self.label is not None


def read_manifest(path: str | Path) -> list[Case]:
    """The cases of a manifest CSV, checked: required columns, unique ids, known splits, existing files; val and
    test cases must be labelled (they are what the run is scored on)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected "
                f"id,image,label,split[,truth][,roi][,ignore][,weight], got {','.join(columns) or 'nothing'}"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise DataError(f"{path}: no cases")
    base = path.parent
    cases, seen, problems = [], set(), []
    for line, row in enumerate(rows, start=2):
        case_id = row.get("id", "")
        where = f"{path}:{line}"
        if not case_id:
            problems.append(f"{where}: empty id")
            continue
        if case_id in seen:
            problems.append(f"{where}: duplicate id {case_id!r}")
        seen.add(case_id)
        split = row.get("split", "")
        if split not in SPLITS:
            problems.append(f"{where}: split {split!r} of {case_id}; use one of {', '.join(SPLITS)}")
        files: dict[str, Path | None] = {}
        extra = sorted((c for c in row if RATER.fullmatch(c) and row[c]), key=lambda c: int(c.split("_")[1]))
        for column in ("image", "label", "truth", "roi", "ignore", "weight", *extra):
            text = row.get(column, "")
            if not text:
                files[column] = None
                continue
            file = Path(text) if Path(text).is_absolute() else base / text
            if not file.is_file():
                problems.append(f"{where}: {column} of {case_id} not found: {file}")
            files[column] = file
        image = files["image"]
        if image is None:
            problems.append(f"{where}: {case_id} has no image")
        if split in ("val", "test") and files["label"] is None:
            problems.append(
                f"{where}: {case_id} is in the {split} split but has no label; val and test cases are "
                "scored, so they need one"
            )
        if extra and files["label"] is None:
            problems.append(f"{where}: {case_id} has {', '.join(extra)} but no label (the first rater's mask)")
        raters = (files["label"], *(files[c] for c in extra)) if extra and files["label"] is not None else ()
        if (files["ignore"] or files["weight"]) and files["label"] is None:
            problems.append(f"{where}: {case_id} has an ignore or weight map but no label")
        if image is not None:  # else a problem: no case is returned
            cases.append(
                Case(
                    case_id,
                    image,
                    files["label"],
                    split,
                    files["truth"],
                    files["roi"],
                    tuple(p for p in raters if p),
                    files["ignore"],
                    files["weight"],
                )
            )
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise DataError("\n".join(shown))
    return cases
