"""The library side of ``labelwise evaluate``: read saved outputs and references, match them, score, write.

- :mod:`labelwise.evaluation.classification`: scores against multi-label sets (ReaL, variable top-k, ASMA);
- :mod:`labelwise.evaluation.fairness`: probabilities against labels, overall and per group (AUC, ES-AUC);
- :mod:`labelwise.evaluation.segmentation`: folders of masks against references (Dice, HD95, ASSD, clDice).

The scores themselves are pure functions in :mod:`labelwise.metrics`."""
