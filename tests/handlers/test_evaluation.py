import math

import optuna
import pytest
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping

from handlers.evaluation import PeriodicEvaluation, attach_scheduled_early_stopping
from handlers.metrics_log import MetricsLog, read_records
from handlers.pruning import OptunaPruning


def evaluator_reporting(scores):
    """An evaluator whose n-th run leaves metric ``fid`` = scores[n]."""
    runs = iter(scores)
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.COMPLETED)
    def score(engine):
        engine.state.metrics["fid"] = next(runs)

    return evaluator


def toy_trainer(losses=None):
    return Engine(lambda engine, batch: {"loss": batch if losses is None else losses[engine.state.iteration - 1]})


def test_evaluates_every_n_iterations_and_at_the_end_once(tmp_path):
    trainer = toy_trainer()
    log = MetricsLog(tmp_path / "m.jsonl", every=100)
    PeriodicEvaluation(evaluator_reporting([30.0, 20.0, 10.0, 5.0]), [0], every=3, metrics_log=log).attach(trainer)
    trainer.run([1.0] * 7, max_iters=7)
    assert [(r["iteration"], r["fid"]) for r in read_records(tmp_path / "m.jsonl")] == [(3, 30.0), (6, 20.0), (7, 10.0)]


def test_an_end_on_an_evaluation_iteration_is_not_evaluated_twice(tmp_path):
    trainer = toy_trainer()
    log = MetricsLog(tmp_path / "m.jsonl", every=100)
    PeriodicEvaluation(evaluator_reporting([30.0, 20.0, 10.0]), [0], every=3, metrics_log=log).attach(trainer)
    trainer.run([1.0] * 6, max_iters=6)
    assert [r["iteration"] for r in read_records(tmp_path / "m.jsonl")] == [3, 6]


def test_no_evaluation_of_a_diverged_model(tmp_path):
    trainer = toy_trainer([1.0, 1.0, math.nan])
    log = MetricsLog(tmp_path / "m.jsonl", every=100)
    PeriodicEvaluation(evaluator_reporting([30.0]), [0], every=3, metrics_log=log).attach(trainer)
    trainer.run([0] * 3, max_iters=3)
    assert not (tmp_path / "m.jsonl").exists()


def test_early_stopping_on_the_evaluators_fid_stops_the_trainer(tmp_path):
    trainer = toy_trainer()
    evaluator = evaluator_reporting([30.0, 20.0, 25.0, 26.0, 1.0])
    log = MetricsLog(tmp_path / "m.jsonl", every=100)
    PeriodicEvaluation(evaluator, [0], every=2, metrics_log=log).attach(trainer)
    stopper = EarlyStopping(patience=2, score_function=lambda engine: -engine.state.metrics["fid"], trainer=trainer)
    evaluator.add_event_handler(Events.COMPLETED, stopper)
    trainer.run([1.0] * 20, max_iters=20)
    assert trainer.state.iteration == 8  # evaluations at 2 (30), 4 (20), 6 (25), 8 (26): two without improvement


def test_pruning_reports_at_the_trainer_iteration_and_raises_trial_pruned_out_of_the_run(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=25.0))
    trial = study.ask()
    trainer = toy_trainer()
    evaluator = evaluator_reporting([20.0, 30.0])
    PeriodicEvaluation(evaluator, [0], every=5, metrics_log=MetricsLog(tmp_path / "m.jsonl", 100)).attach(trainer)
    evaluator.add_event_handler(Events.COMPLETED, OptunaPruning(trial, "fid", trainer))
    with pytest.raises(optuna.TrialPruned, match="step 10"):
        trainer.run([1.0] * 20, max_iters=20)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {5: 20.0, 10: 30.0}


def test_pruning_step_can_be_the_epoch_for_epoch_based_tasks():
    study = optuna.create_study()
    trial = study.ask()
    trainer = toy_trainer()
    evaluator = evaluator_reporting([3.0, 2.0])
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run([0]))
    evaluator.add_event_handler(Events.COMPLETED, OptunaPruning(trial, "fid", trainer, step=lambda t: t.state.epoch))
    trainer.run([1.0, 1.0], max_epochs=2)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 3.0, 2: 2.0}


def test_early_stopping_counts_only_scheduled_validations():
    trainer = Engine(lambda engine, batch: None)
    evaluator = Engine(lambda engine, batch: None)
    scores = iter([5.0, 6.0, 7.0, 8.0])
    evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(perplexity=next(scores)))
    stopper = attach_scheduled_early_stopping(evaluator, trainer, 2, lambda e: -e.state.metrics["perplexity"], every=4)
    # validations at iterations 4 (scheduled), 6 (off schedule: a stopped run's last one), 8 (scheduled)
    for iteration in (4, 6, 8):
        trainer.state.iteration = iteration
        evaluator.run([0])
    assert stopper.counter == 1 and not trainer.should_terminate


def test_scipys_singular_matrix_warning_goes_to_the_runs_warnings_log_once_and_others_go_on(tmp_path):
    import warnings

    from scipy.linalg import LinAlgWarning

    evaluator = evaluator_reporting([30.0, 20.0, 10.0])

    @evaluator.on(Events.COMPLETED)
    def singular(engine):
        warnings.warn("Matrix is singular. The result might be inaccurate", LinAlgWarning, stacklevel=1)

    trainer = toy_trainer()
    log = MetricsLog(tmp_path / "metrics.jsonl", every=100)
    PeriodicEvaluation(evaluator, [0], every=2, metrics_log=log).attach(trainer)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        trainer.run([1.0] * 6, max_iters=6)
    assert escaped == []
    lines = (tmp_path / "warnings.log").read_text().splitlines()
    assert lines == ["LinAlgWarning: Matrix is singular. The result might be inaccurate (first at iteration 2)"]

    loud = evaluator_reporting([1.0])
    loud.add_event_handler(Events.COMPLETED, lambda engine: warnings.warn("something to act on", stacklevel=1))
    other = Engine(lambda engine, batch: None)
    PeriodicEvaluation(loud, [0], every=1, metrics_log=log).attach(other)
    with pytest.warns(UserWarning, match="something to act on"):
        other.run([1.0], max_iters=1)
