"""From folders of image files to a manifest (:mod:`labelwise.data.manifest`): ``labelwise data manifest``.

Pairing. Every image of the images folder is paired with one file of the labels folder (and of the roi and truth
folders, when given) by a common key, built from the file names:

1. Whole names first: files with the same name without suffix (:func:`labelwise.data.volumes.case_id`) pair::

       images/case01.nii.gz  labels/case01.nii.gz     -> id case01

2. Otherwise by key. A name without suffix is cut into tokens at every character that is not a letter or a digit;
   the tokens common to every file of the folder are dropped (a word with digits glued to it, like ``manual1``, is
   one token: dropped when every file has it); what is left, joined by ``_``, is the key. Keys compare without case
   and with numbers read as numbers (``01`` = ``1``). DRIVE::

       training/images/21_training.tif         -> 21, training     -> key 21
       training/1st_manual/21_manual1.gif      -> 21, manual1      -> key 21
       training/mask/21_training_mask.gif      -> 21, training, mask -> key 21

   A folder of one file has no common tokens; one image and one label (roi, truth) pair whatever their names.

The id of a case is the image's whole name when every label pairs by whole name, else the image's key; ``prefix``
is prepended to it. Refused, naming the files: labels, roi or truth files with no image, images with no label
(unless ``allow_unlabelled``: they become unlabelled training cases), images with no roi (truth) file where a roi
(truth) folder is given (unlabelled images may lack them), two files of a folder with the same name or key, a
folder without image files. Hidden files are ignored; other files whose suffix is not an image's are skipped and
listed through ``warn``.

Splits (:func:`assign_splits`): one split for every case (``split``), or each case's split taken from a CSV with
``id`` and ``split`` columns (``split_from``, e.g. an earlier manifest), or drawn: the labelled cases in natural
order of their ids (``2`` before ``10``) are permuted by ``numpy.random.default_rng(seed).permutation``; the first
``val * n`` (rounded half up) go to val, the next ``test * n`` to test, the rest to train; a non-zero share gets at
least one case when there are 3 or more. The draw depends only on the seed and the set of ids. Unlabelled cases
are always training cases (val and test cases are scored).

References (:func:`match_references`): ``labelwise predict --reference/--roi`` and ``labelwise evaluate segmentation
--truth/--roi`` pair each input (an image, or a predicted mask) with a mask of a reference folder by one rule:

1. Whole name: the file named as the input without suffix (``case1.png`` for ``case1.nii.gz``);
2. else a name ending, the input's name plus one of ``_mask``, ``_seg``, ``_label``, ``_gt``, ``_roi``
   (``case1_mask.nii.gz``). A whole name beats a name ending; two files of the same rank (``case1.nii.gz`` and
   ``case1.png``, or ``case1_mask.nii.gz`` and ``case1_seg.nii.gz``) are refused, naming both;
3. else the key of the folder pairing above, each side's keys taken over its whole folder (``01_test.tif`` with
   ``01_manual1.gif``), among the files no input took by name; a key shared by two files, or by two inputs, is
   refused, naming them.

Inputs found in the reference folder are no candidates (a folder of images with their masks can be both); hidden
files are ignored. A reference given as one file pairs with a single input whatever its name, and otherwise counts
as a folder holding that file. Inputs without a match are left out: the caller says which are missing.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from labelwise.data.manifest import SPLITS, Case, read_manifest
from labelwise.data.volumes import VOLUME_SUFFIXES, Volume, case_id, same_spacing, stores_spacing, suffix_of
from labelwise.errors import DataError

__all__ = [
    "PAIR_SUFFIXES",
    "REFERENCE_SUFFIXES",
    "assign_splits",
    "check_reference",
    "file_keys",
    "mask_files",
    "match_references",
    "natural_key",
    "pair_files",
    "write_manifest",
]

#: Suffixes of the files paired: what :func:`labelwise.data.volumes.read_volume` reads (GIF too: DRIVE's masks).
PAIR_SUFFIXES = VOLUME_SUFFIXES
#: Name endings of a reference mask after its input's name (``case1_mask.nii.gz`` for ``case1.nii.gz``).
REFERENCE_SUFFIXES = ("_mask", "_seg", "_label", "_gt", "_roi")
#: Relative tolerance of the spacings of an input and its reference.
SPACING_RTOL = 1e-3
COLUMNS = ("id", "image", "label", "split", "truth", "roi")
_SEPARATOR = re.compile(r"[\W_]+")
_SHOWN = 10


def natural_key(text: str) -> tuple:
    """Sort key with numbers compared as numbers: ``case2`` before ``case10``."""
    parts = tuple((0, int(p), "") if p.isdecimal() else (1, 0, p.lower()) for p in re.split(r"(\d+)", text) if p)
    return parts, text


def _tokens(name: str) -> list[str]:
    return [t for t in _SEPARATOR.split(name) if t]


def _norm(token: str) -> str:
    return str(int(token)) if token.isdecimal() else token.lower()


def file_keys(files: Sequence[Path]) -> dict[Path, tuple[str, ...]]:
    """The key of each file of one folder: the tokens of its name without suffix, less those every file of the
    folder has (none for a folder of one file). Tokens as written; compare them through their lower-case, numbers
    as numbers, form."""
    tokens = {f: _tokens(case_id(f)) for f in files}
    common: set[str] = set()
    if len(files) > 1:
        common = set.intersection(*({_norm(t) for t in ts} for ts in tokens.values()))
    return {f: tuple(t for t in ts if _norm(t) not in common) for f, ts in tokens.items()}


def _match_key(key: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_norm(t) for t in key)


def mask_files(folder: str | Path, what: str) -> list[Path]:
    """The mask files directly in ``folder`` (:data:`PAIR_SUFFIXES`; hidden files ignored), sorted by name; refused
    when ``folder`` is missing, not a folder or holds none. ``what`` names the folder in messages."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{what} folder {folder} not found" if not folder.exists() else f"{what}: {folder} is not a folder"
        )
    files = [
        path
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".") and path.is_file() and suffix_of(path) in PAIR_SUFFIXES
    ]
    if not files:
        raise DataError(f"{what} folder {folder} holds no mask files ({', '.join(PAIR_SUFFIXES)})")
    return files


