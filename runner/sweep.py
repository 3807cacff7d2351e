"""Optuna sweeps over a task's hyperparameters that prune, and that survive being killed.

Each trial is a normal run directory (``<output>/trial_0003``) with its own checkpoints and logs. ``--n-trials N``
is the study's total: running the same command again after an interruption continues the same study until N trials
have finished (complete, pruned or failed); running it on a finished study does nothing new.

A trial whose process died is not failed and retried as a new trial (that would leave a FAIL behind, and Optuna
counts FAIL as finished): it is *adopted*. The next worker on the same machine takes the same trial, with the same
number and parameters, and its run resumes from the trial's own newest checkpoint. A trial is recognised as
orphaned when its recorded host is this machine and its recorded process is gone.

Workers count trials and ``ask()`` for new ones under a lock, so they never start trial N+1: on PostgreSQL a database
lock, which serialises the workers of every machine sharing the study; on SQLite and journal files a file lock in the
output folder, for the ``--n-workers K`` of one machine. Orphans are still only adopted on their own machine: a trial
killed on machine A waits, RUNNING, until a worker is started again on A.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import multiprocessing
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from ignite.engine import Engine, Events
from optuna.trial import TrialState

from handlers.checkpoint import find_checkpoint
from handlers.pruning import OptunaPruning
from runner.errors import UserError
from runner.settings import flag_name, make_settings

FIRST_SIGNAL_EXIT_CODE = 128  # exit codes >= 128: the run stopped on a signal; its trial stays RUNNING, to adopt


# What `sweep.py atari_gan` searches (README: sweeps). Sizes are categorical: powers of two the models accept.
# It lives here rather than in runner.atari_gan, so that a plain run does not import optuna.
ATARI_GAN_SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
    "beta1": optuna.distributions.FloatDistribution(0.0, 0.9),
    "batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "filters": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "latent_size": optuna.distributions.CategoricalDistribution([32, 64, 100, 128]),
}


@dataclass(frozen=True)
class SweepTask:
    """What a sweep needs to know about a task."""

    settings_cls: type
    train: Callable[..., Any]  # train(settings, checkpoint, attach_to_evaluator) -> result with exit_code
    search_space: dict[str, optuna.distributions.BaseDistribution]
    direction: str  # "minimize" or "maximize"
    metric: str  # the evaluator metric reported for pruning
    objective: Callable[[Any], float | None]  # the trial's value from the train result
    step: Callable[[Engine], int] = lambda trainer: trainer.state.iteration
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # the sweep's own task defaults


# How to install a missing database driver, by module name. SQLAlchemy 2.1 reads postgresql:// as postgresql+psycopg://
# (psycopg 3; 2.0 read it as +psycopg2).
DRIVER_INSTALLS = {
    "psycopg": 'pip install -e ".[postgres]" (or: pip install "psycopg[binary]")',
    "psycopg2": "pip install psycopg2-binary",
    "MySQLdb": "pip install mysqlclient",
    "pymysql": "pip install pymysql",
}


# A worker that freezes or loses its network while it holds the study's lock (a session lock) must not stop the
# others for the hours a default TCP timeout takes: the server probes each idle connection after 30 s and drops it
# (and with it the lock) after three unanswered probes; the client does the same for a server that went away.
KEEPALIVE = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
POSTGRES_KEEPALIVES = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3, "options": KEEPALIVE,
}  # fmt: skip


def open_storage(spec: str, output_dir: Path) -> optuna.storages.BaseStorage:
    """``''`` -> SQLite in the output folder; ``*.journal`` -> a journal file; ``dialect://...`` -> an RDB URL."""
    if not spec:
        spec = f"sqlite:///{output_dir / 'study.db'}"
    try:
        if spec.endswith(".journal") and "://" not in spec:
            Path(spec).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))
        if "://" in spec:
            if spec.startswith("sqlite:///"):
                Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = {"connect_args": POSTGRES_KEEPALIVES} if spec.startswith("postgresql") else None
            return optuna.storages.RDBStorage(spec, engine_kwargs=engine)
    except ImportError as error:  # Optuna's message names no module; the driver's ImportError, its cause, does
        module = getattr(error.__cause__, "name", None) or error.name or f"a driver for {spec.split(':')[0]}"
        install = DRIVER_INSTALLS.get(module, f"pip install {module}")
        raise UserError(f"--storage {spec}: database driver {module} is not installed; run: {install}") from None
    except (OSError, ValueError) as error:
        raise UserError(f"--storage {spec}: {str(error).splitlines()[0]}") from None
    except Exception as error:  # noqa: BLE001 (SQLAlchemy raises its own error classes for bad URLs)
        raise UserError(
            f"--storage {spec}: cannot open ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    raise UserError(f"--storage {spec}: give an RDB URL (sqlite:///..., postgresql://...) or a path ending in .journal")


def open_study(storage: optuna.storages.BaseStorage, name: str, direction: str, seed: int) -> optuna.Study:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0, interval_steps=1)  # chapter 003's
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, pruner=pruner, load_if_exists=True
        )
    except ValueError as error:
        raise UserError(f"study {name!r}: {error}") from None
    if study.direction.name.lower() != direction:
        raise UserError(f"study {name!r} exists and is to {study.direction.name.lower()}, this task must {direction}")
    reseed(study, seed, len(study.get_trials(deepcopy=False)))
    return study


