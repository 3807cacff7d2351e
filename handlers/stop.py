"""Stop on Ctrl-C or SIGTERM at an iteration boundary, so the final checkpoint is exact.

    with GracefulStop(trainer) as stop:
        trainer.run(stream, max_iters=...)
    if stop.signal_name: ...  # stopped early, the COMPLETED handlers (final checkpoint, sheets) have run

The first signal only sets a flag; the engine is told to terminate after the iteration in progress completes, so no
batch is drawn from the stream without being trained on (terminating from inside the signal handler could land
between fetching a batch and processing it, and the checkpoint would then skip that batch). A second signal
interrupts at once (KeyboardInterrupt), keeping the checkpoints already written.

With several processes (``ignite.distributed``), a signal may reach only some of them: at each iteration boundary
they agree (one all-reduce), and all stop at the same iteration, saying the same signal. A process that stopped alone
would leave the others waiting for it in their next collective.
"""

import signal
import sys
from types import FrameType

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.signal_name: str | None = None
        self._signum = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        self.engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_terminate)
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self.engine.remove_event_handler(self._maybe_terminate, Events.ITERATION_COMPLETED)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self._signum, self.signal_name = signum, signal.Signals(signum).name
        print(f"\n{self.signal_name}: stopping after this iteration (again to stop at once)", file=sys.stderr)

    def _maybe_terminate(self, engine: Engine) -> None:
        signum = self._signum
        if idist.get_world_size() > 1:
            signum = int(idist.all_reduce(torch.tensor([signum]), op="MAX").item())
            if signum and self.signal_name is None:
                self.signal_name = signal.Signals(signum).name
        if signum:
            engine.terminate()
