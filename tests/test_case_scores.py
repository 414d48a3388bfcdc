"""One per-case segmentation scorer (:func:`labelwise.metrics.surface.score_case`) behind the four places that score
a case: the validation Dice (``Method.evaluate``), the end-of-run ``segmentation.json``, ``labelwise predict
--reference`` and ``labelwise evaluate segmentation``. Each gives the same scores for the same case, equal to
:func:`labelwise.metrics.surface.segmentation_scores` of the class's masks inside the region of interest."""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import torch
from conftest import invoke_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_evaluate_segmentation import train_blobs

from labelwise.config import load_config
from labelwise.data.datasets import DataBundle
from labelwise.data.volumes import read_volume
from labelwise.methods import METHODS
from labelwise.metrics.surface import OVERLAP_NAMES, inside, score_case, scored_classes, segmentation_scores


def same(a: float | None, b: float) -> bool:
    """Equal, nan (None in JSON) equal to nan."""
    if a is None or math.isnan(a):
        return math.isnan(b)
    return a == b


@cache
def segmenter(num_classes: int):
    cfg = load_config(
        {
            "seed": 0,
            "method": {"name": "supervised", "loss": "dice_ce"},
            "data": {"synth": {"n": 8}, "task": "segmentation"},
            "model": {"name": "unet", "channels": [4, 8]},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    data = DataBundle(
        splits={}, task="segmentation", num_classes=num_classes, in_channels=1, spatial_dims=2, image_size=(16, 16)
    )
    return METHODS["supervised"](cfg, data)


@st.composite
def cases(draw):
    k = draw(st.sampled_from([2, 3]))
    shape = draw(st.sampled_from([(5, 6), (3, 4, 5)]))
    labels = arrays(np.int64, shape, elements=st.integers(0, k - 1))
    roi = draw(st.none() | arrays(np.bool_, shape))
    return k, draw(labels), draw(labels), roi


@settings(max_examples=60, deadline=None)
@given(cases())
def test_the_validation_dice_is_the_case_scorer_and_the_oracle(case):
    k, pred, truth, roi = case
    method = segmenter(k)
    logits = torch.from_numpy(np.moveaxis(np.eye(k)[pred], -1, 0) * 10.0).float()  # argmax: pred
    metrics, predictions = method.evaluate(
        [logits], [torch.from_numpy(truth)], rois=[torch.from_numpy(roi) if roi is not None else None]
    )
    np.testing.assert_array_equal(predictions["prediction"][0].numpy(), inside(pred, roi))
    classes = scored_classes(k)
    scored = score_case(pred, truth, (0.5,) * pred.ndim, roi, classes)
    oracle = segmentation_scores(pred > 0, truth > 0, (0.5,) * pred.ndim, roi)
    assert all(same(scored["foreground"][n], oracle[n]) for n in oracle)
    fast = score_case(pred, truth, roi=roi, classes=classes, distances=False)
    assert set(fast["foreground"]) == set(OVERLAP_NAMES)
    for c in range(1, k):
        expected = segmentation_scores(pred == c, truth == c, roi=roi)["dice"]
        assert same(metrics[f"dice/{c}"], expected)
        if classes:
            assert same(scored["per_class"][str(c)]["dice"], expected)
            assert same(fast["per_class"][str(c)]["dice"], expected)
        else:
            assert same(fast["foreground"]["dice"], expected)


def test_the_four_places_score_a_case_alike(tmp_path):
    """One test case of a 3-class run with a region of interest: the run's test metrics (Method.evaluate), its
    segmentation.json, predict --reference --roi and evaluate segmentation --roi give the same Dice per class and
    for the foreground, each the oracle's on the saved mask inside the roi."""
    run = train_blobs(tmp_path, 6, roi=True)
    data = tmp_path / "data"
    mask = read_volume(run / "predictions" / "test" / "masks" / "c5.png", mask=True).array
    truth = read_volume(data / "labels" / "c5.png", mask=True).array
    roi = read_volume(data / "roi" / "c5_roi.png", mask=True).array > 0
    assert not mask[~roi].any() and mask.max() > 0
    oracle = {
        "foreground": segmentation_scores(mask > 0, truth > 0, roi=roi),
        **{str(c): segmentation_scores(mask == c, truth == c, roi=roi) for c in (1, 2)},
    }

    test = json.loads((run / "summary.json").read_text())["test"]  # Method.evaluate, one test case
    (saved,) = json.loads((run / "predictions" / "test" / "segmentation.json").read_text())["references"]["label"][
        "cases"
    ]
    out = tmp_path / "predicted"
    code, text = invoke_cli(
        "predict",
        str(run),
        "--input",
        str(data / "images" / "c5.png"),
        "--out",
        str(out),
        "--reference",
        str(data / "labels"),
        "--roi",
        str(data / "roi"),
    )
    assert code == 0, text
    (entry,) = json.loads((out / "predictions.json").read_text())["cases"]
    np.testing.assert_array_equal(read_volume(out / entry["mask"], mask=True).array, mask)
    code, text = invoke_cli(
        "evaluate",
        "segmentation",
        "--pred",
        str(out),
        "--truth",
        str(data / "labels"),
        "--roi",
        str(data / "roi"),
        "--allow-missing",
        "--json",
        str(tmp_path / "scores.json"),
    )
    assert code == 0, text
    (evaluated,) = json.loads((tmp_path / "scores.json").read_text())["cases"]
    assert evaluated["roi"].endswith("c5_roi.png") and entry["roi"].endswith("c5_roi.png")

    assert same(saved["dice"], oracle["foreground"]["dice"]) and same(entry["dice"], oracle["foreground"]["dice"])
    assert all(
        same(saved[n], oracle["foreground"][n]) and same(evaluated[n], oracle["foreground"][n])
        for n in oracle["foreground"]
    )
    for k, c in enumerate(("1", "2")):
        assert same(test[f"dice/{c}"], oracle[c]["dice"])
        assert same(entry["dice_per_class"][k], oracle[c]["dice"])
        assert all(
            same(saved["per_class"][c][n], oracle[c][n]) and same(evaluated["per_class"][c][n], oracle[c][n])
            for n in oracle[c]
        )
