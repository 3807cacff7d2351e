"""The parts a task hands the standard run, and what the run hands back (``tasks/standard_run.py`` uses them)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from ignite.engine import Engine
from ignite.handlers import TensorboardLogger

from handlers import MetricsLog
from handlers.metrics_log import records_by_iteration
from runner.rundir import RunDirectory
from runner.settings import RunSettings, Schedule, keep_checkpoints_setting, non_negative, positive, setting

AttachToEvaluator = Callable[[Engine, Engine], None]  # (evaluator, trainer): a sweep's pruning


@runtime_checkable
class Closable(Protocol):
    """Data that holds something to let go of when the run ends (a producer thread, emulators, loader workers)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Scoring:
    """What a task's evaluations are judged by: an evaluator metric, its ``metrics.jsonl`` name, which way is
    better, and how the end report shows the best value (``report_digits`` None: not shown)."""

    metric: str
    higher_is_better: bool
    record_prefix: str = "val_"
    report_digits: int | None = 4

    @property
    def record_name(self) -> str:
        return self.record_prefix + self.metric

    def score(self, evaluator: Engine) -> float:
        """Higher is better, as Ignite's ``Checkpoint`` and ``EarlyStopping`` want it."""
        value = float(evaluator.state.metrics[self.metric])
        return value if self.higher_is_better else -value

    def best_recorded(self, metrics_path: Path) -> float | None:
        """The best value a run's evaluations logged (its resumed parts included; NaN and Inf are no score)."""
        records = records_by_iteration(metrics_path).values()
        values = [r[self.record_name] for r in records if isinstance(r.get(self.record_name), int | float)]
        if not values:
            return None
        return max(values) if self.higher_is_better else min(values)


@dataclass
class RunResult:
    exit_code: int
    iteration: int
    epoch: int
    best: float | None  # the task's best evaluation score over the whole run (None: no evaluation, or no scoring)


@dataclass
class Parts:
    """What ``Task.build`` makes for one run."""

    trainer: Engine
    data: Any  # what ``trainer.run`` iterates over
    to_save: dict[str, Any]  # the task's objects a checkpoint holds (the trainer, averages and RNGs are added)
    optional: tuple[str, ...] = ()  # names an older checkpoint may lack; they keep their fresh state
    built: Any = None  # what the task's later hooks need of what build made (its networks, its evaluation data)


@dataclass
class RunContext:
    """What a task's later hooks (``attach_handlers``, ``loaded``, ``finish``) work with: the run, what ``prepare``
    made (``data``) and what ``build`` made (``built``). On a process that does not write (rank > 0) the logs are
    None."""

    trainer: Engine
    run: RunDirectory
    metrics_log: MetricsLog | None
    tb_logger: TensorboardLogger | None
    device: torch.device
    data: Any = None
    built: Any = None

    @property
    def writes(self) -> bool:
        return self.metrics_log is not None


@dataclass
class Attached:
    """What ``Task.attach_handlers`` returns: the evaluator that judges the run (a sweep prunes on it), and the
    handlers whose state a checkpoint must hold (best-score checkpointer, early stopping, lr decay)."""

    evaluator: Engine | None = None
    to_save: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochRunSettings(RunSettings):
    """The fields of a task trained epoch by epoch from a ``DataLoader`` (checkpoints between epochs). A task
    redefines a field to give it its own default or help; the field keeps its place among the flags."""

    max_epochs: int = setting(20, "total epochs, a resumed run continues up to it", check=positive, resume="free")
    log_every: int = setting(50, "iterations between metrics.jsonl records", check=positive, resume="free")
    checkpoint_every: int = setting(1, "epochs between checkpoints", check=positive, resume="free")
    keep_checkpoints: int = keep_checkpoints_setting()
    patience: int = setting(
        0, "stop after this many epochs without a better score (0: never)", check=non_negative, resume="free"
    )
    num_workers: int = setting(0, "data loader worker processes", check=non_negative, resume="free")

    @property
    def schedule(self) -> Schedule:
        return Schedule("epochs", self.max_epochs)
