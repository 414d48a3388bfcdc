"""Deterministic, resumable batch order for any number of processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of the global batch of every step from ``start_step`` to ``max_steps``.

    The global batch of step ``s`` is a pure function of ``(seed, s)``: a fresh permutation per epoch,
    consecutive slices of ``global_batch`` indices, the last incomplete slice dropped. Rank ``r`` of
    ``world`` takes the ``r``-th equal part. So one process and N processes see the same global batches,
    and a resumed run sees exactly the batches it would have seen."""

    def __init__(
        self, n: int, global_batch: int, max_steps: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1
    ):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by the number of devices {world}")
        if n < global_batch:
            raise ValueError(f"batch size {global_batch} is larger than the training set ({n} samples)")
        self.n, self.global_batch, self.max_steps = n, global_batch, max_steps
        self.seed, self.start_step, self.rank, self.world = seed, start_step, rank, world
        self.steps_per_epoch = n // global_batch
        self._epoch, self._permutation = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def global_indices(self, step: int) -> list[int]:
        """The whole batch of ``step`` (all ranks)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.n, generator=generator)
        return self._permutation[position * self.global_batch : (position + 1) * self.global_batch].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        local = self.global_batch // self.world
        for step in range(self.start_step, self.max_steps):
            batch = self.global_indices(step)
            yield batch[self.rank * local : (self.rank + 1) * local]
