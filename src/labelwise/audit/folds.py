"""Cross-fitting: out-of-sample probabilities for a run's training cases.

A run's probabilities for the cases it trained on have memorised their labels' noise, so they cannot audit them.
With ``--folds K`` the training cases are dealt into K folds (shuffled by the run's seed), and K runs of the run's
own config each train on the manifest without one fold; each then predicts the fold it did not see. The runs live
in ``OUT/folds/fold-<k>/``: a finished one is reused, a killed one resumes from its last checkpoint, so a killed
audit picks up where it stopped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.config import load_config
from labelwise.data.manifest import Case
from labelwise.data.table import write_table
from labelwise.errors import LabelwiseError
from labelwise.io import atomic_write

__all__ = ["assign_folds", "fold_runs", "run_data", "source_name", "split_seen", "training_ids", "write_manifest_rows"]


def run_data(run_dir: Path) -> Path:
    """The manifest or table ``run_dir`` trained on: its config's ``data.manifest`` (relative to the run), else the
    absolute path its ``cases.json`` recorded at training (the run folder has moved, its data has not). A clear
    error when the run trained on no manifest, or when neither is there."""
    saved = load_config(run_dir / "config.yaml", check_files=False)
    if saved.data.manifest is None:
        raise LabelwiseError(
            f"{run_dir}: the run did not train on a manifest or table (data.manifest), so its samples cannot be "
            "audited by name; give --input MANIFEST_OR_TABLE"
        )
    path = saved.data.manifest if saved.data.manifest.is_absolute() else run_dir / saved.data.manifest
    recorded = _cases_record(run_dir).get("data")
    if not path.is_file() and recorded and Path(recorded).is_file():
        return Path(recorded)
    if not path.is_file():
        raise LabelwiseError(
            f"{run_dir}: its training data {saved.data.manifest} is not there (was the run or its data moved?); "
            "give --input MANIFEST_OR_TABLE"
        )
    return path


def training_ids(run_dir: Path) -> set[str] | None:
    """The ids of the samples ``run_dir`` trained on, as its ``cases.json`` recorded them; None for a run from
    before that file (its training data is then read again)."""
    splits = _cases_record(run_dir).get("splits")
    return None if splits is None else set(splits.get("train", []))


def _cases_record(run_dir: Path) -> dict:
    path = run_dir / "cases.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def assign_folds(ids: Sequence[str], k: int, seed: int) -> dict[str, int]:
    """Each id's fold in ``0..k-1``: the sorted ids shuffled by ``seed``, dealt round-robin (fold sizes differ by at
    most one)."""
    if k < 2:
        raise LabelwiseError(f"--folds {k}: cross-fitting needs at least 2 folds")
    if len(ids) < k:
        raise LabelwiseError(f"--folds {k}: only {len(ids)} labelled training case(s) to deal into {k} folds")
    order = np.random.default_rng(seed).permutation(sorted(ids))
    return {str(cid): i % k for i, cid in enumerate(order)}


def write_manifest_rows(
    path: Path,
    cases: Sequence[Case],
    extra: dict[str, dict[str, str]] | None = None,
    labels: dict[str, Path] | None = None,
) -> Path:
    """A manifest of ``cases`` at ``path`` (absolute paths, so it can live anywhere; their ignore and weight maps and
    raters' masks kept); ``labels`` replaces the label of the ids it holds, ``extra`` adds columns per id."""
    extra = extra or {}
    labels = labels or {}
    columns = ["id", "image", "label", "split", "truth", "roi"]
    columns += [c for c in ("ignore", "weight") if any(getattr(case, c) is not None for case in cases)]
    columns += [f"label_{k}" for k in range(2, 1 + max((len(c.raters) for c in cases), default=0))]
    columns += sorted({c for row in extra.values() for c in row})
    rows = []
    for case in cases:
        label = labels.get(case.id, case.label)
        raters = case.raters[1:] if case.id not in labels else ()  # a replaced label is the case's one mask
        rows.append(
            {
                "id": case.id,
                "image": str(Path(case.image).resolve()),
                "label": str(Path(label).resolve()) if label is not None else "",
                "split": case.split,
                "truth": str(Path(case.truth).resolve()) if case.truth else "",
                "roi": str(Path(case.roi).resolve()) if case.roi else "",
                "ignore": str(Path(case.ignore).resolve()) if case.ignore else "",
                "weight": str(Path(case.weight).resolve()) if case.weight else "",
                **{f"label_{k}": str(Path(p).resolve()) for k, p in enumerate(raters, start=2)},
                **extra.get(case.id, {}),
            }
        )
    write_table(path, [{c: row.get(c, "") for c in columns} for row in rows])
    return path


def split_seen(
    ids: Sequence[str],
    trained: set[str],
    folds: int | None,
    given: Path | None,
    run_dir: Path,
    report: Callable[[str], None],
    noun: str,
) -> set[str]:
    """The ``ids`` to audit. With ``folds``, all of them (the ones in ``trained``, the run's training ids, get fold
    runs). Without, a run's probabilities for what it trained on are in-sample: those ids are refused when the
    input was ``given`` explicitly, else left out with a note."""
    seen = [i for i in ids if i in trained]
    if folds is not None or not seen:
        return set(ids)
    if given is not None:
        names = ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else "")
        raise LabelwiseError(
            f"{len(seen)} {noun}(s) of {given} trained {run_dir} ({names}): its probabilities for them are "
            "in-sample and have memorised their labels' noise; audit them with --folds K (K runs, each without one "
            f"fold), or keep the {noun}s the run did not train on with --split val --split test"
        )
    report(
        f"note: {len(seen)} training {noun}(s) left out: the run's probabilities for them are in-sample; add "
        "--folds K to audit them too"
    )
    rest = set(ids) - set(seen)
    if not rest:
        raise LabelwiseError(f"{run_dir}: every labelled {noun} trained the run; audit them with --folds K")
    return rest


