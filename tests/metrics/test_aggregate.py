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
    ref = stats.bootstrap(
        (values,), statistic, n_resamples=4000, confidence_level=0.95, method="percentile", random_state=2
    ).confidence_interval
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


def test_bootstrap_interval_is_the_percentile_of_a_per_resample_loop():
    """Hand oracle: every resample drawn one row at a time from the same generator, its statistic taken alone, and
    numpy's percentiles; resamples where the statistic is nan are left out; the chunk size changes nothing."""
    from labelwise.metrics.aggregate import bootstrap_interval

    values = np.random.default_rng(5).exponential(size=37)

    def odd_mean(index):  # nan for a resample whose first case is an even index: left out
        means = values[index].mean(axis=1)
        return np.where(index[:, 0] % 2 == 1, means, np.nan)

    rng = np.random.default_rng(11)
    rows = [rng.integers(0, values.size, size=(1, values.size))[0] for _ in range(400)]
    kept = [values[r].mean() for r in rows if r[0] % 2 == 1]
    expected = np.percentile(kept, [5, 95])
    for chunk in (None, 1, 7, 400):
        low, high = bootstrap_interval(odd_mean, values.size, n_resamples=400, level=0.9, seed=11, chunk=chunk)
        assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    assert all(math.isnan(v) for v in bootstrap_interval(lambda i: np.full(len(i), np.nan), 5))
    assert all(math.isnan(v) for v in bootstrap_interval(odd_mean, 0))
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval(odd_mean, 5, n_resamples=0)
