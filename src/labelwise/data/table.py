"""A classification table: one CSV row per sample, saying its image, split, labels, whether its label may be used,
its patient and its attributes (sex, race, ... for per-group figures).

Columns: ``id`` (unique), ``image`` (a picture, ``.npy``, NIfTI, or a Harvard-GDP ``data_XXXX.npz``), ``split``
(``train``, ``val`` or ``test``), the label column(s) named by ``data.labels`` (default ``label``: one column of
class indices or class names; several columns of 0/1: multi-label), optionally ``use_label`` (1/0, true/false,
yes/no: may training use this label? default: when the label is not empty), ``patient`` (splits are checked to be
patient-level: a patient in two splits is refused) and any attribute columns named by ``data.attributes``. Paths
are relative to the table's folder or absolute. Nothing is inferred from file order::

    id,image,patient,split,use_label,glaucoma,male,race
    data_0001,data_0001.npz,p0001,train,1,1,0,2
    data_0002,data_0002.npz,p0002,train,0,0,1,0      <- label hidden from training (semi-supervised methods)
    data_0003,data_0003.npz,p0003,test,1,1,1,1

``use_label`` concerns training rows only: val and test rows are scored, so they need their labels.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelwise.data.harvard import tds_grid
from labelwise.data.manifest import SPLITS
from labelwise.data.volumes import read_image
from labelwise.errors import DataError

__all__ = [
    "Table",
    "age_band",
    "load_images",
    "read_id_table",
    "read_rows",
    "read_table",
    "split_patients",
    "tds_grid",
    "write_folder_table",
    "write_harvard_table",
    "write_table",
]

TRUE, FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")
REQUIRED = ("id", "image", "split")


@dataclass
class Table:
    """The rows of a table, columns as arrays: ``target`` ``(N,)`` class indices, or ``(N, K)`` 0/1 for several
    label columns; -1 where a training label may not be used (or is empty)."""

    path: Path
    ids: list[str]
    images: list[Path]
    splits: np.ndarray
    labelled: np.ndarray
    target: np.ndarray
    class_names: list[str]
    multilabel: bool
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    patients: list[str] = field(default_factory=list)


def _flag(text: str, where: str, problems: list[str]) -> bool:
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value not in FALSE:
        problems.append(f"{where}: use_label {text!r}; use 1/0, true/false or yes/no")
    return False


def read_rows(path: Path, what: str = "table") -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file, names and values stripped of surrounding spaces."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [(c or "").strip() for c in reader.fieldnames or []]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    return columns, rows


def read_table(path: str | Path, labels: Sequence[str] = ("label",), attributes: Sequence[str] = ()) -> Table:
    """The rows of a classification table, checked: columns, unique ids, splits, files, labels, patient-level
    splits; every problem is reported with its line (the first ten)."""
    path = Path(path)
    columns, rows = read_rows(path, "table")
    missing = [c for c in (*REQUIRED, *labels, *attributes) if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (columns: {','.join(columns) or 'none'}); "
            "data.labels and data.attributes name columns of the table"
        )
    if not rows:
        raise DataError(f"{path}: no rows")
    problems: list[str] = []
    seen: set[str] = set()
    patient_split: dict[str, tuple[str, str]] = {}
    ids, images, splits, labelled, raw = [], [], [], [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        sample = row["id"]
        if not sample:
            problems.append(f"{where}: empty id")
        elif sample in seen:
            problems.append(f"{where}: duplicate id {sample!r}")
        seen.add(sample)
        split = row["split"]
        if split not in SPLITS:
            problems.append(f"{where}: split {split!r}; use one of {', '.join(SPLITS)}")
        image = Path(row["image"]) if Path(row["image"]).is_absolute() else path.parent / row["image"]
        if not row["image"] or not image.is_file():
            problems.append(f"{where}: image of {sample} not found: {image}")
        values = [row[c] for c in labels]
        has_label = all(values)
        use = _flag(row["use_label"], where, problems) if row.get("use_label", "") else has_label
        if split in ("val", "test"):
            if not has_label:
                problems.append(
                    f"{where}: {sample} is in the {split} split but has no label; val and test rows are "
                    "scored, so they need one"
                )
            use = True
        elif use and not has_label:
            problems.append(f"{where}: use_label is set but {sample} has no label in {', '.join(labels)}")
        patient = row.get("patient", "") or sample
        if patient in patient_split and patient_split[patient][0] != split:
            first_split, first_id = patient_split[patient]
            problems.append(
                f"{where}: patient {patient} is in {split} ({sample}) and in {first_split} ({first_id}); "
                "splits must be by patient"
            )
        patient_split.setdefault(patient, (split, sample))
        ids.append(sample)
        images.append(image)
        splits.append(split)
        labelled.append(use)
        raw.append(values)
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise DataError("\n".join(shown))
    target, class_names = _targets(path, raw, labelled, list(labels))
    return Table(
        path=path,
        ids=ids,
        images=images,
        splits=np.array(splits),
        labelled=np.array(labelled, dtype=bool),
        target=target,
        class_names=class_names,
        multilabel=len(labels) > 1,
        attributes={a: np.array([row[a] for row in rows]) for a in attributes},
        patients=[row.get("patient", "") or row["id"] for row in rows],
    )


def _targets(path: Path, raw: list[list[str]], use: list[bool], labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices (one column: integers as given, or names in sorted order) or a 0/1 matrix (several)."""
    if len(labels) > 1:
        target = np.full((len(raw), len(labels)), -1, dtype=np.int64)
        for i, (values, ok) in enumerate(zip(raw, use, strict=True)):
            if not ok:
                continue
            bad = [v for v in values if v not in ("0", "1")]
            if bad:
                raise DataError(f"{path}:{i + 2}: multi-label columns {', '.join(labels)} must hold 0 or 1, got {bad}")
            target[i] = [int(v) for v in values]
        return target, labels
    values = [v[0] for v, ok in zip(raw, use, strict=True) if ok]
    from labelwise.data.volumes import VOLUME_SUFFIXES, suffix_of

    if any(suffix_of(v) in VOLUME_SUFFIXES for v in values):
        raise DataError(
            f"{path}: column {labels[0]} holds file names (masks?); a classification table holds class "
            "labels. For masks set data.task: segmentation"
        )
    if all(_is_int(v) for v in values):
        numbers = [int(v) for v in values]
        if min(numbers) < 0:
            raise DataError(f"{path}: column {labels[0]} has negative class indices")
        lookup = {v: int(v) for v in values}
        names = [str(c) for c in range(max(numbers) + 1)]
    else:
        names = sorted(set(values))
        lookup = {name: i for i, name in enumerate(names)}
    target = np.array([lookup[v[0]] if ok else -1 for v, ok in zip(raw, use, strict=True)], dtype=np.int64)
    return target, names


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_images(
    paths: Sequence[Path], modalities: Sequence[str] = ("rnflt",), size: Sequence[int] | None = None
) -> np.ndarray:
    """Images ``(N, C, *spatial)`` float32: Harvard-GDP ``.npz`` files as the channels ``modalities`` (``rnflt``, the
    map; ``tds``, the visual field on its grid resized to the map), other files through
    :func:`labelwise.data.volumes.read_image`; resized to ``size`` (bilinear) when given, else all must agree."""
    import torch

    out = []
    for path in paths:
        image = read_image(path, modalities).array
        if size is not None:
            if len(size) != image.ndim - 1:
                raise DataError(f"data.image_size: {list(size)} has {len(size)} sizes but {path} is {image.ndim - 1}D")
            mode = "bilinear" if len(size) == 2 else "trilinear"
            image = torch.nn.functional.interpolate(
                torch.from_numpy(image)[None], size=tuple(size), mode=mode, align_corners=False
            )[0].numpy()
        out.append(image)
    shapes = {tuple(i.shape) for i in out}
    if len(shapes) > 1:
        raise DataError(
            f"images differ in shape ({', '.join(str(s) for s in sorted(shapes)[:4])}); set "
            "data.image_size to resize them"
        )
    return np.stack(out).astype(np.float32)


