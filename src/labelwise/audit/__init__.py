"""``labelwise audit``: where a data set's labels disagree with a trained run's out-of-sample probabilities.

    audit_run("runs/drive", "audit")                     # the run's val and test cases
    audit_run("runs/drive", "audit", folds=5)            # and its training cases, cross-fitted over 5 folds
    audit_run("runs/drive", "audit", fix="data/fixed")   # plus a corrected manifest that `labelwise train` takes

The scoring is confident learning (:mod:`labelwise.metrics.label_quality`); this package finds the probabilities
(a run predicts its val and test cases out of sample; its training cases need runs that did not see them), writes the
suspect maps, tables and page (:mod:`labelwise.report.audit`), and the corrected labels. Modules: ``folds``
(cross-fitting), ``segmentation`` (masks), ``classification`` (class labels of a table). Each audit is recorded
in the run folder's ``audits.json``, from which the run's report links to its page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from labelwise.data.manifest import SPLITS
from labelwise.errors import LabelwiseError
from labelwise.io import atomic_write
from labelwise.report.audit import AUDITS

__all__ = ["AUDITS", "audit_run", "record_audit"]

WORST = 12  # cases or samples shown on the page
FIX_ACTIONS = ("relabel", "unlabel")  # what --fix does with a flagged class label


def audit_run(
    run_dir: str | Path,
    out: str | Path,
    manifest: str | Path | None = None,
    folds: int | None = None,
    fix: str | Path | None = None,
    splits: Sequence[str] | None = None,
    worst: int = WORST,
    progress: bool | Callable[[str], None] = True,
    fix_action: str = "relabel",
) -> dict[str, Any]:
    """Audit the labels of ``manifest`` (a segmentation manifest or a classification table; default: the run's
    own) with the run in ``run_dir``; ``splits``: only the cases of these splits. What the run trained on needs
    ``folds`` (K >= 2 cross-fitted runs in ``out/folds``, reused or resumed by a later call); without it, it is
    refused when ``manifest`` is given, and left out (with a note) when it is not. ``fix``: a folder for the
    corrected manifest or table; ``fix_action`` (class labels): ``relabel`` replaces a flagged training label by
    the likely one, ``unlabel`` keeps the sample as an unlabelled image (``use_label`` 0: supervised training leaves
    it out, semi-supervised methods learn from its image). Returns what ``out/audit.json`` holds."""
    from labelwise.inference.run import load_run, reporter

    unknown = sorted(set(splits or ()) - set(SPLITS))
    if unknown:
        raise LabelwiseError(f"--split {unknown[0]}: use one of {', '.join(SPLITS)}")
    if fix_action not in FIX_ACTIONS:
        raise LabelwiseError(f"--fix-action {fix_action}: use one of {', '.join(FIX_ACTIONS)}")
    run = load_run(run_dir)
    if fix_action != "relabel" and run.task == "segmentation":
        raise LabelwiseError(
            f"--fix-action {fix_action}: for class labels; a mask's fix flips its suspect pixels (relabel)"
        )
    given = Path(manifest) if manifest is not None else None
    args = (run, Path(out), given, folds, Path(fix) if fix is not None else None, splits, worst, reporter(progress))
    if run.task == "segmentation":
        from labelwise.audit.segmentation import audit_masks

        summary = audit_masks(*args)
    else:
        from labelwise.audit.classification import audit_labels

        summary = audit_labels(*args, fix_action=fix_action)
    record_audit(Path(run_dir), Path(out), summary)
    return summary


def record_audit(run_dir: Path, out: Path, summary: dict[str, Any]) -> None:
    """Add (or replace, for the same ``out``) the audit in ``run_dir/audits.json``: where its page is (relative to the
    run folder where it lies inside it, so a moved run keeps its link) and its headline figures."""
    path = run_dir / AUDITS
    try:
        entries = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        entries = []
    entries = entries if isinstance(entries, list) else []
    page = (out / "report.html").resolve()
    try:
        where = str(page.relative_to(run_dir.resolve()))
    except ValueError:
        where = str(page)
    flagged = (
        summary["issues"]
        if "issues" in summary
        else sum(int(summary.get(k, 0)) for k in ("missed", "extra", "swapped"))
    )
    entry = {
        "page": where,
        "input": summary.get("input"),
        "folds": summary.get("folds"),
        "task": summary.get("task", "segmentation"),
        "audited": summary.get("samples", summary.get("cases")),
        "flagged": flagged,
        "unit": "samples" if "samples" in summary else "cases",
        "fix": summary.get("fix"),
        "when": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
    }
    entries = [e for e in entries if isinstance(e, dict) and e.get("page") != where] + [entry]
    atomic_write(path, json.dumps(entries, indent=1) + "\n")
