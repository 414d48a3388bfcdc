"""mean ± std and bootstrap confidence intervals (against scipy, and coverage on known data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from labelwise.metrics import bootstrap_ci, mean_std


def test_mean_std_ignores_nan():
    values = torch.tensor([1.0, float("nan"), 3.0, 5.0])
    mean, std = mean_std(values)
    assert mean == pytest.approx(3.0) and std == pytest.approx(2.0)
    assert mean_std(np.array([1.0, 3.0]), ddof=0) == pytest.approx((2.0, 1.0))
    assert mean_std([4.0])[0] == 4.0 and math.isnan(mean_std([4.0])[1])
    assert all(math.isnan(v) for v in mean_std([float("nan")]))
    assert isinstance(mean_std([1.0, 2.0])[0], float)


@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bootstrap_close_to_scipy(statistic):
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 1.0, 200)
    low, high = bootstrap_ci(values, statistic=statistic, n_resamples=4000, seed=1)
    ref = stats.bootstrap((values,), statistic, n_resamples=4000, confidence_level=0.95, method="percentile",
                          random_state=2).confidence_interval
    scale = values.std() / np.sqrt(len(values))
    assert low == pytest.approx(ref.low, abs=0.25 * scale)
    assert high == pytest.approx(ref.high, abs=0.25 * scale)
    assert low < statistic(values) < high


def test_bootstrap_deterministic_torch_and_nan():
    values = torch.linspace(0, 1, 50)
    a = bootstrap_ci(values, seed=3)
    assert a == bootstrap_ci(values.numpy(), seed=3)
    assert a == bootstrap_ci(torch.cat([values, torch.tensor([float("nan")])]), seed=3)
    assert a != bootstrap_ci(values, seed=4)
    assert isinstance(a[0], float)


def test_bootstrap_level_widens():
    values = np.random.default_rng(1).normal(size=100)
    l90, h90 = bootstrap_ci(values, level=0.90)
    l99, h99 = bootstrap_ci(values, level=0.99)
    assert l99 < l90 < h90 < h99


def test_bootstrap_coverage():
    """About 95% of intervals around samples of a known distribution contain its mean."""
    rng = np.random.default_rng(5)
    trials, n, true_mean = 300, 60, 0.7
    hits = 0
    for i in range(trials):
        sample = rng.normal(true_mean, 1.0, n)
        low, high = bootstrap_ci(sample, n_resamples=500, seed=i)
        hits += low <= true_mean <= high
    assert 0.89 <= hits / trials <= 0.99


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert bootstrap_ci(np.ones(30)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)


def test_bootstrap_chunks_large_inputs(monkeypatch):
    import labelwise.metrics.aggregate as agg

    values = np.random.default_rng(2).normal(size=1000)
    whole = bootstrap_ci(values, n_resamples=300)
    monkeypatch.setattr(agg, "_CHUNK_ELEMENTS", 1000 * 7)  # 7 resamples per chunk
    low, high = bootstrap_ci(values, n_resamples=300)
    assert (low, high) == pytest.approx(whole, abs=0.02)
