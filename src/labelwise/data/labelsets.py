"""Readers for multi-label evaluation: label sets (built-in or a file), image ids, single labels, model outputs.

Built-in label sets ship inside the package (see ``labelsets/SOURCES.md``): ``imagenet-real`` (ReaL labels of
the 50,000 ImageNet validation images) and ``imagenetv2-multilabel`` (refined sets of the 10,000 ImageNetV2
MatchedFrequency images). A label-set file is JSON: a list of lists of class indices (row i is image i) or an
object ``{image id: [class indices]}``; indices may be ints or strings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from labelwise.data.table import read_id_table
from labelwise.errors import DataError

HERE = Path(__file__).resolve().parent / "labelsets"
BUILTIN = {
    "imagenet-real": "real.json",
    "imagenetv2-multilabel": "imagenetv2_refined_labels.json",
}
PREDICTION_KEYS = ("scores", "logits", "probabilities", "probability", "probs", "predictions", "outputs")
SINGLE_LABEL_KEYS = ("target", "label", "labels")


@dataclass
class LabelSets:
    """Image ids (the keys a row is matched by) and the class indices valid for each image."""

    name: str
    ids: list[str]
    sets: list[list[int]]
    num_classes: int
    class_names: list[str]
    rows_in_order: bool  # True when the file's order is a meaningful row order (no --ids needed)

    def __len__(self) -> int:
        return len(self.ids)


def _imagenet_class_names() -> list[str]:
    names = json.loads((HERE / "label_indices_to_label_names.json").read_text())
    return [names[str(i)] for i in range(len(names))]


def load_label_sets(spec: str | Path) -> LabelSets:
    """A built-in label set by name, or a JSON label-set file (see the module docstring)."""
    if str(spec) in BUILTIN:
        name = str(spec)
        raw = json.loads((HERE / BUILTIN[name]).read_text())
        names = _imagenet_class_names()
        if name == "imagenet-real":
            ids = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(raw))]
            return LabelSets(name, ids, [list(map(int, s)) for s in raw], 1000, names, True)
        return LabelSets(name, list(raw), [list(map(int, s)) for s in raw.values()], 1000, names, False)
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"--label-sets {spec}: no such file, and not a built-in set ({', '.join(BUILTIN)})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a JSON label-set file ({err})") from None
    if isinstance(raw, dict):
        ids, values = [str(k) for k in raw], list(raw.values())
    elif isinstance(raw, list):
        ids, values = [str(i) for i in range(len(raw))], raw
    else:
        raise DataError(
            f"{path}: expected a JSON list of lists or an object {{id: [classes]}}, got {type(raw).__name__}"
        )
    sets = []
    for key, value in zip(ids, values, strict=True):
        try:
            sets.append([int(c) for c in value])
        except (TypeError, ValueError):
            raise DataError(f"{path}: entry {key!r} is not a list of class indices: {value!r}") from None
        if any(c < 0 for c in sets[-1]):
            raise DataError(f"{path}: entry {key!r} holds a negative class index: {value!r}")
    largest = max((max(s) for s in sets if s), default=-1)
    return LabelSets(path.name, ids, sets, largest + 1, [], True)


def read_ids(path: str | Path) -> list[str]:
    """Image ids, one per prediction row: a text file (one per line) or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--ids {path}: no such file")
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"--ids {path}: invalid JSON ({err})") from None
        return [str(x) for x in ids]
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_single_labels(path: str | Path, what: str = "--labels") -> np.ndarray:
    """One integer class per row: ``.npy``, ``.npz`` (``target`` or ``label``, e.g. a run's
    ``predictions/test.npz``), a JSON list, or text with one integer per line. ``what`` names the source in errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path}: no such file")
    if path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in SINGLE_LABEL_KEYS if k in data.files), None)
            if key is None:
                raise DataError(f"{what} {path}: holds {data.files}, none of {', '.join(SINGLE_LABEL_KEYS)}")
            labels = data[key]
    else:
        text = path.read_text()
        try:
            labels = np.array(json.loads(text) if text.lstrip().startswith("[") else text.split(), dtype=np.int64)
        except (ValueError, json.JSONDecodeError):
            raise DataError(f"{what} {path}: expected integers, one per row") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} {path}: expected integers of shape (N,), got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def match_ids(row_ids: list[str], keys: list[str], what: str) -> np.ndarray:
    """The position in ``keys`` of each of ``row_ids`` (exactly, else by the last path part, so that
    ``val/img1.jpeg`` finds ``img1.jpeg``); ids found nowhere are refused, a few named."""
    exact = {key: i for i, key in enumerate(keys)}
    by_name = {PurePosixPath(key.replace("\\", "/")).name: i for i, key in enumerate(keys)}
    rows, missing = [], []
    for row_id in row_ids:
        i = exact.get(row_id)
        if i is None:
            i = by_name.get(PurePosixPath(row_id.replace("\\", "/")).name)
        if i is None:
            missing.append(row_id)
        rows.append(-1 if i is None else i)
    if missing:
        raise DataError(f"{what}: {len(missing)} prediction id(s) not found, e.g. {', '.join(missing[:5])}")
    return np.array(rows, dtype=np.int64)


def read_labels(
    path: str | Path,
    columns: list[str] | tuple[str, ...] = ("label",),
    row_ids: list[str] | None = None,
    n_rows: int | None = None,
    what: str = "--labels",
) -> tuple[np.ndarray, list[str] | None]:
    """The labels of ``n_rows`` prediction rows, and the rows' ids. From a CSV with an ``id`` column and the label
    ``columns`` (rows matched by ``row_ids``, or in file order when those are None: then the CSV's ids are
    returned), or from single labels in row order (``.npy``, ``.npz`` with ``target``/``label``, JSON, text; see
    :func:`read_single_labels`). Labels: int64 (N,) for one column, (N, K) for several (multi-label 0/1)."""
    path = Path(path)
    if path.suffix.lower() == ".npz" and path.is_file():
        medmnist = _medmnist_labels(path, row_ids, n_rows, what)
        if medmnist is not None:
            return medmnist
    if path.suffix.lower() != ".csv":
        labels = read_single_labels(path, what)
        if n_rows is not None and len(labels) != n_rows:
            raise DataError(f"{what} {path}: {len(labels)} labels for {n_rows} prediction rows")
        return labels, row_ids
    columns = list(columns)
    table = read_id_table(path, columns, what=what)
    keys = table["id"].tolist()
    if row_ids is None:
        if n_rows is not None and len(keys) != n_rows:
            raise DataError(
                f"{what} {path}: {len(keys)} rows for {n_rows} prediction rows; give --ids (one id per "
                "prediction row) to match rows by id"
            )
        rows, row_ids = np.arange(len(keys)), keys
    else:
        rows = match_ids(row_ids, keys, what)
    try:
        values = np.stack([table[c][rows].astype(np.int64) for c in columns], axis=1)
    except ValueError:
        raise DataError(f"{what} {path}: column(s) {', '.join(columns)} must hold integer labels") from None
    return (values[:, 0] if len(columns) == 1 else values), row_ids


def _medmnist_labels(
    path: Path, row_ids: list[str] | None, n_rows: int | None, what: str
) -> tuple[np.ndarray, list[str] | None] | None:
    """The labels of a MedMNIST file as downloaded (None for any other ``.npz``), with its ids (``test-00000``, as
    ``labelwise predict --input FILE --split test`` names the rows): matched by ``row_ids``, else the one split
    with ``n_rows`` samples."""
    from labelwise.data.npz import is_medmnist, load_npz

    with np.load(path, allow_pickle=False) as data:
        if not is_medmnist(data.files):
            return None
    arrays = load_npz(path)  # MedMNIST's layout read into labelwise's: label, split, ids
    labels, keys, splits = arrays["label"].astype(np.int64), [str(i) for i in arrays["ids"]], arrays["split"]
    if row_ids is not None:
        return labels[match_ids(row_ids, keys, what)], row_ids
    sizes = {name: int((splits == name).sum()) for name in dict.fromkeys(splits.tolist())}
    fits = [name for name, size in sizes.items() if size == n_rows]
    if len(fits) != 1:
        listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise DataError(
            f"{what} {path}: a MedMNIST file holds several splits ({listed}) and {n_rows} prediction rows match "
            f"{'none' if not fits else 'more than one'}; give --ids (the ids of the rows, e.g. a predictions.csv "
            "of labelwise predict --split) to match them"
        )
    rows = np.flatnonzero(splits == fits[0])
    return labels[rows], [keys[i] for i in rows]


def read_predictions(path: str | Path) -> np.ndarray:
    """Model outputs (N, C) (logits or probabilities, any float dtype) or predicted classes (N,) from a
    ``.npy`` (memory-mapped), ``.npz`` or ``.pt`` file (read without unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--predictions {path}: no such file")
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                array = data[_pick(path, list(data.files))]
        elif path.suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = obj[_pick(path, [k for k, v in obj.items() if isinstance(v, torch.Tensor)])]
            if not isinstance(obj, torch.Tensor):
                raise DataError(f"{path}: expected a tensor (or a dict holding one), got {type(obj).__name__}")
            array = obj.numpy() if obj.dtype != torch.bfloat16 else obj.float().numpy()
        else:
            raise DataError(f"{path}: unknown format {path.suffix!r}; use .npy, .npz or .pt")
    except (ValueError, OSError, RuntimeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if array.ndim == 1 and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: a 1-D array must hold integer class predictions, got dtype {array.dtype}")
    if array.ndim not in (1, 2) or not (np.issubdtype(array.dtype, np.number)):
        raise DataError(f"{path}: expected scores (N, C) or classes (N,), got {array.dtype} {array.shape}")
    return array


def _pick(path: Path, keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    for key in PREDICTION_KEYS:
        if key in keys:
            return key
    raise DataError(f"{path}: holds {keys}; expected one array or one named {', '.join(PREDICTION_KEYS)}")


def align(label_sets: LabelSets, n_rows: int, ids: list[str] | None) -> tuple[list[list[int]], np.ndarray | None]:
    """The label set of each prediction row, and the single labels read from class folders in the ids (or
    None). Ids match by their last path part, so ``val/ILSVRC2012_val_00000001.JPEG`` works."""
    if ids is None:
        if not label_sets.rows_in_order:
            raise DataError(
                f"label set {label_sets.name} has no row order: give --ids (one image id per prediction row)"
            )
        if n_rows != len(label_sets):
            raise DataError(
                f"the predictions have {n_rows} rows but label set {label_sets.name} has {len(label_sets)} "
                "images; give --ids to match rows to images"
            )
        return label_sets.sets, None
    if len(ids) != n_rows:
        raise DataError(f"--ids has {len(ids)} entries but the predictions have {n_rows} rows")
    index = {key: i for i, key in enumerate(label_sets.ids)}
    rows, folders = [], []
    for line, full in enumerate(ids, start=1):
        parts = PurePosixPath(full.replace("\\", "/")).parts
        i = index.get(parts[-1] if parts else "")
        if i is None:
            raise DataError(
                f"--ids entry {line} ({full!r}) is not in label set {label_sets.name} "
                f"(its ids look like {label_sets.ids[0]!r})"
            )
        rows.append(label_sets.sets[i])
        folders.append(parts[-2] if len(parts) > 1 else "")
    single = None
    if all(f.isdigit() for f in folders):
        single = np.array([int(f) for f in folders], dtype=np.int64)
    return rows, single
