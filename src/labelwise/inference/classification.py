"""``labelwise predict`` of a classification run: class (or label) probabilities of image files, tables and dataset
``.npz`` files, read and preprocessed as training read its data; written as ``predictions.csv`` and
``predictions.npz``, which ``labelwise evaluate classification --predictions`` reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from labelwise.data.npz import is_medmnist, load_npz, save_npz
from labelwise.data.table import read_rows, write_table
from labelwise.data.volumes import Volume, case_id, suffix_of
from labelwise.errors import DataError
from labelwise.inference.run import RunModel, fit_channels, input_files, reporter, require_finite
from labelwise.io import atomic_write

__all__ = ["classification_inputs", "predict_classes"]


def classification_inputs(
    paths: Sequence[str | Path], split: str | None = None
) -> list[tuple[str, Path | None, np.ndarray | None]]:
    """``(id, file, array)`` per sample: image files and folders (pictures, ``.npy``, NIfTI, Harvard-GDP ``.npz``; the
    id is the file name without its suffix), a classification table ``.csv`` (its ``id`` and ``image`` columns,
    images relative to the table's folder) or a dataset ``.npz`` holding ``image`` ``(N, C, *spatial)`` (ids from its
    ``ids`` array, else the row number) or a MedMNIST file (ids ``test-00000``, ...). ``split`` keeps the rows of one
    split of a table or dataset."""
    samples: list[tuple[str, Path | None, np.ndarray | None]] = []
    for path in map(Path, paths):
        if path.is_file() and suffix_of(path) == ".csv":
            _, table = read_rows(path, "classification table")
            for row in table:
                if "id" not in row or "image" not in row:
                    raise DataError(f"{path}: a classification table needs the columns id and image")
                if split is None or row.get("split") == split:
                    file = Path(row["image"])
                    samples.append((row["id"], file if file.is_absolute() else path.parent / file, None))
        elif path.is_file() and suffix_of(path) == ".npz" and _is_dataset(path):
            data = load_npz(path)  # a MedMNIST file in labelwise's layout
            image = np.asarray(data["image"], dtype=np.float32)
            names = data["ids"].astype(str) if "ids" in data else np.arange(len(image)).astype(str)
            rows = (
                np.arange(len(image))
                if split is None or "split" not in data
                else np.flatnonzero(data["split"].astype(str) == split)
            )
            samples += [(str(names[i]), None, require_finite(image[i], f"{path}, sample {names[i]}")) for i in rows]
        else:
            samples += [(case_id(f), f, None) for f in input_files([path])]
    if not samples:
        raise DataError(f"no samples{f' in split {split!r}' if split else ''} in {', '.join(map(str, paths))}")
    ids = [s[0] for s in samples]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise DataError(f"several inputs have the id {repeated[0]}")
    return samples


def _is_dataset(path: Path) -> bool:
    """A labelwise dataset ``.npz`` (an ``image`` array of samples), not a Harvard-GDP patient file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "image" in data.files or is_medmnist(data.files)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read .npz: {err}") from None


def predict_classes(
    run: RunModel,
    inputs: Sequence[str | Path],
    out: str | Path,
    split: str | None = None,
    batch_size: int = 32,
    progress: bool | Callable[[str], None] = True,
) -> dict[str, Path]:
    """Class (or label) probabilities of a classification run for every sample of ``inputs`` (see
    :func:`classification_inputs`), read and preprocessed as training read its data, through the run's network and
    output activation. Writes ``out/predictions.csv`` (``id`` + one probability column per class or label, named as
    the run names them) and ``out/predictions.npz`` (``probability`` ``(N, K)``, ``prediction``, ``id``; ids also in
    ``predictions_ids.txt``), both readable by ``labelwise evaluate classification --predictions``."""
    if run.task != "classification":
        raise DataError(f"{run.run_dir}: a segmentation run; use labelwise predict with image files or folders")
    run.require_head()
    samples = classification_inputs(inputs, split)
    report = reporter(progress)
    chunks = []
    for start in range(0, len(samples), batch_size):
        batch = []
        for sid, path, array in samples[start : start + batch_size]:
            if path is not None:
                batch.append(run.read(path).array)
            else:
                assert array is not None  # a dataset .npz's sample: its array, no file
                batch.append(_preprocessed(run, array, sid))
        shapes = {b.shape for b in batch}
        if len(shapes) > 1:
            raise DataError(
                f"inputs differ in shape ({', '.join(map(str, sorted(shapes)))}) after preprocessing; "
                "the run resizes only when trained with data.image_size"
            )
        chunks.append(run.probabilities(run.logits(torch.from_numpy(np.stack(batch)))))
        report(f"[{min(start + batch_size, len(samples))}/{len(samples)}] samples")
    probability = torch.cat(chunks).numpy().astype(np.float64)
    ids = [s[0] for s in samples]
    names = run.class_names
    prediction = (probability > 0.5).astype(np.int64) if run.multilabel else probability.argmax(1)
    out = Path(out)
    files = {"csv": out / "predictions.csv", "npz": out / "predictions.npz", "ids": out / "predictions_ids.txt"}
    write_table(
        files["csv"], [{"id": i, **{n: f"{p:.8g}" for n, p in zip(names, row)}} for i, row in zip(ids, probability)]
    )
    save_npz(
        files["npz"],
        {
            "probability": probability.astype(np.float32),
            "prediction": prediction,
            "id": np.array(ids),
            "class_names": np.array(names),
        },
        compress=True,
    )
    atomic_write(files["ids"], "".join(f"{i}\n" for i in ids))
    return files


def _preprocessed(run: RunModel, array: np.ndarray, sid: str) -> np.ndarray:
    """A dataset ``.npz`` sample ``(C, *spatial)`` through the run's preprocessing, as a file would be."""
    channels = fit_channels(array, Path(sid), run.in_channels, run.spatial_dims)
    return run.preprocess(Volume(channels, (1.0,) * run.spatial_dims)).array
