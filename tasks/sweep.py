"""Optuna sweeps over a task's hyperparameters that prune, and that survive being killed.

Each trial is a normal run directory (``<output>/trial_0003``) with its own checkpoints and logs. ``--n-trials N``
is the study's total: running the same command again after an interruption continues the same study until N trials
have finished (complete, pruned or failed); running it on a finished study does nothing new. A trial whose process
died is adopted by the next worker on its machine (``runner.studies``) and its run resumes from the trial's own
newest checkpoint, so it ends with the value it would have had.
"""

import contextlib
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from ignite.engine import Engine, Events
from optuna.trial import TrialState

from handlers.pruning import OptunaPruning
from models.book_models import default_hidden
from runner.errors import UserError
from runner.settings import OneLineParser, flag_name, make_settings, parse_flags, positive_int, recipe_defaults
from runner.studies import next_trial, open_storage, open_study, suggest, trial_resume_point
from tasks.atari_fid import load_frame_classifier
from tasks.atari_gan import AtariGanSettings
from tasks.commands import command_line, settings_class, task_class, training_launcher
from tasks.parts import Scoring
from tasks.search_space import SearchSpace, check_same_space, read_space
from tasks.standard_run import Task

FIRST_SIGNAL_EXIT_CODE = 128  # exit codes >= 128: the run stopped on a signal; its trial stays RUNNING, to adopt

# What `sweep.py atari_gan` searches (README: sweeps). Sizes are categorical: powers of two the models accept.
ATARI_GAN_SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
    "beta1": optuna.distributions.FloatDistribution(0.0, 0.9),
    "batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "filters": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "latent_size": optuna.distributions.CategoricalDistribution([32, 64, 100, 128]),
}
# What `sweep.py classify|regress` searches: chapter 003's space (the hidden width applies to both hidden layers).
MLP_SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    "width": optuna.distributions.IntDistribution(20, 300),
}


@dataclass(frozen=True)
class SweepTask:
    """What a sweep needs to know about a task: its run, its settings, what it searches, and its trials' defaults.
    A trial's value is its run's best score (``RunResult.best``), judged and pruned by the task's ``scoring``."""

    task_class: type[Task]
    settings_cls: type
    search_space: dict[str, optuna.distributions.BaseDistribution]
    step: Callable[[Engine], int] = lambda trainer: trainer.state.iteration  # what pruning reports at
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # the sweep's own task defaults
    measured_by: Callable[[Any], str] | None = None  # settings -> what measures the score (a study attribute)

    @property
    def scoring(self) -> Scoring:
        return self.task_class(self.settings_cls()).scoring  # by default settings: its direction is the task's

    @property
    def metric(self) -> str:
        return self.scoring.metric

    @property
    def direction(self) -> str:
        return "maximize" if self.scoring.higher_is_better else "minimize"


def sweep_tasks() -> dict[str, SweepTask]:
    by_epoch = {"step": lambda trainer: trainer.state.epoch}  # chapter 003: pruned after each epoch's validation
    searched = {  # the tasks a sweep can search (tasks.commands' table has the rest of what they are)
        "atari_gan": (ATARI_GAN_SPACE, {"measured_by": fid_classifier}),
        "classify": (MLP_SPACE, {"defaults": {"model": "fashion_mlp"}, **by_epoch}),
        "regress": (MLP_SPACE, {"defaults": {"model": "mlp"}, **by_epoch}),
    }
    return {
        name: SweepTask(task_class(name), settings_class(name), space, **extra)
        for name, (space, extra) in searched.items()
    }


def fid_classifier(settings: AtariGanSettings) -> str:
    """The classifier behind the trials' Atari-FID (made here if it is not cached yet, once for all trials)."""
    return load_frame_classifier(settings.image_size, say=print)[1]["fid_classifier"]


