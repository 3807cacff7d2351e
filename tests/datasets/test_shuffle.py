"""The shuffled training loader: the batches of torch's shuffling, and a generator state that continues exactly."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from datasets.shuffle import shuffled_loader


def epochs(loader: DataLoader, count: int) -> list[list[int]]:
    """The batches of ``count`` epochs as Ignite takes them: one iterator kept across epochs, ``len(loader)`` batches
    each, a new iterator only when the kept one is exhausted."""
    batches, iterator = [], iter(loader)
    for _ in range(count):
        epoch = []
        while len(epoch) < len(loader):
            try:
                epoch.append(next(iterator)[0].tolist())
            except StopIteration:
                iterator = iter(loader)
        batches.append(epoch)
    return batches


def data(size: int) -> TensorDataset:
    return TensorDataset(torch.arange(size))


@pytest.mark.parametrize("size", [64, 70])  # a whole number of batches of 16, and a last partial batch
def test_it_gives_the_batches_of_torchs_shuffling(size):
    ours = shuffled_loader(data(size), 16, torch.Generator().manual_seed(3))
    torchs = DataLoader(data(size), 16, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert epochs(ours, 3) == epochs(torchs, 3)


@pytest.mark.parametrize("size", [64, 70])
def test_its_generator_saved_after_an_epoch_continues_the_next_epochs_exactly(size):
    generator = torch.Generator().manual_seed(3)
    whole = epochs(shuffled_loader(data(size), 16, generator), 3)

    generator = torch.Generator().manual_seed(3)
    first = epochs(shuffled_loader(data(size), 16, generator), 1)
    saved = generator.get_state()  # the epoch-end checkpoint
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert first + epochs(shuffled_loader(data(size), 16, resumed), 2) == whole


def test_torchs_own_shuffling_would_not_continue_exactly_when_the_batches_fill_the_epoch():
    """Why the loader exists: with shuffle=True the state saved after a full epoch is one draw short."""
    generator = torch.Generator().manual_seed(3)
    loader = DataLoader(data(64), 16, shuffle=True, generator=generator)
    whole = epochs(loader, 2)
    generator.manual_seed(3)
    epochs(loader, 1)
    resumed = torch.Generator()
    resumed.set_state(generator.get_state())
    assert epochs(DataLoader(data(64), 16, shuffle=True, generator=resumed), 1) != whole[1:]
