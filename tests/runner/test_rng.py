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


class RecordedCuda:
    """CUDA made to look available (no GPU here): the generator calls recorded with the device they name."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)

    def get_rng_state(self, device):
        self.calls.append(("get", torch.device(device)))
        return torch.tensor([7, 1], dtype=torch.uint8)

    def set_rng_state(self, state, device):
        self.calls.append(("set", torch.device(device), state.tolist()))


def test_the_runs_own_cuda_generator_is_saved_and_restored_into_the_resumed_runs_device(monkeypatch):
    cuda = RecordedCuda(monkeypatch)
    state = GlobalRNG(torch.device("cuda", 1)).state_dict()  # a run on cuda:1
    GlobalRNG(torch.device("cuda", 0)).load_state_dict(state)  # resumed on cuda:0 (or cuda:1 renumbered)
    assert cuda.calls == [("get", torch.device("cuda", 1)), ("set", torch.device("cuda", 0), [7, 1])]


def test_a_cpu_run_holds_no_cuda_state_on_a_machine_with_gpus(monkeypatch):
    cuda = RecordedCuda(monkeypatch)
    state = GlobalRNG(torch.device("cpu")).state_dict()
    GlobalRNG(torch.device("cpu")).load_state_dict(state)
    assert state["cuda"] == [] and cuda.calls == []