def match_references(inputs: Sequence[Path], reference: str | Path, what: str = "reference") -> dict[Path, Path]:
    """``{input: reference mask}`` for the ``inputs`` that ``reference`` (a folder, or one file) holds a mask for,
    by the rule of the module docstring (whole name, name ending, key); inputs without one are left out. Refused,
    naming the files: ambiguous matches, a missing reference, a folder without mask files."""
    inputs = list(inputs)
    reference = Path(reference)
    if reference.is_file():
        if len(inputs) == 1:
            return {inputs[0]: reference}
        candidates = [reference]
    elif reference.is_dir():
        own = {path.resolve() for path in inputs}
        candidates = [path for path in mask_files(reference, what) if path.resolve() not in own]
    else:
        raise DataError(f"{what} {reference}: no such file or folder")
    by_name: dict[str, list[Path]] = {}
    for path in candidates:
        by_name.setdefault(case_id(path), []).append(path)
    found: dict[Path, Path] = {}
    for path in inputs:
        cid = case_id(path)
        for name in (cid, *(cid + ending for ending in REFERENCE_SUFFIXES)):
            if by_name.get(name):
                break
        else:
            continue
        if name != cid:  # a name ending: every ending's files compete
            same = [f for ending in REFERENCE_SUFFIXES for f in by_name.get(cid + ending, [])]
        else:
            same = by_name[cid]
        if len(same) > 1:
            raise DataError(f"{what} {reference}: several {what} masks for {path.name}: {_names(same)}")
        found[path] = same[0]
    rest = [path for path in inputs if path not in found]
    spare = [path for path in candidates if path not in set(found.values())]
    if rest and spare:
        found.update(_match_keys(inputs, rest, candidates, spare, reference, what))
    return found


