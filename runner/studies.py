"""Optuna studies that several worker processes, on one machine or several, share without losing or repeating a
trial: storages, the study's lock, and the trials of workers that died.

    storage = open_storage("", output_dir)                    # SQLite in the output folder (or a URL, a .journal)
    study = open_study(storage, "atari_gan", "minimize", seed=0)
    while (trial := next_trial(study, storage, n_trials, output_dir, seed)) is not None:
        ...                                                   # run it, then study.tell(trial, ...)

Workers count trials and ``ask()`` for new ones under a lock, so they never start trial N+1: on PostgreSQL a database
lock, which serialises the workers of every machine sharing the study; on SQLite and journal files a file lock in the
output folder, for the workers of one machine. A trial whose process died is not failed and asked anew (that would
leave a FAIL behind, and Optuna counts FAIL as finished): the next worker on the same machine *adopts* it, with its
number and parameters. A trial is recognised as orphaned when its recorded machine is this one and its recorded
process is gone; a trial killed on machine A waits, RUNNING, until a worker is started again on A.
"""

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from runner.checkpoint_files import ResumePoint, find_checkpoint
from runner.errors import UserError

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
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "options": KEEPALIVE,
}


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


def claim(trial: optuna.trial.Trial) -> None:
    for key, value in {**this_machine(), "pid": os.getpid()}.items():
        trial.set_user_attr(key, value)


def running_trial(
    study: optuna.Study, storage: optuna.storages.BaseStorage, frozen: optuna.trial.FrozenTrial
) -> optuna.trial.Trial:
    """The live ``Trial`` of a RUNNING trial, with its number and parameters, through the storage's public API.
    (Optuna's own heartbeat would fail the trial and ask a copy instead: a new number, without the intermediate
    values that the pruner reads.)"""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number))


def next_trial(
    study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int, output_dir: Path, seed: int = 0
) -> optuna.trial.Trial | None:
    """The trial this worker runs next: an orphan to adopt, a new one, or None when the study has enough."""
    with study_lock(storage, study.study_name, output_dir):
        trials = study.get_trials(deepcopy=False)
        for frozen in trials:
            if is_orphaned(frozen):
                trial = running_trial(study, storage, frozen)
                claim(trial)
                return trial
        finished = sum(t.state.is_finished() for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished + running >= n_trials:
            return None
        reseed(study, seed, len(trials))
        trial = study.ask()
        claim(trial)
        return trial


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


def trial_resume_point(run_dir: Path) -> ResumePoint | None:
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
