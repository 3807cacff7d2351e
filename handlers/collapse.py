"""Say when a GAN collapses: an evaluation's FID far above the best so far.

A collapsing GAN's losses need not show it (the chapter's run had ``loss_dis`` about 0.002 before and after its
generator fell to striped noise); its FID does, at once. After each scheduled evaluation, this compares the FID with
the best one so far:

- rising above ``factor`` x the best, it prints one line and writes a ``metrics.jsonl`` record (``"collapse"``) that
  give the FID, the best with its iteration, and the kept best checkpoint;
- coming back within ``factor`` x the best, one more line and record (``"state": "recovered"``).

Training goes on either way: ``--patience`` decides when a run stops.

    watch = CollapseWatch("fid_ema", 3.0, every=500, metrics_log=log, best_checkpoint=lambda: best.last_checkpoint)
    watch.attach(evaluator, trainer)   # after the best checkpointer, so that it names this evaluation's best

Only evaluations on the schedule count (a run stopped by Ctrl-C evaluates once more, off it), and the state is in
the checkpoint (``state_dict``): a resumed run judges as an uninterrupted one.
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from handlers.metrics_log import MetricsLog


class CollapseWatch:
    def __init__(
        self,
        metric: str,
        factor: float,
        every: int,
        metrics_log: MetricsLog | None,
        best_checkpoint: Callable[[], str | Path | None],
        say: Callable[[str], None] = print,
    ):
        self.metric, self.factor, self.every = metric, factor, every
        self.metrics_log = metrics_log  # None on a process that does not write (it judges all the same)
        self.best_checkpoint = best_checkpoint
        self.say = say
        self.best = math.inf
        self.best_iteration = 0
        self.collapsed = False

    def attach(self, evaluator: Engine, trainer: Engine) -> "CollapseWatch":
        evaluator.add_event_handler(Events.COMPLETED, self.judge, trainer)
        return self

    def judge(self, evaluator: Engine, trainer: Engine) -> None:
        iteration = trainer.state.iteration
        value = float(evaluator.state.metrics[self.metric])
        if iteration % self.every or not math.isfinite(value):
            return
        if value < self.best:
            self.best, self.best_iteration = value, iteration
        collapsed = value > self.factor * self.best
        if collapsed != self.collapsed:
            self.collapsed = collapsed
            self.report(iteration, value)

    def report(self, iteration: int, value: float) -> None:
        checkpoint = self.best_checkpoint()
        now = f"{self.metric} {value:.1f} at iteration {iteration}"
        best = f"the best, {self.best:.1f} at iteration {self.best_iteration}"
        if self.collapsed:
            kept = f" (kept in {checkpoint})" if checkpoint else ""
            line = f"collapse: {now} is {value / self.best:.1f}x {best}{kept}; training goes on"
        else:
            line = f"recovered: {now} is back within {self.factor:g}x {best}"
        if self.metrics_log is None:
            return
        self.say(line)
        self.metrics_log.write({"iteration": iteration, "collapse": self.record(value, checkpoint)})

    def record(self, value: float, checkpoint: Any) -> dict[str, Any]:
        return {
            "state": "collapsed" if self.collapsed else "recovered",
            "metric": self.metric,
            "value": value,
            "best": self.best,
            "best_iteration": self.best_iteration,
            "factor": self.factor,
            "best_checkpoint": str(checkpoint) if checkpoint else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iteration": self.best_iteration, "collapsed": self.collapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_iteration = int(state["best_iteration"])
        self.collapsed = bool(state["collapsed"])
