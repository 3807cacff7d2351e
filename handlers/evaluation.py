"""Run an evaluator every N training iterations, and once more when the run ends.

    evaluation = PeriodicEvaluation(evaluator, data, every=1000, metrics_log=log, tb_logger=tb).attach(trainer)
    # metrics.jsonl gets {"iteration": 1000, "fid": 143.2}; TensorBoard gets eval/fid at step 1000

Handlers that judge an evaluation (best checkpoint, early stopping, Optuna pruning) attach to the *evaluator's*
``COMPLETED``. Attach this before the trainer's checkpoint handler: a checkpoint then holds the state those handlers
reached at its iteration.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping, TensorboardLogger, global_step_from_engine

from handlers.checkpoint import RunDirSaver, output_is_finite
from handlers.metrics_log import MetricsLog
from handlers.quiet import quiet_library_warnings
from runner.rundir import RunLayout


class PeriodicEvaluation:
    def __init__(
        self,
        evaluator: Engine,
        data: Any,
        every: int,
        metrics_log: MetricsLog | None,
        tb_logger: TensorboardLogger | None = None,
        tag: str = "eval",
        prefix: str = "",
        tb_metric_names: list[str] | str = "all",
        with_records: Callable[[], dict[str, Any]] | None = None,
    ):
        """``prefix`` names the records' keys (``val_`` -> ``val_accuracy``); ``tb_metric_names`` picks the scalar
        metrics for TensorBoard (a confusion matrix is no scalar); ``with_records`` gives what each record also
        holds (what measured it). Without ``metrics_log`` and ``tb_logger`` (the other ranks of a several-process
        run) it only evaluates: its metrics are reduced over the ranks."""
        self.evaluator = evaluator
        self.data = data
        self.every = every
        self.metrics_log = metrics_log
        self.tb_logger = tb_logger
        self.tag = tag
        self.prefix = prefix
        self.tb_metric_names = tb_metric_names
        self.with_records = with_records or dict
        self._last_evaluated = -1

    def attach(self, trainer: Engine) -> "PeriodicEvaluation":
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.every) | Events.COMPLETED, self.evaluate)
        if self.metrics_log is not None:
            # On the evaluator's COMPLETED, before the handlers that judge it: a sweep's pruning raises there, and the
            # evaluation that pruned the trial is recorded all the same.
            self.evaluator.add_event_handler(Events.COMPLETED, self.record, trainer)
        if self.tb_logger is not None:
            self.tb_logger.attach_output_handler(
                self.evaluator,
                event_name=Events.COMPLETED,
                tag=self.tag,
                metric_names=self.tb_metric_names,
                global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
            )
        return self

    def evaluate(self, trainer: Engine) -> None:
        iteration = trainer.state.iteration
        if iteration in (0, self._last_evaluated) or not output_is_finite(trainer.state.output):
            return
        self._last_evaluated = iteration
        log = RunLayout(self.metrics_log.path.parent).warnings if self.metrics_log is not None else None
        with quiet_library_warnings(log, where=f"iteration {iteration}"):
            self.evaluator.run(self.data)

    def record(self, evaluator: Engine, trainer: Engine) -> None:
        metrics = {f"{self.prefix}{name}": value for name, value in evaluator.state.metrics.items()}
        record = {"iteration": trainer.state.iteration, "epoch": trainer.state.epoch, **metrics, **self.with_records()}
        self.metrics_log.write(record)


def keep_best(
    trainer: Engine,
    evaluator: Engine,
    models: dict[str, Any],
    directory: Path,
    score_function: Callable[[Engine], float],
    patience: int,
    prefix: str = "best",
) -> dict[str, Any]:
    """After each evaluation: keep the best-scoring ``models`` as ``<prefix>_<iteration>.pt`` and, with ``patience``,
    stop the trainer after that many evaluations without a better score. Returns the handlers a checkpoint must
    hold (``best_checkpointer`` / ``<prefix>_checkpointer``, ``early_stopping``) so that a resumed run judges on."""
    best = Checkpoint(
        models,
        RunDirSaver(directory),
        filename_pattern=prefix + "_{global_step}.{ext}",
        score_function=score_function,
        n_saved=1,
        global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
    )
    evaluator.add_event_handler(Events.COMPLETED, best)
    state: dict[str, Any] = {f"{prefix}_checkpointer": best}
    if patience:
        state["early_stopping"] = EarlyStopping(patience, score_function, trainer)
        evaluator.add_event_handler(Events.COMPLETED, state["early_stopping"])
    return state


def attach_scheduled_early_stopping(
    evaluator: Engine, trainer: Engine, patience: int, score_function: Callable[[Engine], float], every: int
) -> EarlyStopping:
    """Stop the trainer when ``patience`` scheduled evaluations in a row bring no better score.

    Only evaluations on the schedule (every ``every`` iterations) count: a run stopped by Ctrl-C evaluates once more,
    off schedule, and counting that one would make the resumed run stop at another point than an uninterrupted one.
    Returns the ``EarlyStopping``, whose state a checkpoint must hold.
    """
    stopper = EarlyStopping(patience, score_function, trainer)

    def judge(engine: Engine) -> None:
        if trainer.state.iteration % every == 0:
            stopper(engine)

    evaluator.add_event_handler(Events.COMPLETED, judge)
    return stopper