def reseed(study: optuna.Study, seed: int, trials_so_far: int) -> None:
    """A sampler seeded by the study's size: each new trial draws from its own seed, so workers asking side by
    side suggest different values, a re-run does not replay the first trial's, and a sweep is repeatable."""
    study.sampler = optuna.samplers.TPESampler(seed=seed + trials_so_far)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_line(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def this_machine() -> dict[str, Any]:
    """Who runs a trial: the host (its name and systemd machine id, so that two machines sharing a name are told
    apart), its boot (a process of an earlier boot is gone) and the pid namespace (a container's pids are its own)."""
    try:
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pid_namespace = 0
    return {
        "host": socket.gethostname(),
        "machine_id": first_line("/etc/machine-id"),
        "boot": first_line("/proc/sys/kernel/random/boot_id"),
        "pid_namespace": pid_namespace,
    }


def is_orphaned(trial: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial started on this machine whose process is gone: the machine rebooted since, or the pid is
    dead in this same pid namespace. (A trial of another container on this host, or of another machine, is not.)"""
    attrs, here = trial.user_attrs, this_machine()
    if trial.state != TrialState.RUNNING or attrs.get("pid") is None:
        return False
    if attrs.get("host") != here["host"] or attrs.get("machine_id", here["machine_id"]) != here["machine_id"]:
        return False
    if attrs.get("boot", here["boot"]) != here["boot"]:
        return True
    return attrs.get("pid_namespace", here["pid_namespace"]) == here["pid_namespace"] and not process_alive(
        attrs["pid"]
    )


class SweepLock:
    """One machine's workers take turns counting trials and asking for the next one (a file lock)."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / ".sweep.lock"

    def __enter__(self) -> "SweepLock":
        self.file = open(self.path, "w")  # noqa: SIM115 (held across the with-block)
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()


# A session-level lock taken and released on one connection of the storage's engine; the server drops it if the
# worker dies. MySQL's is written from its manual and untested (CI runs PostgreSQL only).
DATABASE_LOCKS = {
    "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
    "mysql": ("SELECT GET_LOCK(CAST(:key AS CHAR), -1)", "SELECT RELEASE_LOCK(CAST(:key AS CHAR))"),
}


def lock_key(study_name: str) -> int:
    """A stable 63-bit key for the study's database lock (a bigint for PostgreSQL's advisory locks)."""
    digest = hashlib.sha256(f"ignite-book-sweep:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str, output_dir: Path) -> Iterator[None]:
    """Workers take turns counting trials and asking for the next one: those of all machines on a PostgreSQL (or MySQL)
    storage, those of this machine on SQLite or a journal file (a file lock in the output folder)."""
    dialect = storage.engine.dialect.name if isinstance(storage, optuna.storages.RDBStorage) else ""
    if dialect not in DATABASE_LOCKS:
        with SweepLock(output_dir):
            yield
        return
    import sqlalchemy  # Optuna's dependency, already loaded by an RDBStorage

    take, release = (sqlalchemy.text(sql) for sql in DATABASE_LOCKS[dialect])
    key = {"key": lock_key(study_name)}
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(take, key)
        try:
            yield
        finally:
            connection.execute(release, key)  # before the connection goes back to the pool, where the lock would stay


def claim(study: optuna.Study, trial: optuna.trial.Trial) -> None:
    for key, value in {**this_machine(), "pid": os.getpid()}.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)


def next_trial(
    study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int, output_dir: Path, seed: int = 0
) -> optuna.trial.Trial | None:
    """The trial this worker runs next: an orphan to adopt, a new one, or None when the study has enough."""
    with study_lock(storage, study.study_name, output_dir):
        trials = study.get_trials(deepcopy=False)
        for frozen in trials:
            if is_orphaned(frozen):
                trial = optuna.trial.Trial(study, frozen._trial_id)
                claim(study, trial)
                return trial
        finished = sum(t.state.is_finished() for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished + running >= n_trials:
            return None
        reseed(study, seed, len(trials))
        trial = study.ask()
        claim(study, trial)
        return trial


def resume_point(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """An adopted trial resumes from its newest checkpoint; a run killed before its first checkpoint has nothing to
    resume: its folder is moved aside (kept, not deleted) and the trial starts afresh."""
    if not run_dir.exists():
        return None
    try:
        return find_checkpoint(run_dir)
    except UserError:
        attempt = 1
        while (aside := run_dir.with_name(f"{run_dir.name}.interrupted-{attempt}")).exists():
            attempt += 1
        run_dir.rename(aside)
        return None


def trial_settings(task: SweepTask, base: dict[str, Any], params: dict[str, Any], run_dir: Path) -> Any:
    return make_settings(task.settings_cls, {**base, **params, "output_dir": str(run_dir), "resume": ""})


def run_trial(task: SweepTask, trial: optuna.trial.Trial, base: dict[str, Any], output_dir: Path) -> int | None:
    """Run (or resume) one trial and report it to the study; returns an exit code when the sweep must stop."""
    study = trial.study
    params = suggest(trial, task.search_space)
    run_dir = output_dir / f"trial_{trial.number:04d}"
    study._storage.set_trial_user_attr(trial._trial_id, "run_dir", str(run_dir))
    checkpoint = resume_point(run_dir)
    settings = trial_settings(task, base, params, run_dir)

    def attach_pruning(evaluator: Engine, trainer: Engine) -> None:
        evaluator.add_event_handler(Events.COMPLETED, OptunaPruning(trial, task.metric, trainer, task.step))

    try:
        result = task.train(settings, checkpoint, attach_to_evaluator=attach_pruning)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return None
    if result.exit_code >= FIRST_SIGNAL_EXIT_CODE:
        return result.exit_code  # stopped by a signal: leave the trial RUNNING; the next sweep adopts it
    value = task.objective(result)
    if result.exit_code != 0 or value is None:
        study.tell(trial, state=TrialState.FAIL)  # e.g. diverged to NaN: a finished trial, with no value
        return None
    study.tell(trial, value)
    return None


def worker(task_name: str, storage_spec: str, study_name: str, seed: int, n_trials: int, base: dict, output_dir: Path,
           threads: int) -> int:  # fmt: skip
    task = sweep_tasks()[task_name]
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec, output_dir)
    study = open_study(storage, study_name, task.direction, seed)
    while (trial := next_trial(study, storage, n_trials, output_dir, seed)) is not None:
        code = run_trial(task, trial, base, output_dir)
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
        lines.append(f"retrain: python scripts/{script} {shown}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _flag_value(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def suggest(trial: optuna.trial.Trial, space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
    """Parameters for ``trial`` from a search space given as Optuna distributions."""
    params = {}
    for name, distribution in space.items():
        if isinstance(distribution, optuna.distributions.FloatDistribution):
            params[name] = trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
        elif isinstance(distribution, optuna.distributions.IntDistribution):
            params[name] = trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
        else:
            params[name] = trial.suggest_categorical(name, distribution.choices)
    return params


def describe(space: dict[str, optuna.distributions.BaseDistribution]) -> str:
    parts = []
    for name, distribution in space.items():
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            parts.append(f"{name} in {list(distribution.choices)}")
        else:
            scale = " (log)" if distribution.log else ""
            parts.append(f"{name} {distribution.low:g}..{distribution.high:g}{scale}")
    return "; ".join(parts)


def sweep_tasks() -> dict[str, SweepTask]:
    from runner import atari_gan, supervised

    def supervised_task(settings_cls: type, direction: str, metric: str, model: str) -> SweepTask:
        """Chapter 003's sweep: lr and the MLP's hidden width, judged by each epoch's validation score."""
        return SweepTask(
            settings_cls=settings_cls,
            train=supervised.train,
            search_space=supervised.SEARCH_SPACE,
            direction=direction,
            metric=metric,
            objective=lambda result: result.best_score,
            step=lambda trainer: trainer.state.epoch,
            defaults={"model": model},
        )

    return {
        "atari_gan": SweepTask(
            settings_cls=atari_gan.AtariGanSettings,
            train=atari_gan.train,
            search_space=ATARI_GAN_SPACE,
            direction="minimize",
            metric="fid",
            objective=lambda result: result.best_fid,
        ),
        "classify": supervised_task(supervised.ClassifySettings, "maximize", "accuracy", "fashion_mlp"),
        "regress": supervised_task(supervised.RegressSettings, "minimize", "rmse", "mlp"),
    }


def check_flags(task: SweepTask, explicit: dict[str, Any]) -> None:
    clash = sorted(set(explicit) & set(task.search_space))
    if clash:
        raise UserError(f"{', '.join(flag_name(n) for n in clash)}: searched by the sweep; drop the flag")
    if explicit.get("nproc_per_node", 1) != 1:
        raise UserError("--nproc-per-node: each trial trains in one process; run trials side by side with --n-workers")
    for name in ("resume", "output_dir", "seed"):
        if name in explicit:
            raise UserError(
                f"{flag_name(name)} belongs to the sweep here; each trial gets a run directory in --output-dir"
            )
    if "width" in task.search_space:
        from models.book_models import default_hidden

        model = explicit.get("model", task.settings_cls.__dataclass_fields__["model"].default)
        if default_hidden(model) is None:
            raise UserError(f"--model {model} has no hidden layers for the sweep's width; use an MLP (e.g. mlp)")
    if task.settings_cls.__dataclass_fields__.get("eval_every") is not None and explicit.get("eval_every") == 0:
        raise UserError(f"--eval-every 0: a sweep needs evaluations ({task.metric}) to compare and prune trials")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"


def main(argv: Sequence[str] | None = None) -> int:
    from runner.settings import OneLineParser, parse_flags

    tasks = sweep_tasks()
    parser = OneLineParser(
        prog="sweep.py",
        description="Optuna sweep over a task's hyperparameters; any other flag goes to the task (see its --help). "
        + " ".join(f"{name}: {describe(task.search_space)}." for name, task in tasks.items()),
    )
    parser.add_argument("task", choices=sorted(tasks))
    parser.add_argument("--n-trials", type=positive_int, default=20, help="the study's total of finished trials")
    parser.add_argument("--storage", default="", help="RDB URL or *.journal path (default: <output-dir>/study.db)")
    parser.add_argument("--study-name", default="", help="default: the task's name")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's run")
    parser.add_argument("--n-workers", type=positive_int, default=1, help="worker processes on this machine")
    parser.add_argument("--output-dir", default="", help="default: runs/sweep-<task>-<study name>")
    args, rest = parser.parse_known_args(argv)
    task = tasks[args.task]
    explicit = {**task.defaults, **parse_flags(task.settings_cls, rest, prog=f"sweep.py {args.task}")}
    check_flags(task, explicit)
    study_name = args.study_name or args.task
    output_dir = Path(args.output_dir or Path("runs") / f"sweep-{args.task}-{study_name}")
    recipe = task.settings_cls.recipe(explicit) if hasattr(task.settings_cls, "recipe") else {}
    base = {**{k: v for k, v in recipe.items() if k not in task.search_space}, **explicit, "seed": args.seed}
    probe = {name: getattr(d, "choices", [getattr(d, "low", None)])[0] for name, d in task.search_space.items()}
    trial_settings(task, base, probe, output_dir / "trial_0000")  # refuses bad flag values before any trial runs
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
    code = run_workers(
        args.n_workers, (args.task, args.storage, study_name, args.seed, args.n_trials, base, output_dir)
    )
    print(summary(study, task, base, f"{args.task}.py"))
    if code:
        print(f"sweep stopped (exit code {code}); run the same command again to continue it", file=sys.stderr)
    return code
