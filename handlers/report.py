"""What a user sees while a run goes: Ignite's ``ProgressBar`` on a terminal, one plain line per report otherwise.

attach_progress(trainer, every=100, metric_names=["avg_loss_gen", "avg_loss_dis"])
"""

import sys
from collections.abc import Sequence

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar


def _format(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ConsoleReport:
    """Every ``every`` iterations: ``iter 100/50000 | loss_gen 2.31 | ... | iters_per_sec 4.8`` on stdout.

    Shows every key of the process function's output (a dict), then the named metrics.
    """

    def __init__(self, every: int, metric_names: Sequence[str]):
        self.every = every
        self.metric_names = list(metric_names)

    def attach(self, engine: Engine) -> "ConsoleReport":
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.report)
        return self

    def report(self, engine: Engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, dict) else {"output": engine.state.output}
        metrics = {name: engine.state.metrics[name] for name in self.metric_names if name in engine.state.metrics}
        shown = " | ".join(f"{name} {_format(value)}" for name, value in {**output, **metrics}.items())
        total = engine.state.max_iters or (engine.state.epoch_length or 0) * (engine.state.max_epochs or 0) or ""
        print(f"iter {engine.state.iteration}/{total} | {shown}", flush=True)


def attach_progress(
    engine: Engine, every: int, metric_names: Sequence[str], interactive: bool | None = None, bar_every: int = 1
) -> None:
    """A progress bar when stderr is a terminal, redrawn every ``bar_every`` iterations, else plain report lines every
    ``every`` (logs stay readable in files and CI)."""
    if interactive is None:
        interactive = sys.stderr.isatty()
    if interactive:
        event = Events.ITERATION_COMPLETED(every=bar_every)
        ProgressBar(persist=True).attach(engine, metric_names=list(metric_names), event_name=event)
    else:
        ConsoleReport(every, metric_names).attach(engine)