def _match_keys(
    inputs: list[Path], rest: list[Path], candidates: list[Path], spare: list[Path], reference: Path, what: str
) -> dict[Path, Path]:
    """``{input: file}`` for the inputs of ``rest`` whose key is that of exactly one file of ``spare``, keys taken
    over all ``inputs`` and all ``candidates`` (each side's folder); two files or two inputs of one key refused."""
    spare_keys = {path: key for path, key in file_keys(candidates).items() if path in spare}
    by_key: dict[tuple[str, ...], list[Path]] = {}
    for path, key in spare_keys.items():
        by_key.setdefault(_match_key(key), []).append(path)
    input_keys = file_keys(inputs)
    matches: dict[Path, Path] = {}
    takers: dict[Path, list[Path]] = {}
    for path in rest:
        key = input_keys[path]
        files = by_key.get(_match_key(key), []) if key else []
        if len(files) > 1:
            raise DataError(
                f"{what} {reference}: several {what} masks for {path.name}, all of key "
                f"{_key_text(key)}: {_names(files)}"
            )
        if files:
            matches[path] = files[0]
            takers.setdefault(files[0], []).append(path)
    for file, paths in takers.items():
        if len(paths) > 1:
            raise DataError(
                f"{what} {reference}: ambiguous, {_names(paths)} have the same key "
                f"{_key_text(input_keys[paths[0]])} as {file.name}"
            )
    return matches


def check_reference(
    input_path: Path,
    image: Volume,
    reference_path: Path,
    reference: Volume,
    what: str = "reference",
    input_what: str = "input",
) -> tuple[float, ...]:
    """Refuse a ``reference`` mask whose shape differs from the spatial shape of ``image`` (an input image or a
    predicted mask), or whose spacing differs by more than :data:`SPACING_RTOL` relative where both files store one
    (:func:`labelwise.data.volumes.stores_spacing`). Returns the spacing to score with: a file's that stores one,
    else 1s (pictures and ``.npy`` carry none)."""
    if reference.array.ndim not in (2, 3):
        raise DataError(f"{reference_path}: masks must be 2D or 3D, got shape {tuple(reference.array.shape)}")
    if tuple(reference.array.shape) != tuple(image.spatial_shape):
        raise DataError(
            f"shape mismatch: {what} {reference_path} does not match the input it is scored with: "
            f"{input_what} {input_path} has shape {tuple(image.spatial_shape)}, {what} {reference_path} "
            f"has shape {tuple(reference.array.shape)}"
        )
    if stores_spacing(input_path) and stores_spacing(reference_path):
        if not same_spacing(image.spacing, reference.spacing, SPACING_RTOL):
            raise DataError(
                f"spacing mismatch: {input_what} {input_path} has spacing {tuple(image.spacing)}, "
                f"{what} {reference_path} has spacing {tuple(reference.spacing)} "
                f"(tolerance {SPACING_RTOL:g} relative)"
            )
        return tuple(float(s) for s in reference.spacing)
    spacing = image.spacing if stores_spacing(input_path) else reference.spacing
    return tuple(float(s) for s in spacing)


def _names(files: Sequence[Path]) -> str:
    names = sorted((f.name for f in files), key=natural_key)
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _listing(folder: Path, option: str, warn: Callable[[str], None]) -> list[Path]:
    """The image files of ``folder`` (not its subfolders), hidden files ignored, others reported through ``warn``."""
    if not folder.is_dir():
        raise DataError(f"{option} {folder}: not a folder")
    files, skipped = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and suffix_of(entry) in PAIR_SUFFIXES:
            files.append(entry)
        else:
            skipped.append(entry)
    if skipped:
        warn(f"{option} {folder}: skipped {len(skipped)} file(s) that are not images: {_names(skipped)}")
    if not files:
        raise DataError(f"{option} {folder}: no image files (suffixes {', '.join(PAIR_SUFFIXES)})")
    return files


