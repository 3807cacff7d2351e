"""GracefulStop: a signal stops the engine at the next iteration boundary, and the old handlers come back."""

import os
import signal

import pytest
from ignite.engine import Engine, Events

from handlers.stop import GracefulStop


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """Whatever a test does, leave SIGINT/SIGTERM as pytest had them."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def previous_handler(signum, frame):
    raise AssertionError("the handler in place before GracefulStop must not be called while it is active")


def counting_engine() -> tuple[Engine, list[str]]:
    events: list[str] = []
    engine = Engine(lambda engine, batch: {"loss": float(batch)})
    engine.add_event_handler(Events.COMPLETED, lambda engine: events.append("completed"))
    return engine, events


def send_at(engine: Engine, iteration: int, signum: int, times: int = 1) -> None:
    @engine.on(Events.ITERATION_COMPLETED(once=iteration))
    def send(engine):
        for _ in range(times):
            os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_after_the_iteration_in_progress_and_restores_the_previous_handler(signum, capsys):
    signal.signal(signum, previous_handler)
    engine, events = counting_engine()
    send_at(engine, 3, signum)  # attached before GracefulStop: the signal arrives while iteration 3 completes

    with GracefulStop(engine) as stop:
        assert signal.getsignal(signum) is not previous_handler
        engine.run([1.0] * 10, max_epochs=1)

    assert engine.state.iteration == 3
    assert events == ["completed"]
    assert stop.signal_name == signal.Signals(signum).name
    assert signal.getsignal(signum) is previous_handler
    assert stop.signal_name in capsys.readouterr().err


def test_both_handlers_are_restored_after_the_block():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    engine, _ = counting_engine()

    with GracefulStop(engine):
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]

    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_without_a_signal_the_run_completes_and_signal_name_stays_none():
    engine, events = counting_engine()

    with GracefulStop(engine) as stop:
        engine.run([1.0] * 5, max_epochs=1)

    assert engine.state.iteration == 5
    assert events == ["completed"]
    assert stop.signal_name is None


def test_a_second_signal_interrupts_at_once_and_handlers_are_still_restored(capsys):
    signal.signal(signal.SIGINT, previous_handler)
    engine, events = counting_engine()
    send_at(engine, 2, signal.SIGINT, times=2)

    with pytest.raises(KeyboardInterrupt), GracefulStop(engine) as stop:
        engine.run([1.0] * 10, max_epochs=1)

    assert stop.signal_name == "SIGINT"
    assert engine.state.iteration == 2
    assert events == []
    assert signal.getsignal(signal.SIGINT) is previous_handler


def test_after_the_block_the_engine_no_longer_watches_for_signals():
    engine, _ = counting_engine()

    with GracefulStop(engine) as stop:
        assert engine.has_event_handler(stop._maybe_terminate, Events.ITERATION_COMPLETED)

    assert not engine.has_event_handler(stop._maybe_terminate, Events.ITERATION_COMPLETED)
    stop.signal_name = "SIGINT"  # a stale flag must not stop a later run of the same engine
    engine.run([1.0] * 4, max_epochs=1)
    assert engine.state.iteration == 4
