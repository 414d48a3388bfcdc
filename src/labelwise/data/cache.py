"""The case cache: every case of a manifest preprocessed once into uncompressed ``.npy`` files, read back through
memory maps, so no split is ever held in memory (data larger than memory).

Each case is read with the one reader (:func:`labelwise.data.patches.read_case`), normalised as training sees it
(:func:`labelwise.data.intensity.preprocess_image`; the schemes with training statistics, ``channel`` and
``percentile``, get them by streaming over the training cases one at a time) and written to one folder::

    <cache>/v1-<intensity>-<hash of the scheme and its statistics>/
        preprocessing.json                      the intensity scheme and statistics the arrays were made with
        <id>-<hash of the paths>-<hash of sizes and mtimes>/
            image.npy       float32 (C, *spatial), normalised
            label.npy       (*spatial), the smallest of uint8, uint16, uint32 and int64 that holds the largest label
                            (read back as int64); absent for an unlabelled case
            foreground.npy  flat indices of the label's foreground voxels, int32 (int64 past 2**31 voxels): where
                            foreground-centred patches are drawn; absent for an unlabelled case
            roi.npy         bool (*spatial), the region of interest; absent without one
            weight.npy      float32 (*spatial), per-voxel loss weights (a manifest's weight column); absent without
            soft.npy        float32 (*spatial), the foreground probability (data.soft_labels), or (K, *spatial) one
                            probability per class (label_max then counts them too); absent without
            votes.npy       int32 (*spatial), the raters' vote codes (data.raters: sample); absent without
            meta.json       id, shape, spacing, affine (of the arrays: reoriented and resampled as data.reorient and
                            data.spacing ask), ``original`` (the file's own shape, spacing, affine and what was done,
                            :class:`labelwise.data.volumes.Grid`), largest label, and the files it was made from
    <cache>/statistics/<intensity>-<hash>.json  training statistics, keyed by the training files and the seed

``<cache>`` is ``data.cache`` (relative: to the manifest's folder), by default ``.labelwise-cache`` next to the
manifest; it holds a ``.gitignore`` of ``*`` (git leaves it out) and a ``CACHEDIR.TAG`` (backup tools skip it).
A case is rebuilt when one of its files changes (path, size or modification time) or the intensity scheme or its
statistics change (a new folder: another config on the same manifest keeps its own); a rebuilt case's old entry is
removed. The scheme's key holds the whole ``preprocessing`` dict, so ``reorient`` and the target ``spacing`` too.
The format version (:data:`FORMAT`) is in every key. Entries are written to a temporary folder and renamed
into place, under a lock file, so processes sharing a cache (several devices, several runs) never read half a case.
Deleting the cache folder is always safe: the next run rebuilds what it needs.

Datasets open the files with ``np.load(mmap_mode="r")`` on first access, in each process (loader workers open their
own; open maps are never pickled), keeping at most :data:`OPEN_CASES` cases' maps open per process, so the pages a
process has touched stay bounded whatever the number of cases."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelwise.data.manifest import Case
from labelwise.data.patches import MAPS, VolumeDataset, read_case
from labelwise.data.volumes import Grid, suffix_of
from labelwise.errors import DataError
from labelwise.io import atomic_write

__all__ = ["CACHE_NAME", "FORMAT", "OPEN_CASES", "CachedArrays", "CaseCache", "cache_folder", "label_dtype"]

FORMAT = 1  # raise when what is written changes: every key holds it, so old entries are never read
CACHE_NAME = ".labelwise-cache"  # the default cache folder, next to the manifest
OPEN_CASES = 16  # cases whose memory maps a process keeps open (the least recently used are closed)
CACHEDIR_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# labelwise's case cache; see labelwise.data.cache\n"


def cache_folder(manifest: Path, cache: Path | None = None) -> Path:
    """The cache folder of a manifest: ``cache`` (relative: to the manifest's folder), else ``.labelwise-cache``
    next to the manifest."""
    base = Path(manifest).resolve().parent
    if cache is None:
        return base / CACHE_NAME
    return Path(cache) if Path(cache).is_absolute() else base / cache


def label_dtype(top: int, low: int = 0) -> np.dtype:
    """The smallest integer type a label map with largest label ``top`` is stored in: uint8, uint16, uint32, else
    int64; with a negative label (``low``: :data:`labelwise.metrics.surface.IGNORE`, voxels without a label) int8,
    int16, int32, else int64."""
    for dtype in (np.int8, np.int16, np.int32) if low < 0 else (np.uint8, np.uint16, np.uint32):
        if np.iinfo(dtype).min <= low and top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(path: Path | None) -> list[Any] | None:
    """What identifies a file's content cheaply: its path, size and modification time (ns)."""
    if path is None:
        return None
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class Entry:
    """One cached case: its folder and ``meta.json``."""

    folder: Path
    meta: dict[str, Any]

    def has(self, kind: str) -> bool:
        return f"{kind}.npy" in self.meta["files"]


class CaseCache:
    """The cache folder of one manifest (see the module's description); ``modalities``: the channels of Harvard-GDP
    ``.npz`` images (:func:`labelwise.data.volumes.read_image`)."""

    def __init__(self, folder: str | Path, modalities: Sequence[str] = ("rnflt",)):
        self.folder = Path(folder)
        self.modalities = tuple(modalities)
        self.built = 0  # cases (re)built by the last call of :meth:`volumes`, and reused
        self.reused = 0

    # --- keys ----------------------------------------------------------------------------------

    def _reader(self, case: Case) -> list[str]:
        """What of the reader changes a case's arrays besides its files: the channels of an ``.npz``."""
        return list(self.modalities) if suffix_of(case.image) == ".npz" else []

    def _case_names(self, case: Case) -> tuple[str, str]:
        """(prefix shared by every version of the case's entry, the entry's name)."""
        files = [case.image, case.label, case.roi]
        if case.ignore is not None or case.weight is not None or case.votes is not None:  # only then: other keys stay
            files += [case.ignore, case.weight] + ([case.votes] if case.votes is not None else [])
        paths = [str(p.resolve()) if p is not None else None for p in files]
        stamps = [_stamp(p) for p in files]
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", case.id)[:48] or "case"
        prefix = f"{safe}-{_digest([FORMAT, paths])}"
        return prefix, f"{prefix}-{_digest([FORMAT, stamps, self._reader(case)])}"

    def scheme_folder(self, preprocessing: dict[str, Any]) -> Path:
        """The folder of the entries made with ``preprocessing`` (intensity scheme and statistics)."""
        return self.folder / f"v{FORMAT}-{preprocessing.get('intensity', 'none')}-{_digest([FORMAT, preprocessing])}"

    # --- locking and layout --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The cache folder created (with its .gitignore and CACHEDIR.TAG) and held by this process."""
        try:
            fresh = not self.folder.exists() or not any(self.folder.iterdir())  # never mark a folder of other files
            self.folder.mkdir(parents=True, exist_ok=True)
            if fresh:
                (self.folder / ".gitignore").write_text("# labelwise's case cache: never committed\n*\n")
                (self.folder / "CACHEDIR.TAG").write_text(CACHEDIR_TAG)
            handle = (self.folder / ".lock").open("a")
        except OSError as err:
            raise DataError(
                f"cannot write the case cache {self.folder}: {err}; set data.cache to a writable folder"
            ) from None
        try:
            try:
                import fcntl
            except ImportError:  # Windows: no lock; entries are still renamed into place whole
                pass
            else:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # releases the lock

    # --- training statistics -------------------------------------------------------------------

    def statistics(
        self,
        cases: Sequence[Case],
        mode: str,
        seed: int = 0,
        reorient: bool = False,
        spacing: Sequence[float] | None = None,
        ignore: Sequence[int] = (),
        soft: bool = False,
    ) -> dict[str, Any]:
        """The training statistics of intensity scheme ``mode`` over ``cases`` (the training split), computed by
        streaming over them one case at a time (:func:`labelwise.data.intensity.intensity_statistics_of`), kept
        under ``statistics/`` keyed by the cases' files, the scheme, (``percentile``: it draws voxels) the seed and
        the grid (``reorient``, target ``spacing``: the cases are measured on the training grid) and the mask values
        without a label (``ignore``, not foreground)."""
        from labelwise.data.intensity import intensity_statistics_of

        masks = mode == "percentile"  # channel: the images alone
        key = [
            FORMAT,
            mode,
            seed if masks else None,
            [[_stamp(c.image), _stamp(c.label) if masks else None, self._reader(c)] for c in cases],
        ]
        if reorient or spacing is not None:  # keys of runs without either stay as they were
            key.append([bool(reorient), list(spacing) if spacing is not None else None])
        if masks and ignore:
            key.append(["ignore", sorted(ignore)])
        if masks and (soft or any(c.ignore is not None for c in cases)):
            key.append(["soft", soft, [_stamp(c.ignore) for c in cases]])
        path = self.folder / "statistics" / f"{mode}-{_digest(key)}.json"
        with self._locked():
            if path.is_file():
                return json.loads(path.read_text())["statistics"]
            print(
                f"labelwise: {mode} intensity statistics of {len(cases)} training case(s), read one at a time "
                f"(kept in {path.parent})",
                file=sys.stderr,
                flush=True,
            )

            def stream() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
                for case in cases:
                    arrays = read_case(
                        case, self.modalities, masks=masks, reorient=reorient, spacing=spacing, ignore=ignore, soft=soft
                    )
                    yield arrays.image.array, arrays.target

            statistics = intensity_statistics_of(stream(), mode, seed)
            _write_json(path, {"intensity": mode, "cases": [c.id for c in cases], "statistics": statistics})
        return statistics

    # --- entries -------------------------------------------------------------------------------

    def volumes(
        self, splits: dict[str, tuple[Sequence[Case], np.ndarray]], preprocessing: dict[str, Any]
    ) -> dict[str, CachedVolumes]:
        """One :class:`CachedVolumes` per split (``{name: (cases, indices)}``), every case read from the cache,
        built first where it is missing or stale. Cases of every split must have the same channels and number of
        spatial axes as the first one."""
        scheme = self.scheme_folder(preprocessing)
        self.built = self.reused = 0
        entries: dict[str, list[Entry]] = {}
        with self._locked():
            scheme.mkdir(parents=True, exist_ok=True)
            if not (scheme / "preprocessing.json").is_file():
                _write_json(scheme / "preprocessing.json", {"format": FORMAT, **preprocessing})
            todo = sum(
                not (scheme / self._case_names(c)[1] / "meta.json").is_file()
                for cases, _ in splits.values()
                for c in cases
            )
            if todo:
                print(
                    f"labelwise: caching {todo} case(s) in {scheme} (preprocessed once; later runs with the same "
                    "files and intensity reuse them)",
                    file=sys.stderr,
                    flush=True,
                )
            first: tuple[int, int, Path] | None = None
            for name, (cases, _) in splits.items():
                entries[name] = []
                for case in cases:
                    entry = self._entry(scheme, case, preprocessing)
                    channels, dims = entry.meta["shape"][0], len(entry.meta["shape"]) - 1
                    if first is None:
                        first = (channels, dims, case.image)
                    elif (channels, dims) != first[:2]:
                        raise DataError(
                            f"{case.image}: {channels} channel(s), {dims}D; the first case ({first[2]}) "
                            f"has {first[0]}, {first[1]}D"
                        )
                    entries[name].append(entry)
        return {name: CachedVolumes(cases, entries[name], indices) for name, (cases, indices) in splits.items()}

    def _entry(self, scheme: Path, case: Case, preprocessing: dict[str, Any]) -> Entry:
        prefix, name = self._case_names(case)
        folder = scheme / name
        if (folder / "meta.json").is_file():
            self.reused += 1
            return Entry(folder, json.loads((folder / "meta.json").read_text()))
        from labelwise.data.intensity import preprocess_image

        image, target, roi, weight, probability, votes = read_case(
            case,
            self.modalities,
            reorient=bool(preprocessing.get("reorient", False)),
            spacing=preprocessing.get("spacing"),
            ignore=preprocessing.get("ignore", ()),
            soft=bool(preprocessing.get("soft_labels", False)),
        )
        for stale in scheme.glob(f".{name}.*.tmp"):  # left by a process that stopped while writing (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = scheme / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.mkdir(parents=True)
            array = np.ascontiguousarray(preprocess_image(image.array, preprocessing), dtype=np.float32)
            np.save(tmp / "image.npy", array)
            files, top, low = ["image.npy"], 0, 0
            del array
            if target is not None:
                top, low = int(target.max(initial=0)), int(target.min(initial=0))
                if probability is not None and probability.ndim == target.ndim + 1:  # one map per class: K classes
                    top = max(top, probability.shape[0] - 1)
                np.save(tmp / "label.npy", target.astype(label_dtype(top, low)))
                flat = np.flatnonzero(target.reshape(-1) > 0)
                np.save(tmp / "foreground.npy", flat.astype(np.int64 if target.size > 2**31 else np.int32))
                files += ["label.npy", "foreground.npy"]
            if roi is not None:
                np.save(tmp / "roi.npy", roi.astype(bool))
                files.append("roi.npy")
            for kind, values in (("weight", weight), ("soft", probability), ("votes", votes)):
                if values is not None:
                    np.save(tmp / f"{kind}.npy", values.astype(np.int32 if kind == "votes" else np.float32))
                    files.append(f"{kind}.npy")
            meta = {
                "format": FORMAT,
                "id": case.id,
                "shape": list(image.array.shape),
                "spacing": list(image.spacing),
                "affine": image.affine.tolist() if image.affine is not None else None,
                "original": image.grid.to_json() if image.grid is not None else None,
                "label_max": top,
                "label_dtype": str(label_dtype(top, low)) if target is not None else None,
                "files": files,
                "made_from": {
                    k: _stamp(getattr(case, k)) for k in ("image", "label", "roi", "ignore", "weight", "votes")
                },
            }
            _write_json(tmp / "meta.json", meta)
            # An entry is several files that must appear together, so its folder is renamed into place (not
            # labelwise.io.atomic_path, which renames one file); the rename fails if the entry is already there.
            try:
                os.rename(tmp, folder)
            except OSError:  # another process put it in place first
                if not (folder / "meta.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"cannot write the case cache {scheme}: {err}; set data.cache to a folder with room"
            ) from None
        for old in scheme.glob(f"{prefix}-*"):  # the entries of earlier versions of the case's files
            if old.name != name and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        self.built += 1
        return Entry(folder, meta)


def _write_json(path: Path, value: Any) -> None:
    atomic_write(path, json.dumps(value, indent=1))


class _Maps:
    """The memory maps of a list of entries, opened on first access in each process (a forked or unpickled copy
    opens its own), at most :data:`OPEN_CASES` cases' worth kept open."""

    def __init__(self, entries: Sequence[Entry]):
        self.entries = list(entries)
        self._reset()

    def _reset(self) -> None:
        self._open: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()  # case -> its open maps, by kind
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"entries": self.entries}  # never the open maps

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.entries = state["entries"]
        self._reset()

    def get(self, i: int, kind: str) -> np.ndarray | None:
        """The memory map of ``kind`` (image, label, foreground, roi, weight, soft, votes) of case ``i``; None when
        the case has none."""
        if self._pid != os.getpid():
            self._reset()
        maps = self._open.get(i)
        if maps is None:
            maps = self._open[i] = {}
            while len(self._open) > OPEN_CASES:  # close the least recently used case's maps
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(i)
        if kind in maps:
            return maps[kind]
        entry = self.entries[i]
        if not entry.has(kind):
            return None
        try:
            maps[kind] = np.load(entry.folder / f"{kind}.npy", mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(
                f"the case cache entry {entry.folder} cannot be read ({err}); was the cache deleted "
                "during the run? Run again to rebuild it"
            ) from None
        return maps[kind]


class CachedArrays(Sequence):
    """One kind of array (``image``, ``label``, ``roi``, ``foreground``, ``weight``, ``soft`` or ``votes``) of every
    case of a split, read from the memory maps on access. ``[i]``: a tensor of the whole case, copied into memory
    (images float32, labels int64, an unlabelled case's all zero; rois bool, weights and soft labels float32, votes
    int64, or None without one; foreground: the memory-mapped array itself);
    ``[a:b]``: the same for those cases, still lazy (nothing is read); ``read(i, index)``: only a window of case
    ``i`` (what patches read)."""

    def __init__(self, maps: _Maps, kind: str, shapes: Sequence[tuple[int, ...]], rows: Sequence[int] | None = None):
        self.maps, self.kind = maps, kind
        self.rows = list(range(len(shapes))) if rows is None else list(rows)  # position -> case of ``maps``
        self._shapes = list(shapes)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [self._shapes[r] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return CachedArrays(self.maps, self.kind, self._shapes, self.rows[i])
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"case {i} of {len(self)}")
        return self.read(i % len(self), None)

    def has(self, i: int) -> bool:
        """Whether case ``i`` has this kind of array (from its entry, nothing read)."""
        return self.maps.entries[self.rows[i]].has(self.kind)

    def read(self, i: int, index: tuple[Any, ...] | None) -> Any:
        row = self.rows[i]
        array = self.maps.get(row, self.kind)
        if self.kind == "foreground":
            return array if array is not None else np.empty(0, dtype=np.int32)
        if array is None:
            if self.kind in ("roi", *MAPS):
                return None
            spatial = tuple(self._shapes[row][1:])  # an unlabelled case: no label
            if index is not None:
                spatial = tuple(len(range(*s.indices(n))) for s, n in zip(index, spatial))
            return torch.zeros(spatial, dtype=torch.int64)
        part = array if index is None else array[index]
        dtype = {"image": np.float32, "label": np.int64, "roi": np.bool_, "votes": np.int64}.get(self.kind, np.float32)
        return torch.from_numpy(np.array(part, dtype=dtype, order="C"))  # a copy: the map stays read-only


class CachedVolumes(VolumeDataset):
    """A :class:`~labelwise.data.patches.VolumeDataset` whose cases live in the cache: ``image``, ``target``,
    ``rois`` and ``foreground`` are :class:`CachedArrays`; spacings, affines and shapes come from the entries'
    ``meta.json``; ``label_max``: the largest label of every case; ``grids``: per case, the file's own grid
    (:class:`labelwise.data.volumes.Grid`; ``grid.changed`` when the arrays were reoriented or resampled), None
    for entries without it."""

    def __init__(self, cases: Sequence[Case], entries: Sequence[Entry], indices: np.ndarray):
        maps = _Maps(entries)
        shapes = [tuple(e.meta["shape"]) for e in entries]
        spacings = [tuple(float(s) for s in e.meta["spacing"]) for e in entries]
        affines = [
            np.asarray(e.meta["affine"], dtype=np.float64) if e.meta["affine"] is not None else None for e in entries
        ]
        super().__init__(
            cases,
            CachedArrays(maps, "image", shapes),
            CachedArrays(maps, "label", shapes),
            spacings,
            affines,
            indices,
            CachedArrays(maps, "roi", shapes),
            CachedArrays(maps, "foreground", shapes),
            {kind: CachedArrays(maps, kind, shapes) for kind in MAPS if any(e.has(kind) for e in entries)},
        )
        self.entries = list(entries)
        self.label_max = [int(e.meta["label_max"]) for e in entries]
        self.grids = [Grid.from_json(e.meta["original"]) if e.meta.get("original") else None for e in entries]