def _same_names(
    files: Sequence[Path], folder: Path, option: str, name_of: Callable[[Path], object], what: str
) -> list[str]:
    groups: dict[object, list[Path]] = {}
    for f in files:
        groups.setdefault(name_of(f), []).append(f)
    return [f"{option} {folder}: ambiguous, {_names(g)} have the same {what}" for g in groups.values() if len(g) > 1]


def _pair(
    images: list[Path],
    image_keys: dict[Path, tuple[str, ...]],
    others: list[Path],
    folder: Path,
    option: str,
    problems: list[str],
) -> tuple[dict[Path, Path], bool]:
    """``{image: file}`` for the files of one more folder (labels, roi, truth), and whether every file paired by
    whole name. Files with no image and ambiguous names go to ``problems``."""
    problems += _same_names(others, folder, option, case_id, "name")
    image_by_name = {case_id(f): f for f in images}
    pairs = {image_by_name[case_id(f)]: f for f in others if case_id(f) in image_by_name}
    rest = [f for f in others if f not in pairs.values()]
    if not rest:
        return pairs, True
    if len(images) == 1 and len(others) == 1:
        return {images[0]: others[0]}, False
    keys = file_keys(others)
    problems += _same_names(rest, folder, option, lambda f: _match_key(keys[f]), "key")
    image_by_key: dict[tuple[str, ...], list[Path]] = {}
    for f in images:
        if f not in pairs:
            image_by_key.setdefault(_match_key(image_keys[f]), []).append(f)
    unpaired = []
    for f in rest:
        candidates = image_by_key.get(_match_key(keys[f]), [])
        if len(candidates) > 1:
            problems.append(
                f"--images: ambiguous, {_names(candidates)} have the same key {_key_text(keys[f])} "
                f"(of {f.name} in {option} {folder})"
            )
        elif candidates:
            pairs[candidates[0]] = f
        else:
            unpaired.append(f)
    if unpaired:
        problems.append(
            f"{option} {folder}: no image for {_names(unpaired)} (keys "
            f"{', '.join(_key_text(keys[f]) for f in unpaired[:_SHOWN])}; the images' keys: "
            f"{_key_list(image_keys.values())})"
        )
    return pairs, False


def _key_text(key: tuple[str, ...]) -> str:
    return "_".join(key) or "(empty)"


def _key_list(keys) -> str:
    texts = sorted({_key_text(k) for k in keys}, key=natural_key)
    return ", ".join(texts[:_SHOWN]) + (" ..." if len(texts) > _SHOWN else "")


