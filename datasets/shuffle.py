"""A shuffled training loader whose generator, saved at an epoch's end, continues the run exactly.

torch's ``RandomSampler`` draws its permutations lazily, and one of them (an empty tail, ``randperm(n)[:0]``) only
when its exhausted iterator is asked for one more index. When the data set's size is a multiple of the batch size,
the last batch is full, and Ignite asks for that index only at the start of the next epoch: after the epoch-end
checkpoint saved the generator. A run resumed from that checkpoint then starts its next epoch one draw behind the
uninterrupted run, and every later batch differs (seen with ``regress.py --dataset linear --batch-size 200``).

``EpochOrder`` draws an epoch's whole order when the epoch's first batch is asked for. The draws are the same ones,
in the same order, as ``RandomSampler``'s: an uninterrupted run sees exactly the batches it saw before; only the
generator's state at an epoch's end is now the one the next epoch starts from.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


class EpochOrder(RandomSampler):
    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__()))


def shuffled_loader(dataset: Dataset, batch_size: int, generator: torch.Generator, num_workers: int = 0) -> DataLoader:
    """``DataLoader(dataset, batch_size, shuffle=True, generator=generator)``, continued exactly after a checkpoint
    that holds ``generator`` (``handlers.checkpoint.GeneratorState``)."""
    sampler = EpochOrder(dataset, generator=generator)
    # The loader's own generator too: its workers' base seed is drawn from it, as with shuffle=True.
    return DataLoader(dataset, batch_size, sampler=sampler, generator=generator, num_workers=num_workers)
