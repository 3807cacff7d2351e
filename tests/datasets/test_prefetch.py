import threading

import pytest
import torch

from datasets.atari import FrameStream
from datasets.prefetch import Prefetched

GAMES = ("Breakout", "Pong")


def tiny_stream(seed=3):
    return FrameStream(GAMES, batch_size=2, image_size=8, seed=seed)


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_yields_exactly_the_batches_of_the_stream_it_wraps():
    plain = tiny_stream()
    prefetched = Prefetched(tiny_stream(), depth=3)
    try:
        for expected, got in zip(take(plain, 6), take(prefetched, 6), strict=True):
            assert torch.equal(expected, got)
    finally:
        plain.close()
        prefetched.close()


def test_state_is_the_one_after_the_last_batch_consumed_not_the_last_made():
    prefetched = Prefetched(tiny_stream(), depth=3)
    take(prefetched, 2)  # by now the producer has made up to 3 more
    state = prefetched.state_dict()
    following = take(prefetched, 3)
    prefetched.close()

    resumed = Prefetched(tiny_stream(seed=99), depth=3)  # another seed: everything must come from the state
    resumed.load_state_dict(state)
    try:
        for expected, got in zip(following, take(resumed, 3), strict=True):
            assert torch.equal(expected, got)
    finally:
        resumed.close()


def test_loading_a_state_mid_stream_drops_the_batches_made_ahead():
    prefetched = Prefetched(tiny_stream(), depth=2)
    start = prefetched.state_dict()
    first = take(prefetched, 3)
    prefetched.load_state_dict(start)
    try:
        for expected, got in zip(first, take(prefetched, 3), strict=True):
            assert torch.equal(expected, got)
    finally:
        prefetched.close()


class Failing:
    def __init__(self):
        self.made = 0

    def __next__(self):
        self.made += 1
        if self.made == 3:
            raise RuntimeError("emulator crashed")
        return torch.zeros(1)

    def state_dict(self):
        return {"made": self.made}

    def load_state_dict(self, state):
        self.made = state["made"]

    def close(self):
        pass


def test_an_error_in_the_producer_reaches_the_consumer():
    prefetched = Prefetched(Failing(), depth=1)
    take(prefetched, 2)
    with pytest.raises(RuntimeError, match="emulator crashed"):
        next(prefetched)
    prefetched.close()


def test_close_stops_the_producer_thread():
    prefetched = Prefetched(tiny_stream(), depth=2)
    next(prefetched)
    prefetched.close()
    assert not any(thread.name == "batch-producer" and thread.is_alive() for thread in threading.enumerate())


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth"):
        Prefetched(Failing(), depth=0)