def pair_files(
    images: str | Path,
    labels: str | Path,
    roi: str | Path | None = None,
    truth: str | Path | None = None,
    allow_unlabelled: bool = False,
    prefix: str = "",
    warn: Callable[[str], None] | None = None,
) -> list[dict]:
    """One dict per image, sorted by id (natural order): ``id``, ``image``, ``label`` (None: unlabelled), and
    ``roi`` / ``truth`` when those folders are given (None where an unlabelled image has none). Paths are
    the files found in the folders. See the module's docstring for the rule; ``warn`` (default: print to stderr)
    hears about skipped files."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    folders = {"--images": Path(images), "--labels": Path(labels)}
    folders.update({k: Path(v) for k, v in (("--truth", truth), ("--roi", roi)) if v is not None})
    by_place: dict[str, list[str]] = {}
    for option, folder in folders.items():
        by_place.setdefault(os.path.abspath(folder), []).append(option)
    same = [" and ".join(options) for options in by_place.values() if len(options) > 1]
    if same:
        raise DataError(f"{'; '.join(same)} name the same folder; give one folder per kind of file")
    files = {option: _listing(folder, option, warn) for option, folder in folders.items()}
    image_files = files.pop("--images")
    problems = _same_names(image_files, folders["--images"], "--images", case_id, "name")
    image_keys = file_keys(image_files)
    paired, whole = {}, {}
    for option, others in files.items():
        paired[option], whole[option] = _pair(image_files, image_keys, others, folders[option], option, problems)
    labels_of = paired["--labels"]
    for option, pairs in paired.items():
        if option == "--labels":  # roi and truth files are needed by the labelled images only
            unpaired = [] if allow_unlabelled else [f for f in image_files if f not in pairs]
        else:
            unpaired = [f for f in image_files if f not in pairs and f in labels_of]
        if unpaired:
            hint = "; give --unlabelled to keep them as unlabelled training cases" if option == "--labels" else ""
            keys = ", ".join(_key_text(image_keys[f]) for f in unpaired[:_SHOWN])
            problems.append(
                f"--images {folders['--images']}: no file in {option} {folders[option]} for "
                f"{_names(unpaired)} (keys {keys}; the keys there: "
                f"{_key_list(file_keys(files[option]).values())}){hint}"
            )
    if problems:
        raise DataError("\n".join(dict.fromkeys(problems)))
    by_name = whole["--labels"] or len(image_files) == 1
    rows: list[dict] = []
    images_of: dict[str, list[Path]] = {}
    for f in image_files:
        name = prefix + (case_id(f) if by_name else "_".join(image_keys[f]) or case_id(f))
        images_of.setdefault(name, []).append(f)
        row: dict = {"id": name, "image": f, "label": labels_of.get(f)}
        for option in ("--truth", "--roi"):
            if option in paired:
                row[option[2:]] = paired[option].get(f)
        rows.append(row)
    clashes = [
        f"--images {folders['--images']}: ambiguous, {_names(fs)} give the same id {i!r}"
        for i, fs in images_of.items()
        if len(fs) > 1
    ]
    if clashes:
        raise DataError("\n".join(clashes))
    return sorted(rows, key=lambda r: natural_key(r["id"]))


def _share(name: str, value: float | None, default: float) -> float:
    value = default if value is None else value
    if not 0 <= value < 1:
        raise DataError(f"--{name} {value}: a share of the cases, at least 0 and below 1")
    return value


def assign_splits(
    rows: Sequence[dict],
    val: float | None = None,
    test: float | None = None,
    seed: int = 0,
    split: str | None = None,
    split_from: str | Path | None = None,
) -> list[dict]:
    """``rows`` (dicts with ``id`` and ``label``) with a ``split`` each: ``split`` for all, or from the CSV
    ``split_from`` (every id must be in it), or drawn by ``seed`` with shares ``val`` (default 0.1) and ``test``
    (default 0.2) of the labelled cases; unlabelled cases train. See the module's docstring."""
    if split is not None and split_from is not None:
        raise DataError("give one of --split and --split-from")
    if (split is not None or split_from is not None) and (val is not None or test is not None):
        raise DataError(
            f"--val/--test draw the splits; {'--split' if split is not None else '--split-from'} "
            "gives them: use one or the other"
        )
    rows = [dict(r) for r in rows]
    if split is not None:
        if split not in SPLITS:
            raise DataError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
        chosen = {r["id"]: split for r in rows}
    elif split_from is not None:
        chosen = _read_splits(Path(split_from), [r["id"] for r in rows])
    else:
        chosen = _draw(
            [r["id"] for r in rows if r.get("label")], _share("val", val, 0.1), _share("test", test, 0.2), seed
        )
    scored = [r["id"] for r in rows if not r.get("label") and chosen.get(r["id"], "train") != "train"]
    if scored:
        raise DataError(
            f"unlabelled cases cannot be in the val or test split (they are scored): "
            f"{', '.join(scored[:_SHOWN])}{' ...' if len(scored) > _SHOWN else ''}"
        )
    for r in rows:
        r["split"] = chosen.get(r["id"], "train")
    return rows


