"""A deterministic, resumable, DDP-sharding sampler.

Epoch e visits `randperm(n)` drawn from a generator seeded by (seed, e). The epoch is cut to a
whole number of optimizer steps (`usable = n // global_batch * global_batch`; the tail, fewer than
one global batch, is dropped and differs each epoch). Rank r of W takes every W-th index from the
current position: perm[position + r :: W]. With per-rank micro-batches of b, global micro-batch i
is then exactly perm[position + i*b*W : position + (i+1)*b*W] whatever W is, so one process and
W processes see the same samples per optimizer step.

The state is (epoch, position), position = samples of the epoch consumed by ALL ranks. The
training loop calls `advance()` for each micro-batch it consumed (not when a DataLoader merely
prefetched it) and `next_epoch()` at the end of an epoch; restoring that state makes a resumed
run see exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from several integers (seed, epoch, rank, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class ResumableSampler(Sampler[int]):
    def __init__(self, n: int, global_batch: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if global_batch < 1 or global_batch % world_size:
            raise ValueError(f"global_batch {global_batch} must be a positive multiple of world_size {world_size}")
        if n < global_batch:
            raise ValueError(f"the dataset has {n} samples, fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0
        self.position = 0

    @property
    def usable(self) -> int:
        """Samples per epoch: a whole number of global batches."""
        return self.n // self.global_batch * self.global_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        perm = self.permutation(self.epoch)[: self.usable]
        return iter(perm[self.position + self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return (self.usable - self.position) // self.world_size

    def advance(self, n_global: int) -> None:
        """Record that all ranks together consumed `n_global` more samples of this epoch."""
        if self.position + n_global > self.usable:
            raise ValueError(f"advance({n_global}) past the end of epoch {self.epoch} "
                             f"(position {self.position}, usable {self.usable})")
        self.position += n_global

    def next_epoch(self) -> None:
        self.epoch += 1
        self.position = 0

    def progress(self) -> float:
        """Epochs done, fractional."""
        return self.epoch + self.position / self.usable

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n,
                "global_batch": self.global_batch, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("n", "seed", "global_batch", "shuffle"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state.get(key)!r} but this sampler has "
                                 f"{key}={getattr(self, key)!r} (did the dataset change?)")
        if not 0 <= state["position"] <= self.usable or state["position"] % self.world_size:
            raise ValueError(f"sampler position {state['position']} is invalid for usable={self.usable} "
                             f"and world_size={self.world_size}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
