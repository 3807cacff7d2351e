"""The standard run: what every task's training run does, in the order exact resume depends on, written once.

A task is a ``Task`` subclass that supplies only its own parts: its data, its networks and engine, its sample and
quality handlers, what its end report adds. ``Task.train(settings, resume)`` runs it:

1. **before anything is written**: the device, "nothing to do" for a run already at its limit, and
   ``task.prepare(device)``, which makes the data and refuses what cannot run here (one line, nothing created);
2. **the run directory**, opened and locked (``config.json`` written first), the RNGs seeded, and ``task.build``:
   every process draws the same initial weights, then (with several processes) each its own noise and dropout;
3. **the handlers, in this order**, because a checkpoint must hold the state every other handler reached at its
   iteration, and a resumed run must meet them in the same state:

   - running averages of the process function's outputs (``avg_<key>``) and the NaN guard, first: every handler
     after them sees this iteration's averages, and none runs on a diverged step;
   - throughput, TensorBoard (the run's settings as its HParams) and ``metrics.jsonl`` (on the process that
     writes: rank 0);
   - the task's own sample and quality handlers (``task.attach_handlers``), then a sweep's pruning on its evaluator;
   - progress;
   - ``ExactResume`` last: its checkpoint follows everything above, and loading one restores them all;

4. **the run** under ``GracefulStop`` (Ctrl-C and SIGTERM stop at an iteration boundary with a checkpoint), then
   ``task.finish`` after a run that ended well (exports, end-of-run figures); however it ended, its outcome
   (complete, stopped, pruned or failed, and its best score) goes into its HParams, and ``plots/`` is drawn;
5. **the end report** and its exit code: 0 finished or stopped early, 1 a NaN, 128 + N a signal.
"""

import signal
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from ignite.handlers import TerminateOnNan

from handlers import ExactResume, GracefulStop, MetricsLog, Throughput, attach_progress, output_is_finite
from handlers.hparams import hparam_values, write_outcome, write_session_start
from handlers.logging import attach_running_averages, attach_tensorboard
from handlers.plots import write_run_plots_or_warn
from runner.checkpoint_files import ResumePoint
from runner.device import choose_kernels, host_looks_every, nondeterministic_refusal, resolve_device
from runner.distributed import is_main_process, open_run_directory, rank_device, rank_seed, world_size
from runner.errors import is_pruned_trial, say
from runner.rng import seed_everything
from runner.rundir import RunDirectory, RunLayout
from runner.settings import settings_dict
from tasks.commands import command_line, task_of_settings, training_launcher
from tasks.parts import Attached, AttachToEvaluator, Closable, Parts, RunContext, RunResult, Scoring


class Task:
    """One task's parts. A subclass sets the class attributes and defines ``prepare`` and ``build``; the other
    hooks have defaults. Its settings dataclass has ``max_iters`` (an iteration-based run) or ``max_epochs``."""

    script = ""  # a task outside tasks.commands' table (a test's) names its launcher here; the table's say it there
    loss_keys: tuple[str, ...] = ("loss",)  # process-function outputs averaged as avg_<key>
    scoring: Scoring | None = None  # what its evaluations are judged by
    per_epoch = False  # checkpoints between epochs only (a data loader restarts at each epoch)

    def __init__(self, settings: Any):
        self.settings = settings

    @classmethod
    def train(
        cls, settings: Any, resume: ResumePoint | None = None, attach_to_evaluator: AttachToEvaluator | None = None
    ) -> RunResult:
        """Train (or continue, from ``resume``) one run of this task."""
        return StandardRun(cls(settings), resume, attach_to_evaluator).run()

    # --- hooks ---------------------------------------------------------------------------------------------------

    def prepare(self, device: torch.device, resume: ResumePoint | None) -> Any:
        """The data, made before anything is written: refuse here (``UserError``) what cannot run, or cannot
        continue ``resume``."""
        raise NotImplementedError

    def build(self, data: Any, device: torch.device) -> Parts:
        """Networks, optimizers and the trainer, after the RNGs are seeded; ``Parts.built`` holds what the later
        hooks need of them (they find it, and ``data``, in their ``RunContext``). No hook keeps state on the task."""
        raise NotImplementedError

    def attach_handlers(self, context: RunContext) -> Attached:
        """The task's sample and quality handlers (evaluations, best checkpoint, early stopping)."""
        return Attached()

    def loaded(self, resume: ResumePoint, context: RunContext) -> None:
        """After a checkpoint's state is back in every object."""

    def finish(self, context: RunContext) -> None:
        """After a run that finished or stopped early without a NaN, on the process that writes."""

    def finished_already(self, resume: ResumePoint, device: torch.device) -> None:
        """A resumed run that is at its limit already (``nothing to do``): complete what it may lack."""

    def close(self, data: Any) -> None:
        """The data made by ``prepare`` is no longer needed (a producer thread, emulators)."""
        if isinstance(data, Closable):
            data.close()

    def stop_reason(self) -> str:
        return "stopped early"

    def hints(self, run_path: Path, exit_code: int) -> list[str]:
        """Lines after the end report: how to watch, continue or use the run."""
        return [watch_hint(run_path)]

    def launcher(self) -> str:
        """How this task's training is started, as the hints name it (``char_rnn.py train``)."""
        return self.script or training_launcher(task_of_settings(type(self.settings)))

    # --- how the reports name a point of the run -------------------------------------------------------------------

    def position(self, iteration: int, epoch: int) -> str:
        if self.per_epoch:
            return f"epoch {epoch}"
        if self.settings.schedule.per_iteration:
            return f"iteration {iteration}"
        return f"iteration {iteration} (epoch {epoch})"

    def limit_flag(self) -> str:
        return self.settings.schedule.flag

    def total_iterations(self, epoch_length: int) -> int:
        return self.settings.schedule.total_iterations(epoch_length)


