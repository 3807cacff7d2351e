"""A background producer for a checkpointable stream: batches are made ahead, in a thread, off the training step.

    stream = Prefetched(FrameStream(games, 16, 64, seed=0), depth=2)
    batch = next(stream)           # made while the previous step trained
    state = stream.state_dict()    # the position right after the last batch *consumed*, not the last one made

The producer captures the wrapped stream's ``state_dict()`` after each batch it makes and queues it with the batch,
so a checkpoint holds the state that belongs to the last batch the trainer took: batches made ahead and never used
are made again after a resume, and the resumed run sees exactly the batches the uninterrupted one would have.

The emulators and cv2 release the GIL for most of their work, so on a machine with a spare core the frames cost the
step almost nothing. ``pin_memory=True`` pins each batch (for ``non_blocking`` copies to a GPU).
"""

import queue
import threading
from typing import Any

import torch

_STOP_POLL_SECONDS = 0.1  # how often a blocked producer checks whether it should stop


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetched:
    """Iterator over ``source``'s batches, made ``depth`` ahead in a daemon thread; checkpointable like ``source``."""

    producer = "background producer"  # how a run's "fast path" line names it

    def __init__(self, source: Any, depth: int = 2, pin_memory: bool = False):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.source = source
        self.depth = depth
        self.pin_memory = pin_memory
        self._consumed_state = source.state_dict()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> "Prefetched":
        return self

    def __next__(self) -> torch.Tensor:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._thread = None
            raise item.error
        batch, self._consumed_state = item
        return batch

    def state_dict(self) -> dict:
        return self._consumed_state

    def load_state_dict(self, state: dict) -> None:
        self._halt()
        self.source.load_state_dict(state)
        self._consumed_state = self.source.state_dict()

    def close(self) -> None:
        self._halt()
        self.source.close()

    def _start(self) -> None:
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._produce, name="batch-producer", daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        """Stop the producer and put the source back where the last consumed batch left it."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.source.load_state_dict(self._consumed_state)  # drop what was made ahead: it will be made again

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                batch = next(self.source)
                if self.pin_memory:
                    batch = batch.pin_memory()
                self._put((batch, self.source.state_dict()))
        except BaseException as error:  # noqa: BLE001 - the consumer re-raises it in its own thread
            self._put(_Failure(error))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_POLL_SECONDS)
                return
            except queue.Full:
                continue