def _draw(ids: Sequence[str], val: float, test: float, seed: int) -> dict[str, str]:
    if val + test >= 1:
        raise DataError(f"--val {val} + --test {test} leave no training cases")
    ids = sorted(ids, key=natural_key)
    n = len(ids)
    counts = [math.floor(share * n + 0.5) for share in (val, test)]
    if n >= 3:
        counts = [max(1, c) if share > 0 else c for c, share in zip(counts, (val, test), strict=True)]
    if n and sum(counts) >= n:
        raise DataError(
            f"--val {val} and --test {test} of {n} labelled cases ({counts[0]} val, {counts[1]} test) "
            "leave no training cases"
        )
    order = np.random.default_rng(seed).permutation(n)
    return {
        ids[i]: "val" if rank < counts[0] else "test" if rank < sum(counts) else "train" for rank, i in enumerate(order)
    }


def _read_splits(path: Path, ids: Sequence[str]) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"--split-from {path}: file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [(c or "").strip() for c in reader.fieldnames or []]
        if "id" not in columns or "split" not in columns:
            raise DataError(f"--split-from {path}: needs the columns id and split, has {','.join(columns) or 'none'}")
        table = {}
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            table[row["id"]] = row["split"]
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(
            f"--split-from {path}: no split for {len(missing)} case(s): {', '.join(missing[:_SHOWN])}"
            f"{' ...' if len(missing) > _SHOWN else ''}"
        )
    unknown = sorted({table[i] for i in ids if table[i] not in SPLITS})
    if unknown:
        raise DataError(f"--split-from {path}: split(s) {', '.join(map(repr, unknown))}; use {', '.join(SPLITS)}")
    return {i: table[i] for i in ids}


def _path_text(path: Path | str | None, base: str) -> str:
    if path is None or path == "":
        return ""
    path = os.path.abspath(path)
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return path


def write_manifest(rows: Sequence[dict], out: str | Path, append: bool = False) -> list[Case]:
    """Write ``rows`` (dicts with ``id``, ``image``, ``label``, ``split`` and optionally ``truth``, ``roi``; paths
    written relative to ``out``'s folder where possible) as the manifest ``out``, sorted by id in natural order;
    ``append``: added to the rows of the existing ``out`` (ids must stay unique). The file is checked with
    :func:`read_manifest` before it replaces ``out``; returns its cases."""
    from labelwise.io import atomic_path

    out = Path(out)
    base = os.path.abspath(out.parent)
    new = [
        {
            "id": r["id"],
            "split": r["split"],
            **{c: _path_text(r.get(c), base) for c in ("image", "label", "truth", "roi") if c in r},
        }
        for r in rows
    ]
    old: list[dict] = []
    extra: list[str] = []
    if append:
        if not out.is_file():
            raise DataError(f"--append: {out} does not exist; write it first without --append")
        with out.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = [(c or "").strip() for c in reader.fieldnames or []]
            old = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
        extra = [c for c in fields if c not in COLUMNS]
        known = {r.get("id", "") for r in old}
        duplicates = [r["id"] for r in new if r["id"] in known]
        if duplicates:
            raise DataError(
                f"--append: {out} already has the id(s) {', '.join(duplicates[:_SHOWN])}"
                f"{' ...' if len(duplicates) > _SHOWN else ''}; give --prefix TEXT to make the new ids "
                "differ"
            )
    if not new and not old:
        raise DataError(f"{out}: no cases to write")
    everything = sorted(old + new, key=lambda r: natural_key(r.get("id", "")))
    columns = [c for c in COLUMNS if c in COLUMNS[:4] or any(r.get(c) for r in everything)] + extra
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(everything)
    with atomic_path(out) as tmp:  # checked before it replaces out
        tmp.write_bytes(text.getvalue().encode())
        try:
            cases = read_manifest(tmp)
        except DataError as err:
            raise DataError(str(err).replace(str(tmp), str(out))) from None
    return cases
