"""Atari frames made by several processes: ``--producer-workers N``, for a GPU that one core cannot feed.

    frames = WorkerFrames(("Breakout", "Pong"), batch_size=16, image_size=64, seed=0, workers=2)
    batch = next(frames)          # worker 0's batch, then worker 1's, then worker 0's...
    state = frames.state_dict()   # each worker's stream as of its last batch *consumed*, and whose turn is next
    frames.close()

Each worker process plays its own episodes: an ``AleFrames`` stream of whole batches (``datasets.ale``, no torch),
seeded from the run's seed (worker 0 from the seed itself, so one worker makes exactly the batches of the stream in
the training process). The batches are taken in turn, worker 0, 1, ..., N-1, 0, ..., so what training sees is a
function of (seed, N) alone, however fast each worker runs.

Exact resume: each worker sends, with every batch, its stream's state right after making it. The consumer keeps the
state of the last batch it *took* from each worker, and ``state_dict`` returns those: batches made ahead and never
used are made again after a resume. ``load_state_dict`` restarts the workers from saved states. The workers start
on the first batch asked for, so a resumed run starts them once, from its checkpoint.

Faults: a worker that dies (killed, out of memory, a bug) ends the run with ``ProducerDied``, one line, the run's
checkpoints untouched. A worker dies with the training process: it gets SIGKILL when its parent dies (Linux), and
in any case finds its pipe closed at its next batch. Ctrl-C in a terminal reaches the whole process group: workers
ignore it, the training process stops them after its own graceful stop.

Each worker talks through its own one-way pipe, whose writing end only the worker holds, so a worker killed in the
middle of a batch shows as the end of its pipe (``EOFError``), never as a consumer waiting forever.
"""

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from datasets.ale import AleFrames, check_games
from datasets.atari import frame_batch, state_with_bytes, state_with_tensors
from runner.errors import UserError

_WORKER_SEED_TAG = 0x5752  # keeps worker k's seed apart from rank k's (runner.distributed.rank_seed)
_POLL_SECONDS = 0.5  # how often a consumer waiting for a batch checks that its worker is alive
_JOIN_SECONDS = 2.0  # how long ``close`` waits for a worker to notice its closed pipe before killing it
_PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where a worker's ``import datasets.ale`` is found
_WORKER_COMMAND = "from datasets.ale import serve_batches; serve_batches()"


class ProducerDied(UserError):
    """A frame producer process died: the run stops, its checkpoints are kept."""

    exit_code = 1


def worker_seed(seed: int, worker: int) -> int:
    """Worker ``worker``'s seed: ``seed`` itself for worker 0, a derived one for the others."""
    if worker == 0:
        return seed
    state = np.random.SeedSequence([seed, _WORKER_SEED_TAG, worker]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> 1)


def worker_count(stream_state: dict) -> int:
    """How many workers made the frames of a saved stream state (0: the training process itself)."""
    return len(stream_state["workers"]) if "workers" in stream_state else 0


class _Worker:
    """One producer process and the reading end of its pipe.

    The process is a plain ``python -c`` that imports ``datasets.ale`` alone: not ``multiprocessing``'s spawn, which
    re-imports the launcher's main module (torch and all, seconds per worker) and fails in a script without an
    ``if __name__ == "__main__"`` guard.
    """

    def __init__(self, index: int, start: tuple):
        reading, writing = multiprocessing.Pipe(duplex=False)
        path = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_COMMAND, str(writing.fileno())],
            stdin=subprocess.PIPE,
            pass_fds=(writing.fileno(),),
            env={**os.environ, "PYTHONPATH": path},
        )
        writing.close()  # only the worker holds the writing end: its death is the pipe's end
        self.process.stdin.write(pickle.dumps(start))
        self.process.stdin.close()
        self.index, self.pipe = index, reading

    def receive(self, of: int) -> tuple[np.ndarray, dict]:
        """The next batch and the state after it; ``ProducerDied`` if the worker is gone."""
        try:
            while not self.pipe.poll(_POLL_SECONDS):
                if self.process.poll() is not None:
                    raise EOFError
            item = self.pipe.recv()
        except (EOFError, ConnectionResetError, OSError):
            ended = _how_it_ended(self.wait())
            raise ProducerDied(f"frame producer {self.index + 1} of {of} {ended}") from None
        if isinstance(item, str):
            raise ProducerDied(f"frame producer {self.index + 1} of {of} failed: {item}")
        return item

    def wait(self) -> int | None:
        try:
            return self.process.wait(_JOIN_SECONDS)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        self.pipe.close()  # the worker's next send fails and it ends
        if self.wait() is None:
            self.process.kill()
            self.process.wait()


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


class WorkerFrames:
    """Batches of frames from ``workers`` processes, taken in turn; checkpointable like ``FrameStream``."""

    def __init__(
        self,
        games: Sequence[str],
        batch_size: int,
        image_size: int,
        seed: int,
        workers: int,
        pin_memory: bool = False,
        uint8: bool = False,
    ):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        check_games(games)
        self.games, self.batch_size, self.image_size = tuple(games), batch_size, image_size
        self.seeds = [worker_seed(seed, index) for index in range(workers)]
        self.pin_memory, self.uint8 = pin_memory, uint8
        self.resume_hint = ""  # "resume with ...": the task sets it once it knows the run directory
        self._states: list[dict | None] = [None] * workers  # as of the last batch consumed (None: fresh, not begun)
        self._next = 0
        self._workers: list[_Worker] = []

    @property
    def workers(self) -> int:
        return len(self.seeds)

    @property
    def producer(self) -> str:
        """How a run's "fast path" line names it."""
        return f"{self.workers} producer process{'es' if self.workers > 1 else ''}"

    def __iter__(self) -> "WorkerFrames":
        return self

    def __next__(self) -> torch.Tensor:
        if not self._workers:
            self._start()
        try:
            frames, state = self._workers[self._next].receive(of=self.workers)
        except ProducerDied as error:
            self.close()
            raise ProducerDied(f"{error}; {self.resume_hint or 'the run checkpoints are kept'}") from None
        self._states[self._next] = state
        self._next = (self._next + 1) % self.workers
        batch = frame_batch(frames, self.uint8)
        return batch.pin_memory() if self.pin_memory else batch

    def state_dict(self) -> dict:
        if any(state is None for state in self._states):
            self._fill_fresh_states()
        states = [state_with_tensors(state) for state in self._states]
        return {"games": list(self.games), "workers": states, "next_worker": self._next}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state: this class's, or one ``FrameStream``'s (the same frames as one worker)."""
        saved = worker_count(state)
        if max(saved, 1) != self.workers:
            raise ValueError(f"the saved frames come from {saved} producer worker(s), this stream has {self.workers}")
        if list(state["games"]) != list(self.games):
            raise ValueError(f"the saved stream plays {state['games']}, this one {list(self.games)}")
        self.close()
        self._states = [state_with_bytes(s) for s in state["workers"]] if saved else [state_with_bytes(state)]
        self._next = int(state.get("next_worker", 0))

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def _start(self) -> None:
        for index, (seed, state) in enumerate(zip(self.seeds, self._states, strict=True)):
            start = (self.games, self.batch_size, self.image_size, seed, state)
            self._workers.append(_Worker(index, start))

    def _fill_fresh_states(self) -> None:
        """The state of a worker that has not made a batch yet: its stream as built from its seed."""
        for index, seed in enumerate(self.seeds):
            if self._states[index] is None:
                stream = AleFrames(self.games, self.batch_size, self.image_size, seed)
                self._states[index] = stream.state_dict()
                stream.close()
