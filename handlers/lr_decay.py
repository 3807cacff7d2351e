"""Multiply the learning rate by ``factor`` whenever an epoch's mean training loss is higher than the previous
epoch's: the rule of the Dogs-vs-Cats chapter (Deep Learning Framework PyTorch, ch. 6, factor 0.95).

    DecayOnRise(optimizer, factor=0.95).attach(trainer)

Its state (the previous epoch's loss, the running sum) goes into checkpoints, so a resumed run decays as an
uninterrupted one would.
"""

from typing import Any

import torch
from ignite.engine import Engine, Events


class DecayOnRise:
    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, output_key: str = "loss"):
        self.optimizer = optimizer
        self.factor = factor
        self.output_key = output_key
        self.previous: float | None = None
        self._sum = 0.0
        self._count = 0

    def attach(self, engine: Engine) -> "DecayOnRise":
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._compare)
        return self

    def _accumulate(self, engine: Engine) -> None:
        self._sum += engine.state.output[self.output_key]
        self._count += 1

    def _compare(self, engine: Engine) -> None:
        loss = self._sum / max(self._count, 1)
        if self.previous is not None and loss > self.previous:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.factor
        self.previous, self._sum, self._count = loss, 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "sum": self._sum, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous, self._sum, self._count = state["previous"], state["sum"], state["count"]