def check_measure(study: optuna.Study, task: SweepTask, settings: Any) -> None:
    """A study keeps what measured its values: a study continued with another measure would compare apples and
    pears (FID from another classifier), and is refused."""
    if task.measured_by is None:
        return
    measure, recorded = task.measured_by(settings), study.user_attrs.get("fid_classifier")
    if recorded is not None and recorded != measure:
        raise UserError(
            f"study '{study.study_name}' was measured by {recorded}, this machine's is {measure}: its values would not "
            "compare; give a new --study-name"
        )
    study.set_user_attr("fid_classifier", measure)


def trial_settings(task: SweepTask, base: dict[str, Any], params: dict[str, Any], run_dir: Path) -> Any:
    return make_settings(task.settings_cls, {**base, **params, "output_dir": str(run_dir), "resume": ""})


def run_trial(
    task: SweepTask, trial: optuna.trial.Trial, base: dict[str, Any], output_dir: Path, space: SearchSpace
) -> int | None:
    """Run (or resume) one trial and report it to the study; returns an exit code when the sweep must stop."""
    study = trial.study
    params = suggest(trial, space.searched)
    run_dir = output_dir / f"trial_{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    checkpoint = trial_resume_point(run_dir)
    settings = trial_settings(task, base, params, run_dir)

    metric = task.task_class(settings).scoring.metric  # a setting may pick it (the Atari GAN's fid_ema)

    def attach_pruning(evaluator: Engine, trainer: Engine) -> None:
        evaluator.add_event_handler(Events.COMPLETED, OptunaPruning(trial, metric, trainer, task.step))

    try:
        result = task.task_class.train(settings, checkpoint, attach_to_evaluator=attach_pruning)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return None
    if result.exit_code >= FIRST_SIGNAL_EXIT_CODE:
        return result.exit_code  # stopped by a signal: leave the trial RUNNING; the next sweep adopts it
    value = result.best
    if result.exit_code != 0 or value is None:
        study.tell(trial, state=TrialState.FAIL)  # e.g. diverged to NaN: a finished trial, with no value
        return None
    study.tell(trial, value)
    return None


def worker(
    task_name: str,
    storage_spec: str,
    study_name: str,
    seed: int,
    n_trials: int,
    base: dict,
    output_dir: Path,
    space: SearchSpace,
    threads: int,
) -> int:
    task = sweep_tasks()[task_name]
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec, output_dir)
    study = open_study(storage, study_name, task.direction, seed)
    while (trial := next_trial(study, storage, n_trials, output_dir, seed)) is not None:
        code = run_trial(task, trial, base, output_dir, space)
        if code is not None:
            return code
    return 0


