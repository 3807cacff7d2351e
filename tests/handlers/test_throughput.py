"""Throughput: iterations and samples per second over each logging interval."""

import time

import pytest
from ignite.engine import Engine, Events

from handlers.throughput import Throughput

SLEEP = 0.002  # seconds per iteration: at most 500 iterations per second


def slow_step(engine, batch):
    time.sleep(SLEEP)
    return {"loss": float(batch)}


def record_rates(engine: Engine, every: int) -> dict[int, dict[str, float]]:
    rates: dict[int, dict[str, float]] = {}

    @engine.on(Events.ITERATION_COMPLETED(every=every))
    def record(engine):
        rates[engine.state.iteration] = {
            key: engine.state.metrics[key]
            for key in ("iters_per_sec", "samples_per_sec")
            if key in engine.state.metrics
        }

    return rates


def test_rates_are_positive_bounded_and_samples_are_iterations_times_batch_size():
    engine = Engine(slow_step)
    Throughput(every=3, batch_size=16).attach(engine)

    engine.run([1.0] * 6, max_epochs=1)

    iters_per_sec = engine.state.metrics["iters_per_sec"]
    assert 0 < iters_per_sec < 1000
    assert engine.state.metrics["samples_per_sec"] == pytest.approx(iters_per_sec * 16)


def test_every_interval_gets_its_own_measurement():
    engine = Engine(slow_step)
    Throughput(every=2, batch_size=4).attach(engine)  # attached first: its numbers are ready for later handlers
    rates = record_rates(engine, every=2)

    engine.run([1.0] * 6, max_epochs=1)

    assert sorted(rates) == [2, 4, 6]
    for rate in rates.values():
        assert 0 < rate["iters_per_sec"] < 1000
        assert rate["samples_per_sec"] == pytest.approx(rate["iters_per_sec"] * 4)


def test_no_rate_before_the_first_interval_completes_and_the_last_short_one_is_measured_at_the_end():
    engine = Engine(slow_step)
    Throughput(every=5, batch_size=4).attach(engine)
    during = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: during.append("iters_per_sec" in e.state.metrics))

    engine.run([1.0] * 3, max_epochs=1)

    assert during == [False, False, False]
    assert 0 < engine.state.metrics["iters_per_sec"] < 1000  # the run's 3 iterations, measured when it ended


def test_a_resumed_run_counts_only_the_iterations_it_ran():
    engine = Engine(slow_step)
    Throughput(every=3, batch_size=2).attach(engine)
    rates = record_rates(engine, every=3)
    # As after loading a checkpoint at iteration 100: counting from 0 would report ~100x the true rate.
    engine.load_state_dict({"iteration": 100, "epoch_length": 200, "max_iters": 103})

    engine.run([1.0] * 200)

    assert engine.state.iteration == 103
    assert sorted(rates) == [102]
    assert 0 < rates[102]["iters_per_sec"] < 1000