def fold_runs(
    run_dir: Path,
    write_data: Callable[[Path, set[str]], Path],
    training: Sequence[str],
    k: int,
    out: Path,
    report: Callable[[str], None],
) -> dict[str, Path]:
    """Train (or reuse, or resume) the K fold runs of ``run_dir``'s config, each without one fold of the
    ``training`` ids: ``write_data(folder, held_out_ids)`` writes the fold's data file (a manifest or table without
    those ids) in ``folder`` and returns it. Returns each training id's fold run directory."""
    from labelwise.training import train

    saved = load_config(run_dir / "config.yaml", check_files=False)
    folds = assign_folds(training, k, saved.seed)
    shared = _shared_cache(run_dir, saved)
    folder = out / "folds"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "folds.json", json.dumps({"k": k, "seed": saved.seed, "folds": folds}, indent=1) + "\n")
    where: dict[str, Path] = {}
    for fold in range(k):
        held = {cid for cid, f in folds.items() if f == fold}
        home = folder / f"fold-{fold}"
        manifest = write_data(home, held)
        target = home / "run"
        status = _status(target)
        if status == "completed":
            report(f"[fold {fold + 1}/{k}] done earlier: {target}")
        else:
            report(
                f"[fold {fold + 1}/{k}] {'resuming' if status == 'interrupted' else 'training'} without "
                f"{len(held)} case(s): {target}"
            )
            config = load_config(run_dir / "config.yaml", [f"data.manifest={manifest}", *shared])
            result = train(config, target, resume=status == "interrupted")
            if result.status != "completed":
                raise LabelwiseError(f"fold {fold + 1}/{k}: training {result.status}: {result.message}")
        where.update({cid: target for cid in held})
    return where


def _shared_cache(run_dir: Path, saved: Any) -> list[str]:
    """The override that points the fold runs at the run's own case cache (a fold's manifest lies in its own folder,
    whose default cache would preprocess every case again, once per fold); none for tables, or where the run's data
    cannot be found."""
    from labelwise.data.cache import cache_folder

    if saved.data.task != "segmentation":
        return []
    try:
        return [f"data.cache={cache_folder(run_data(run_dir), saved.data.cache)}"]
    except LabelwiseError:
        return []


def _status(run: Path) -> str | None:
    """``completed``, ``interrupted`` (stopped or killed with a checkpoint to resume from) or None (nothing usable:
    whatever is there is cleared and the fold trains from scratch)."""
    try:
        status = json.loads((run / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        status = None
    if status == "completed":
        return "completed"
    if (run / "checkpoints" / "latest.json").is_file():
        return "interrupted"
    shutil.rmtree(run, ignore_errors=True)
    return None


def source_name(where: Path, run_dir: Path) -> str:
    """How an audit names where a case's probabilities came from: ``run`` (the audited run) or its fold (``fold-k``,
    the folder above a fold run)."""
    return "run" if where == run_dir else where.parent.name
