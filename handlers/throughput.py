"""Iterations and samples per second over each logging interval, measured with Ignite's ``Timer``.

    Throughput(every=100, batch_size=16).attach(trainer)  # engine.state.metrics["iters_per_sec"], ["samples_per_sec"]

Wall-clock time between two reports, data production and handlers included: what a user waits for. Attach it
before the handlers that report ``engine.state.metrics``.
"""

from ignite.engine import Engine, Events
from ignite.handlers import Timer


class Throughput:
    def __init__(self, every: int, batch_size: int):
        self.every = every
        self.batch_size = batch_size
        self.timer = Timer()
        self._last_iteration = 0

    def attach(self, engine: Engine) -> "Throughput":
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._measure)
        engine.add_event_handler(Events.COMPLETED, self._measure_last)  # the last, shorter interval (MetricsLog's)
        return self

    def _measure_last(self, engine: Engine) -> None:
        if engine.state.iteration % self.every:
            self._measure(engine)

    def _start(self, engine: Engine) -> None:
        self.timer.reset()
        self._last_iteration = engine.state.iteration

    def _measure(self, engine: Engine) -> None:
        seconds = self.timer.value()
        iterations = engine.state.iteration - self._last_iteration
        if seconds > 0 and iterations > 0:
            engine.state.metrics["iters_per_sec"] = iterations / seconds
            engine.state.metrics["samples_per_sec"] = iterations * self.batch_size / seconds
        self.timer.reset()
        self._last_iteration = engine.state.iteration