def run_workers(n_workers: int, args: tuple) -> int:
    """``n_workers`` processes on this machine, each taking trials until the study has enough."""
    if n_workers == 1:
        return worker(*args, 0)
    threads = max(1, (os.cpu_count() or 1) // n_workers)  # K workers share the cores instead of fighting over them
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(*args, threads)) for _ in range(n_workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return max(process.exitcode or 0 for process in processes)


def _worker_process(*args: Any) -> None:
    sys.exit(worker(*args))


def summary(study: optuna.Study, task: SweepTask, base: dict[str, Any], script: str) -> str:
    """Best value and parameters, the command that retrains with them, a table of the trials."""
    trials = study.get_trials(deepcopy=False)
    lines = [f"study {study.study_name!r}: {sum(t.state.is_finished() for t in trials)} finished trials"]
    lines.append(f"{'trial':>5}  {'state':<8} {'value':>12}  params")
    for t in trials:
        value = "" if t.value is None else f"{t.value:.6g}"
        params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        lines.append(f"{t.number:>5}  {t.state.name:<8} {value:>12}  {params}")
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if completed:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, value {best.value:.6g}, params {best.params}")
        flags = {**base, **best.params}
        shown = " ".join(f"{flag_name(k)} {_flag_value(v)}" for k, v in flags.items() if k not in ("output_dir",))
        lines.append(f"retrain: {command_line(script)} {shown}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _flag_value(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def check_flags(task: SweepTask, explicit: dict[str, Any], space: SearchSpace) -> None:
    clash = sorted(set(explicit) & set(space.searched))
    if clash:
        raise UserError(
            f"{', '.join(flag_name(n) for n in clash)}: searched by the sweep; drop the flag (or write a --space "
            "without it)"
        )
    if explicit.get("nproc_per_node", 1) != 1:
        raise UserError("--nproc-per-node: each trial trains in one process; run trials side by side with --n-workers")
    for name in ("resume", "output_dir", "seed"):
        if name in explicit:
            raise UserError(
                f"{flag_name(name)} belongs to the sweep here; each trial gets a run directory in --output-dir"
            )
    if "width" in space.searched:
        model = explicit.get("model", task.settings_cls.__dataclass_fields__["model"].default)
        if default_hidden(model) is None:
            raise UserError(f"--model {model} has no hidden layers for the sweep's width; use an MLP (e.g. mlp)")
    if task.settings_cls.__dataclass_fields__.get("eval_every") is not None and explicit.get("eval_every") == 0:
        raise UserError(f"--eval-every 0: a sweep needs evaluations ({task.metric}) to compare and prune trials")


def main(argv: Sequence[str] | None = None, prog: str = "sweep.py") -> int:
    tasks = sweep_tasks()
    parser = OneLineParser(
        prog=prog,
        description="Optuna sweep over a task's hyperparameters; any other flag goes to the task (see its --help). "
        + " ".join(f"{name}: {SearchSpace(task.search_space).describe()}." for name, task in tasks.items())
        + " --space FILE searches what the file says (--print-space shows the format).",
    )
    parser.add_argument("task", choices=sorted(tasks))
    parser.add_argument("--n-trials", type=positive_int, default=20, help="the study's total of finished trials")
    parser.add_argument("--storage", default="", help="RDB URL or *.journal path (default: <output-dir>/study.db)")
    parser.add_argument("--study-name", default="", help="default: the task's name")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's run")
    parser.add_argument("--n-workers", type=positive_int, default=1, help="worker processes on this machine")
    parser.add_argument("--output-dir", default="", help="default: runs/sweep-<task>-<study name>")
    parser.add_argument(
        "--space", metavar="FILE", help="the search space, YAML or JSON (default: the task's; see --print-space)"
    )
    parser.add_argument("--print-space", action="store_true", help="print the search space as a --space file and exit")
    args, rest = parser.parse_known_args(argv)
    task = tasks[args.task]
    space = read_space(args.space, task.settings_cls) if args.space else SearchSpace(task.search_space)
    if args.print_space:
        print(space.text(), end="")
        return 0
    explicit = {**task.defaults, **parse_flags(task.settings_cls, rest, prog=f"{prog} {args.task}")}
    check_flags(task, explicit, space)
    study_name = args.study_name or args.task
    output_dir = Path(args.output_dir or Path("runs") / f"sweep-{args.task}-{study_name}")
    recipe = recipe_defaults(task.settings_cls, explicit)
    base = {k: v for k, v in {**recipe, **space.fixed}.items() if k not in space.searched}
    base = {**base, **explicit, "seed": args.seed}
    probe = {name: getattr(d, "choices", [getattr(d, "low", None)])[0] for name, d in space.searched.items()}
    probe_settings = trial_settings(task, base, probe, output_dir / "trial_0000")  # refuses bad values before trials
    new_folders = [folder for folder in (output_dir, *output_dir.parents) if not folder.exists()]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output directory {output_dir}: {error.strerror or error}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(open_storage(args.storage, output_dir), study_name, task.direction, args.seed)
    except UserError:
        for folder in new_folders:  # innermost first; a refused storage leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    check_measure(study, task, probe_settings)
    check_same_space(study, space)
    code = run_workers(
        args.n_workers, (args.task, args.storage, study_name, args.seed, args.n_trials, base, output_dir, space)
    )
    print(summary(study, task, base, training_launcher(args.task)))
    if code:
        print(f"sweep stopped (exit code {code}); run the same command again to continue it", file=sys.stderr)
    return code
