"""The step batch sampler: same global batches for any number of processes and after a resume."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelwise.data import StepBatchSampler


@given(n=st.integers(8, 200), batch=st.sampled_from([2, 4, 8]), world=st.sampled_from([1, 2]), seed=st.integers(0, 5))
def test_ranks_partition_the_global_batch(n, batch, world, seed):
    steps = 3 * (n // batch) + 1
    whole = list(StepBatchSampler(n, batch, steps, seed))
    parts = [list(StepBatchSampler(n, batch, steps, seed, rank=r, world=world)) for r in range(world)]
    for s in range(steps):
        assert sum((p[s] for p in parts), []) == whole[s]
    # within an epoch, no index repeats
    per_epoch = n // batch
    epoch0 = sum(whole[:per_epoch], [])
    assert len(set(epoch0)) == len(epoch0) == per_epoch * batch


def test_resume_sees_the_same_batches():
    full = list(StepBatchSampler(50, 4, 30, seed=1))
    assert list(StepBatchSampler(50, 4, 30, seed=1, start_step=17)) == full[17:]
    assert list(StepBatchSampler(50, 4, 30, seed=2)) != full


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        StepBatchSampler(50, 5, 10, 0, world=2)
    with pytest.raises(ValueError, match="larger than the training set"):
        StepBatchSampler(3, 4, 10, 0)