def end_state(output: Any, signal_name: str | None) -> str:
    """How a run that returned ended, as its HParams name it: ``complete`` (finished or stopped early by its own
    rule), ``failed`` (a loss became NaN or infinite) or ``stopped`` (by a signal; it can go on)."""
    if not output_is_finite(output):
        return "failed"
    return "stopped" if signal_name else "complete"


def watch_hint(run_path: Path) -> str:
    return f"  watch:    tensorboard --logdir {run_path} --host 127.0.0.1"


def continue_hint(task: Task, run_path: Path) -> str:
    return f"  continue: {command_line(task.launcher())} --resume {run_path} {task.limit_flag()} N"


class StandardRun:
    """One run of ``task``; ``run()`` returns its ``RunResult``. See the module's docstring for the order."""

    def __init__(self, task: Task, resume: ResumePoint | None, attach_to_evaluator: AttachToEvaluator | None):
        self.task = task
        self.settings = task.settings
        self.resume = resume
        self.attach_to_evaluator = attach_to_evaluator
        self.writes = is_main_process()  # rank 0 owns the run directory

    def run(self) -> RunResult:
        choose_kernels(self.settings.deterministic, self.settings.cudnn_benchmark)  # before CUDA starts
        device = rank_device(resolve_device(self.settings.dev))
        resume = self.resume
        if resume is not None and resume.iteration >= self.task.total_iterations(resume.epoch_length):
            return self.nothing_to_do(resume, device)
        data = self.task.prepare(device, resume)
        try:
            run_dir = Path(self.settings.output_dir)
            continuing = resume is not None and resume.continues_in(run_dir)
            with open_run_directory(run_dir, continuing=continuing) as run:
                return self.train_in(run, data, device)
        finally:
            self.task.close(data)

    def nothing_to_do(self, resume: ResumePoint, device: torch.device) -> RunResult:
        task = self.task
        if self.writes:
            where = task.position(resume.iteration, resume.epoch)
            say(f"nothing to do: {resume.path} is at {where}; raise {task.limit_flag()} to train further")
        task.finished_already(resume, device)
        # A finished run still has its result: a sweep that adopts it after a kill needs its best score.
        best = task.scoring.best_recorded(RunLayout(resume.run_dir).metrics) if task.scoring else None
        return RunResult(0, resume.iteration, resume.epoch, best)

    def train_in(self, run: RunDirectory, data: Any, device: torch.device) -> RunResult:
        if self.writes:
            run.write_config(settings_dict(self.settings))
        seed_everything(self.settings.seed)
        parts = self.task.build(data, device)
        if world_size() > 1:  # the same initial weights everywhere (DDP copies rank 0's), each rank its own draws
            seed_everything(rank_seed(self.settings.seed))
        context, resumer = self.attach(data, parts, run, device)
        trainer = parts.trainer
        state = "failed"  # what an exception leaves, unless it is a sweep's pruning
        try:
            with GracefulStop(trainer) as stop:
                trainer.run(parts.data, **self.run_length())
            ended = end_state(trainer.state.output, stop.signal_name)
            if self.writes and ended == "complete":
                self.task.finish(context)
            state = ended
        except Exception as error:
            if is_pruned_trial(error):
                state = "pruned"
            elif isinstance(error, RuntimeError) and (refusal := nondeterministic_refusal(error)) is not None:
                raise refusal from None
            raise
        finally:
            self.close_tensorboard(context, state)
            if self.writes:
                write_run_plots_or_warn(run.path, say)
        scoring = self.task.scoring
        best = scoring.best_recorded(run.metrics_path) if scoring and self.writes else None
        exit_code = self.report_end(trainer.state, stop.signal_name, resumer.last_path, run.path, best)
        return RunResult(exit_code, trainer.state.iteration, trainer.state.epoch, best)

    def close_tensorboard(self, context: RunContext, state: str) -> None:
        """The run's outcome in its HParams (its state, its best score so far), then the event files closed."""
        if context.tb_logger is None:
            return
        scoring = self.task.scoring
        best = {scoring.record_name: scoring.best_recorded(context.run.metrics_path)} if scoring else {}
        write_outcome(context.tb_logger.writer, context.trainer.state.iteration, state, best)
        context.tb_logger.close()

    def attach(
        self, data: Any, parts: Parts, run: RunDirectory, device: torch.device
    ) -> tuple[RunContext, ExactResume]:
        """The handlers, in the order the module's docstring gives; then the checkpoint's state, if resuming."""
        settings, trainer, resume = self.settings, parts.trainer, self.resume
        averages = attach_running_averages(trainer, self.task.loss_keys, device)
        looks = host_looks_every(device, settings.log_every)  # on a GPU only at log points: no sync per step
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=looks), TerminateOnNan())  # the ranks' mean
        context = RunContext(trainer, run, None, None, device, data, parts.built)
        if self.writes:
            Throughput(settings.log_every, settings.batch_size).attach(trainer)
            resumed_at = resume.iteration if resume is not None else None
            context.tb_logger = attach_tensorboard(trainer, run.path, settings.log_every, resumed_at)
            write_session_start(context.tb_logger.writer, hparam_values(settings_dict(settings)))
            context.metrics_log = MetricsLog(run.metrics_path, settings.log_every).attach(trainer)
        attached = self.task.attach_handlers(context)
        if attached.evaluator is not None and self.attach_to_evaluator is not None:
            self.attach_to_evaluator(attached.evaluator, trainer)
        if self.writes:
            shown = [f"avg_{key}" for key in self.task.loss_keys] + ["iters_per_sec"]
            attach_progress(trainer, settings.log_every, shown, bar_every=looks)
        to_save = {"trainer": trainer, **parts.to_save, **averages, **attached.to_save}
        resumer = ExactResume(
            to_save,
            run.checkpoints,
            settings.checkpoint_every,
            settings_dict(settings),
            settings.keep_checkpoints,
            per_epoch=self.task.per_epoch,
            optional=parts.optional,
            device=device,
        ).attach(trainer)
        if resume is not None:
            resumer.load(resume.state)
            self.task.loaded(resume, context)
            if self.writes:
                if not resume.continues_in(run.path):  # a branch: it starts with the history it left
                    context.metrics_log.carry(RunLayout(resume.run_dir).metrics, resume.iteration)
                context.metrics_log.write({"resumed_from": resume.iteration, "checkpoint": str(resume.path)})
        return context, resumer

    def run_length(self) -> dict[str, Any]:
        return self.settings.schedule.run_arguments(resumed=self.resume is not None)

    def report_end(
        self, state: Any, signal_name: str | None, last_checkpoint: Path | None, run_path: Path, best: float | None
    ) -> int:
        task = self.task
        if not output_is_finite(state.output):
            if self.writes:
                where = f"epoch {state.epoch}" if task.per_epoch else f"iteration {state.iteration}"
                which = "a loss" if len(task.loss_keys) > 1 else "the loss"
                say(
                    f"training stopped at {where}: {which} became NaN or infinite; "
                    f"the last good checkpoint is {last_checkpoint}"
                )
            return 1
        exit_code = 128 + signal.Signals[signal_name].value if signal_name else 0  # the shell's convention: 130, 143
        if not self.writes:
            return exit_code
        if signal_name:
            how = f"stopped by {signal_name}"
        elif state.iteration < task.total_iterations(state.epoch_length):
            how = task.stop_reason()
        else:
            how = "finished"
        say(
            f"{how} at {task.position(state.iteration, state.epoch)}{best_shown(task.scoring, best)}; "
            f"checkpoint {last_checkpoint}"
        )
        for line in task.hints(run_path, exit_code):
            say(line)
        return exit_code


def best_shown(scoring: Scoring | None, best: float | None) -> str:
    if scoring is None or scoring.report_digits is None:
        return ""
    shown = "n/a" if best is None else f"{best:.{scoring.report_digits}f}"
    return f"; best {scoring.record_name} {shown}"
