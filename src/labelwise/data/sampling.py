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


class MixedBatchSampler(StepBatchSampler):
    """Like :class:`StepBatchSampler`, but every global batch holds ``n_labelled`` samples drawn from ``labelled``
    and the rest from ``unlabelled`` (index lists into the dataset). Each pool runs through its own permutations,
    so a small labelled pool repeats more often than the large unlabelled one; each rank takes its equal share of
    both parts (both counts must be divisible by the number of processes)."""

    def __init__(
        self,
        labelled: list[int],
        unlabelled: list[int],
        global_batch: int,
        n_labelled: int,
        max_steps: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        n_unlabelled = global_batch - n_labelled
        for name, count, pool in (("labelled", n_labelled, labelled), ("unlabelled", n_unlabelled, unlabelled)):
            if count % world:
                raise ValueError(f"{count} {name} samples per batch are not divisible by the number of devices {world}")
            if count > len(pool) or count < 1:
                raise ValueError(f"{count} {name} samples per batch asked for, the training split has {len(pool)}")
        self.pools = [(torch.as_tensor(labelled), n_labelled), (torch.as_tensor(unlabelled), n_unlabelled)]
        self.global_batch, self.max_steps = global_batch, max_steps
        self.seed, self.start_step, self.rank, self.world = seed, start_step, rank, world

    def _draw(self, pool: int, step: int) -> list[int]:
        indices, count = self.pools[pool]
        epoch, position = divmod(step, len(indices) // count)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + pool)
        order = torch.randperm(len(indices), generator=generator)[position * count : (position + 1) * count]
        return indices[order].tolist()

    def global_indices(self, step: int) -> list[int]:
        """The labelled part then the unlabelled part of the batch of ``step`` (all ranks)."""
        return self._draw(0, step) + self._draw(1, step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            labelled, unlabelled = self._draw(0, step), self._draw(1, step)
            a, b = len(labelled) // self.world, len(unlabelled) // self.world
            yield labelled[self.rank * a : (self.rank + 1) * a] + unlabelled[self.rank * b : (self.rank + 1) * b]
