"""Frames made by producer processes (``datasets.workers``): their order, their state, their faults."""

import os
import signal

import pytest
import torch

from datasets.atari import FrameStream
from datasets.workers import ProducerDied, WorkerFrames, worker_count, worker_seed

GAMES = ("Breakout", "Pong")


def batches(stream, count: int) -> list[torch.Tensor]:
    return [next(stream) for _ in range(count)]


def same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.fixture
def closing():
    streams = []
    yield lambda stream: streams.append(stream) or stream
    for stream in streams:
        stream.close()


def test_worker_zero_plays_the_runs_own_seed_and_the_others_their_own():
    assert worker_seed(7, 0) == 7
    assert len({worker_seed(7, k) for k in range(4)}) == 4
    assert worker_seed(7, 1) != worker_seed(8, 1)


def test_one_worker_makes_the_batches_of_the_stream_in_this_process(closing):
    here = closing(FrameStream(GAMES, 4, 16, seed=3))
    worker = closing(WorkerFrames(GAMES, 4, 16, seed=3, workers=1))
    assert same(batches(here, 4), batches(worker, 4))


def test_two_workers_take_turns_in_a_fixed_order(closing):
    pair = closing(WorkerFrames(GAMES, 4, 16, seed=3, workers=2))
    made = batches(pair, 4)
    first = closing(FrameStream(GAMES, 4, 16, seed=worker_seed(3, 0)))
    second = closing(FrameStream(GAMES, 4, 16, seed=worker_seed(3, 1)))
    assert same(made, [next(first), next(second), next(first), next(second)])


def test_a_saved_state_continues_with_the_batches_that_followed_it(closing):
    pair = closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2))
    batches(pair, 3)  # worker 1 is next, and has made batches ahead that were never taken
    state = pair.state_dict()
    assert worker_count(state) == 2 and state["next_worker"] == 1
    following = batches(pair, 3)
    again = closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2))
    again.load_state_dict(state)
    assert same(batches(again, 3), following)


def test_a_state_saved_before_every_worker_made_a_batch_is_the_fresh_one(closing):
    pair = closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2))
    assert same(batches(pair, 1), batches(closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2)), 1))
    state = pair.state_dict()  # worker 1 has not been asked yet: its state is its seed's
    again = closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2))
    again.load_state_dict(state)
    assert same(batches(again, 2), batches(pair, 2))


def test_one_worker_continues_a_stream_saved_in_this_process_and_two_refuse_it(closing):
    here = closing(FrameStream(GAMES, 4, 16, seed=3))
    batches(here, 2)
    state = here.state_dict()
    worker = closing(WorkerFrames(GAMES, 4, 16, seed=3, workers=1))
    worker.load_state_dict(state)
    assert same(batches(worker, 2), batches(here, 2))
    with pytest.raises(ValueError, match="0 producer worker"):
        closing(WorkerFrames(GAMES, 4, 16, seed=3, workers=2)).load_state_dict(state)


def test_a_state_loads_with_weights_only(closing, tmp_path):
    pair = closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2))
    batches(pair, 2)
    torch.save(pair.state_dict(), tmp_path / "state.pt")
    assert worker_count(torch.load(tmp_path / "state.pt", weights_only=True)) == 2


def test_a_killed_worker_ends_the_stream_in_one_line(closing):
    pair = closing(WorkerFrames(GAMES, 4, 16, seed=5, workers=2))
    batches(pair, 2)
    pair.resume_hint = "resume with --resume R"
    os.kill(pair._workers[1].process.pid, signal.SIGKILL)
    with pytest.raises(ProducerDied, match=r"^frame producer 2 of 2 was killed by SIGKILL; resume with --resume R$"):
        batches(pair, 400)  # what the worker sent before it died is still taken, then its pipe ends
    assert pair._workers == []  # the other worker is stopped too


def test_close_stops_every_worker(closing):
    pair = WorkerFrames(GAMES, 4, 16, seed=5, workers=2)
    batches(pair, 2)
    processes = [worker.process for worker in pair._workers]
    pair.close()
    assert all(process.poll() is not None for process in processes)
