"""``labelwise audit``: where a data set's labels disagree with a trained run's out-of-sample probabilities.

    audit_run("runs/drive", "audit")                     # the run's val and test cases
    audit_run("runs/drive", "audit", folds=5)            # and its training cases, cross-fitted over 5 folds
    audit_run("runs/drive", "audit", fix="data/fixed")   # plus a corrected manifest that `labelwise train` takes

The scoring is confident learning (:mod:`labelwise.metrics.label_quality`); this package finds the probabilities
(a run predicts its val and test cases out of sample; its training cases need runs that did not see them), writes the
suspect maps, tables and page (:mod:`labelwise.report.audit`), and the corrected labels. Modules: ``folds``
(cross-fitting), ``segmentation`` (masks)."""

from labelwise.audit.segmentation import audit_run

__all__ = ["audit_run"]
