"""Learning rates that fall during a run.

``DecayOnRise`` multiplies the learning rate by ``factor`` whenever an epoch's mean training loss is higher than the
previous epoch's: the rule of the Dogs-vs-Cats chapter (Deep Learning Framework PyTorch, ch. 6, factor 0.95).

    DecayOnRise(optimizer, factor=0.95).attach(trainer)

Its state (the previous epoch's loss, the running sum) goes into checkpoints, so a resumed run decays as an
uninterrupted one would.

``decay_to_zero`` keeps each optimizer's rate until an iteration, then lowers it linearly to 0 at another (the GANs'
``--lr-decay-from``), with Ignite's ``PiecewiseLinear``:

    decay_to_zero(trainer, [(gen_optimizer, 1e-4), (dis_optimizer, 4e-4)], start=13_000, end=20_000)
"""

from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import BaseParamScheduler, PiecewiseLinear


def decay_to_zero(
    trainer: Engine, optimizers: Sequence[tuple[torch.optim.Optimizer, float]], start: int, end: int
) -> None:
    """Each (optimizer, base rate): the base rate for the first ``start`` iterations, then falling linearly towards 0
    at iteration ``end``. Ignite's scheduler counts its own calls from 0 at each start; set from the trainer's
    iteration when it starts, its rate is a function of the iteration alone, so nothing of it needs saving: a
    resumed run goes on where it was, and a run that adds it at a resume before ``start`` is the run that had it
    from the beginning (a branch of a run that had none)."""
    for optimizer, base in optimizers:
        scheduler = PiecewiseLinear(optimizer, "lr", [(start, base), (end, 0.0)])
        trainer.add_event_handler(Events.STARTED, continue_from_iteration, scheduler)
        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)


def continue_from_iteration(engine: Engine, scheduler: BaseParamScheduler) -> None:
    """At a start: an Ignite scheduler attached per iteration (a rate, the EMA's warm-up) goes on from the trainer's
    iteration, not from 0; its call at iteration i (1-based) then computes the value of i - 1, as in a straight run."""
    scheduler.event_index = engine.state.iteration


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
