"""Report an evaluation to an Optuna trial and prune the trial when Optuna says so.

    evaluator.add_event_handler(Events.COMPLETED, OptunaPruning(trial, "fid", trainer))

The same job as ``optuna_integration.PyTorchIgnitePruningHandler``, which reports at ``trainer.state.epoch``: an
iteration-based run (the GAN's whole run is one epoch) would report every evaluation at step 1, and the pruner
would compare nothing. Here the step is a function of the trainer, the iteration by default (``step=lambda t:
t.state.epoch`` for epoch-based tasks).

``optuna.TrialPruned`` propagates out of ``trainer.run``: no handler of this project is attached to
``Events.EXCEPTION_RAISED`` (one would make the engine swallow it and the trial would be recorded as complete).
"""

from collections.abc import Callable

import optuna
from ignite.engine import Engine


class OptunaPruning:
    def __init__(
        self,
        trial: optuna.trial.Trial,
        metric: str,
        trainer: Engine,
        step: Callable[[Engine], int] = lambda trainer: trainer.state.iteration,
    ):
        self.trial = trial
        self.metric = metric
        self.trainer = trainer
        self.step = step

    def __call__(self, evaluator: Engine) -> None:
        step = self.step(self.trainer)
        self.trial.report(float(evaluator.state.metrics[self.metric]), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: {self.metric} {evaluator.state.metrics[self.metric]:.4g}")