def write_table(path: str | Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """Write rows (dicts with the same keys) as a CSV table; returns the path."""
    import io

    from labelwise.io import atomic_write

    if not rows:
        raise DataError("write_table: no rows")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(Path(path), text.getvalue())


def split_patients(
    patients: Sequence[str], val: float = 0.15, test: float = 0.25, labelled: float = 1.0, seed: int = 0
) -> tuple[list[str], list[bool]]:
    """Split and label-usable flag per row, drawn by patient (all rows of a patient share them): a random
    ``val`` / ``test`` share of the patients, the rest training, of which a random ``labelled`` share may use
    their labels (at least one patient each)."""
    for name, value in (("val", val), ("test", test), ("labelled", labelled)):
        if not 0 <= value <= 1:
            raise DataError(f"{name} must lie in [0, 1], got {value}")
    if val + test >= 1:
        raise DataError(f"val + test = {val + test:.2f} leaves no training patients")
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val, n_test = round(val * len(unique)), round(test * len(unique))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[unique[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    train = [unique[i] for i in order[n_val + n_test :]]
    n_labelled = max(1, round(labelled * len(train))) if train else 0
    usable = set(train[:n_labelled]) | {p for p, s in split_of.items() if s != "train"}
    return [split_of[p] for p in patients], [p in usable for p in patients]


def age_band(age: float) -> str:
    """The age band used as a fairness attribute: <55, 55-65, 65-75, 75+."""
    return "<55" if age < 55 else "55-65" if age < 65 else "65-75" if age < 75 else "75+"


def write_harvard_table(
    folder: str | Path,
    out: str | Path | None = None,
    val: float = 0.15,
    test: float = 0.25,
    labelled: float = 1.0,
    seed: int = 0,
) -> Path:
    """A table of every ``data_XXXX.npz`` of a Harvard-GDP folder (one patient per file; default
    ``folder/table.csv``): split and ``use_label`` by :func:`split_patients`, the labels ``glaucoma`` and
    ``progression_1`` ... ``progression_6``, ``md``, and the attributes ``age``, ``age_band``, ``male``, ``race``,
    ``hispanic``."""
    from labelwise.data.harvard import read_patients

    folder = Path(folder)
    out = Path(out) if out is not None else folder / "table.csv"
    patients = read_patients(folder)
    splits, usable = split_patients(patients.ids, val, test, labelled, seed)
    rows = []
    for i, sample in enumerate(patients.ids):
        image = folder / f"{sample}.npz"
        a = {k: v[i] for k, v in patients.attributes.items()}
        rows.append(
            {
                "id": sample,
                "image": _relative(image, out.parent),
                "patient": sample,
                "split": splits[i],
                "use_label": int(usable[i]),
                "glaucoma": int(patients.glaucoma[i]),
                **{f"progression_{j + 1}": int(v) for j, v in enumerate(patients.progression[i])},
                "md": f"{float(patients.md[i]):.3f}",
                "age": f"{float(a['age']):.1f}",
                "age_band": age_band(float(a["age"])),
                "male": int(a["male"]),
                "race": int(a["race"]),
                "hispanic": int(a["hispanic"]),
            }
        )
    return write_table(out, rows)


def write_folder_table(
    root: str | Path,
    out: str | Path | None = None,
    val: float = 0.15,
    test: float = 0.25,
    labelled: float = 1.0,
    seed: int = 0,
) -> Path:
    """A table of an image folder with one subfolder per class (``root/<class>/<image>``; default
    ``root/table.csv``); each image is its own patient. Split and ``use_label`` by :func:`split_patients`."""
    from labelwise.data.volumes import VOLUME_SUFFIXES, case_id, suffix_of

    root = Path(root)
    out = Path(out) if out is not None else root / "table.csv"
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    files = [(c.name, f) for c in classes for f in sorted(c.iterdir()) if suffix_of(f) in VOLUME_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no images in class subfolders (expected {root}/<class>/<image>)")
    ids = [f"{label}/{case_id(f)}" for label, f in files]
    splits, usable = split_patients(ids, val, test, labelled, seed)
    rows = [
        {"id": i, "image": _relative(f, out.parent), "split": s, "use_label": int(u), "label": label}
        for i, (label, f), s, u in zip(ids, files, splits, usable, strict=True)
    ]
    return write_table(out, rows)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def read_id_table(path: str | Path, columns: Sequence[str] | None = None, what: str = "table") -> dict[str, np.ndarray]:
    """The columns of a CSV keyed by its ``id`` column: ``{"id": ..., column: values}`` as string arrays;
    ``columns`` None takes every column but ``id``."""
    path = Path(path)
    header, rows = read_rows(path, what)
    if "id" not in header:
        raise DataError(f"{what} {path}: needs an id column (columns: {','.join(header) or 'none'})")
    wanted = [c for c in header if c != "id"] if columns is None else list(columns)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{what} {path}: missing column(s) {', '.join(missing)} (columns: {','.join(header)})")
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{what} {path}: duplicate ids")
    return {"id": np.array(ids), **{c: np.array([row[c] for row in rows]) for c in wanted}}
