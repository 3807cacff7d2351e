"""GlobalRNG: a checkpointable snapshot of python, numpy and torch generators that loads with weights_only=True."""

import random

import numpy as np
import pytest
import torch

from runner.rng import GlobalRNG, seed_everything


def draws() -> dict:
    """A few draws from every global generator, normal ones included (they cache a second value)."""
    return {
        "python": [random.random(), random.gauss(0, 1), random.randint(0, 10**9)],
        "numpy": [np.random.rand(3).tolist(), np.random.randn(3).tolist(), np.random.randint(0, 10**9)],
        "torch": [torch.rand(3).tolist(), torch.randn(3).tolist()],
    }


@pytest.fixture(autouse=True)
def keep_global_rng_state():
    """Tests reseed the process-wide generators: put them back as they were."""
    snapshot = GlobalRNG().state_dict()
    yield
    GlobalRNG().load_state_dict(snapshot)


def test_state_round_trips_through_a_weights_only_load_and_restores_every_generator(tmp_path):
    seed_everything(3)
    random.gauss(0, 1)  # an odd number of normal draws leaves a cached value in python's and numpy's state
    np.random.randn()
    path = tmp_path / "rng.pt"
    torch.save(GlobalRNG().state_dict(), path)
    expected = draws()

    seed_everything(99)  # move every generator somewhere else
    GlobalRNG().load_state_dict(torch.load(path, weights_only=True))

    assert draws() == expected


def test_the_snapshot_does_not_alias_the_live_generators():
    seed_everything(5)
    state = GlobalRNG().state_dict()
    expected = draws()
    draws()

    GlobalRNG().load_state_dict(state)

    assert draws() == expected


def test_seed_everything_makes_draws_repeatable():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    second = draws()
    seed_everything(8)
    other = draws()

    assert first == second
    assert first["python"] != other["python"]
    assert first["numpy"] != other["numpy"]
    assert first["torch"] != other["torch"]


def test_seed_everything_accepts_seeds_beyond_numpys_range_and_stays_repeatable():
    seed_everything(2**40 + 1)
    first = draws()
    seed_everything(2**40 + 1)

    assert draws() == first
