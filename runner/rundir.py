"""One folder per run: ``config.json`` (written first), ``metrics.jsonl``, TensorBoard event files, ``checkpoints/``,
``samples/``. A resumed run appends to its own folder; nothing in it is truncated or overwritten.

Opening a run directory takes an exclusive lock on ``<run>/.lock`` for the life of the process: a second process
started on the same folder is refused instead of interleaving its writes. Processes forked while it is held (data
loader workers) close their copy of the lock at once: a run killed with SIGKILL can be resumed at once, without
waiting for its orphaned workers to notice and exit.

    with RunDirectory.open("runs/gan", continuing=False) as run:
        run.write_config(settings_dict(settings))
"""

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.errors import UserError
from runner.files import TEMPORARY_SUFFIX, write_atomically

CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints (runner.checkpoint_files finds them by it)
_held_locks: set[int] = set()  # this process's run-directory lock descriptors


def _drop_inherited_locks() -> None:
    """In a forked child: close the parent's lock descriptors. The parent's lock stands (it keeps its own
    descriptor), and it ends with the parent: a flock lasts as long as any process holds a descriptor of it."""
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@dataclass(frozen=True)
class RunLayout:
    """Where each file of a run directory lives: the one place that names them. A reader of a finished run (plots,
    compare, verify_resume) uses it as it is; ``RunDirectory`` is the same layout, opened and locked for writing.

        RunLayout(Path("runs/gan")).metrics   # runs/gan/metrics.jsonl
    """

    path: Path

    @property
    def config(self) -> Path:  # the settings, written first
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:  # one JSON record per logged iteration or evaluation
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def samples(self) -> Path:  # sample sheets, <tag>_<iteration>.png
        return self.path / "samples"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def kernel_plan(self) -> Path:  # the CPU kernels chosen for each convolution (engines.kernel_plan)
        return self.path / "kernel_plan.json"

    @property
    def warnings(self) -> Path:  # library warnings that say nothing to a user, once each (handlers.quiet)
        return self.path / "warnings.log"

    def holds_run(self) -> bool:
        return self.config.exists() or self.metrics.exists() or self.checkpoints.exists()


def default_output_dir(task: str) -> str:
    return str(Path("runs") / f"{task}-{datetime.now():%Y%m%d-%H%M%S}")


def write_json_atomically(path: Path, data: Any) -> None:
    write_atomically(path, (json.dumps(data, indent=2) + "\n").encode())


class RunDirectory:
    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self.layout = layout = RunLayout(path)
        self.config_path, self.metrics_path = layout.config, layout.metrics
        self.checkpoints, self.samples = layout.checkpoints, layout.samples
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, path: str | Path, continuing: bool) -> "RunDirectory":
        """Create (or, when ``continuing``, reopen) a run directory and lock it.

        A folder that already holds a run is only reopened to continue that run: starting a new run there would mix
        two runs' logs and rotate away the other run's checkpoints.
        """
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create output directory {path}: {error.strerror or error}") from None
        if not path.is_dir():
            raise UserError(f"output directory {path} exists and is not a directory")
        lock_fd = cls._lock(path)
        run = cls(path, lock_fd)
        if not continuing and run.holds_run():
            run.close()
            raise UserError(
                f"{path} already holds a run; continue it with --resume {path} or pick another --output-dir"
            )
        run._remove_partial_writes()
        return run

    @staticmethod
    def _lock(path: Path) -> int:
        try:
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot write to output directory {path}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{path} is in use by another running process") from None
        _held_locks.add(fd)
        return fd

    def holds_run(self) -> bool:
        return self.layout.holds_run()

    def _remove_partial_writes(self) -> None:
        """Temp files of atomic writes that a killed process never renamed (we hold the lock: nobody else writes)."""
        folders = (self.path, self.checkpoints, self.samples, self.layout.export, self.layout.plots)
        patterns = [(folder, "*" + TEMPORARY_SUFFIX) for folder in folders]
        patterns.append((self.checkpoints, "tmp*"))  # ignite's own DiskSaver names them so (older runs)
        for folder, pattern in patterns:
            if folder.is_dir():
                for leftover in folder.glob(pattern):
                    if leftover.is_file() and not leftover.name.endswith(".pt"):
                        leftover.unlink()

    def write_config(self, settings: dict[str, Any]) -> None:
        """``config.json`` describes the run as first started; a continuing run leaves it as it is."""
        if not self.config_path.exists():
            write_json_atomically(self.config_path, settings)

    def close(self) -> None:
        if self._lock_fd >= 0:
            _held_locks.discard(self._lock_fd)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
