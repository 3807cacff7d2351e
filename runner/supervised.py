"""The books' supervised tasks (classifiers and regressions): settings and the composition of one training run.

``scripts/classify.py`` and ``scripts/regress.py`` hand their command lines to ``runner.cli.launch`` with
``ClassifySettings`` / ``RegressSettings``. A model's book settings (optimizer, learning rate, batch size, epochs)
are its *recipe*: picking ``--model lenet`` brings chapter 004's SGD(lr 0.001, momentum 0.9), batch 4, 2 epochs,
unless the flags say otherwise.

Resume is exact at epoch boundaries: the data loader shuffles with its own generator, whose state is in every
checkpoint, and checkpoints are written between epochs only (a run stopped inside an epoch continues from the last
epoch end).

With ``--nproc-per-node N`` (or torchrun) the model trains under DistributedDataParallel: a DistributedSampler gives
each process its share of every epoch's shuffle (a function of the seed and the epoch, so resume stays exact), the
global ``--batch-size`` is split over the processes, and each evaluates a disjoint share of the validation set whose
metrics Ignite reduces over the processes: they are the whole set's.
"""

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import optuna
import torch
from ignite.engine import Engine, Events
from ignite.handlers import TerminateOnNan
from torch.utils.data import DataLoader, DistributedSampler, Subset

from datasets.supervised import load_dataset
from engines.supervised import (
    AuxiliaryLoss,
    call_model,
    classification_metrics,
    create_supervised_evaluator_for,
    create_supervised_trainer_for,
    regression_metrics,
)
from handlers import ExactResume, GracefulStop, MetricsLog, Throughput, attach_progress, output_is_finite
from handlers.checkpoint import GeneratorState, run_dir_of_checkpoint
from handlers.evaluation import PeriodicEvaluation, keep_best
from handlers.logging import attach_running_averages, attach_tensorboard
from handlers.lr_decay import DecayOnRise
from handlers.metrics_log import records_by_iteration
from models.book_models import AUX_WEIGHT, MODEL_KINDS, build_model, split_wide_deep
from runner.device import resolve_device
from runner.distributed import (
    is_main_process,
    open_run_directory,
    rank_batch_size,
    rank_device,
    rank_seed,
    world_size,
    wrap_model,
)
from runner.errors import UserError, say
from runner.export import export_model
from runner.rng import seed_everything
from runner.settings import in_open_unit_interval, non_negative, positive, setting, settings_dict

# The books' settings per model (seed-tasks.md). Flags given on the command line override them.
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    "linear": {"optimizer": "sgd", "lr": 1e-3, "batch_size": 8, "max_epochs": 20},  # ch. 004 fake data
    "mlp": {"optimizer": "sgd", "lr": 0.02, "batch_size": 32, "max_epochs": 20},  # ch. 003, mini-batch SGD
    "fashion_mlp": {"optimizer": "sgd", "lr": 0.02, "batch_size": 32, "max_epochs": 20},  # ch. 003
    "house_mlp": {"optimizer": "sgd", "lr": 1e-3, "batch_size": 32, "max_epochs": 10},  # ch. 002
    "thermometer_mlp": {"optimizer": "sgd", "lr": 1e-3, "batch_size": 32, "max_epochs": 100},  # ch. 001
    "wide_deep": {"optimizer": "sgd", "lr": 2e-3, "momentum": 0.9, "batch_size": 32, "max_epochs": 20},  # ch. 003
    "mnist_cnn": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 60, "max_epochs": 1},  # ch. 002
    "lenet": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 4, "max_epochs": 2},  # ch. 004
    # ch. 004's Dogs vs Cats config says Adam with lr 0.1, which diverges: 1e-3 with its weight decay and decay rule.
    "alexnet": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "lr_decay": 0.95, "batch_size": 32},
    "resnet34": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "lr_decay": 0.95, "batch_size": 32},
    "small_cnn": {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "max_epochs": 10},
}
OPTIMIZERS = {
    "sgd": lambda params, s: torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay),
    "adam": lambda params, s: torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay),
}
# What scripts/sweep.py searches: chapter 003's space (hidden width applies to both hidden layers).
SEARCH_SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    "width": optuna.distributions.IntDistribution(20, 300),
}


def known_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"choose one of {', '.join(OPTIMIZERS)}")


def factor(value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")


def positive_sizes(sizes: tuple[int, ...]) -> None:
    if any(size < 1 for size in sizes):
        raise ValueError("sizes must be positive")


@dataclass(frozen=True)
class SupervisedSettings:
    kind = "classification"  # class attribute, not a setting: which datasets and models fit
    # where, how long, how often
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N", resume="free")
    seed: int = setting(0, "seeds the weights, the split, the shuffling and dropout", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/<task>-<date>-<time>)", resume="free")
    resume: str = setting("", "continue a run: its directory or one of its checkpoint files", resume="free")
    max_epochs: int = setting(
        20,
        "total epochs, a resumed run continues up to it (default: the model's recipe)",
        check=positive,
        resume="free",
    )
    log_every: int = setting(50, "iterations between metrics.jsonl records", check=positive, resume="free")
    checkpoint_every: int = setting(1, "epochs between checkpoints", check=positive, resume="free")
    keep_checkpoints: int = setting(2, "checkpoints kept on disk", check=positive, resume="free")
    patience: int = setting(0, "stop after this many epochs without a better score (0: never)", check=non_negative,
                            resume="free")  # fmt: skip
    num_workers: int = setting(0, "data loader worker processes", check=non_negative, resume="free")
    # data and model
    dataset: str = setting("digits", "data set (see --help of the task for the list)")
    data_dir: str = setting("", "folder with a local copy of the data set (downloaded there when online)",
                            resume="free")  # fmt: skip
    model: str = setting("small_cnn", "architecture, named after the book's (small_cnn: the offline default)")
    hidden: tuple[int, ...] = setting((), "hidden layer sizes of an MLP (default: the book's)", check=positive_sizes)
    width: int = setting(0, "one size for every hidden layer of an MLP, as chapter 003's sweep (0: unused)",
                         check=non_negative)  # fmt: skip
    # optimization
    optimizer: str = setting("sgd", "sgd or adam (default: the model's recipe)", check=known_optimizer)
    lr: float = setting(0.02, "learning rate (default: the model's recipe)", check=positive)
    momentum: float = setting(0.0, "SGD momentum", check=in_open_unit_interval)
    weight_decay: float = setting(0.0, "L2 weight decay", check=non_negative)
    batch_size: int = setting(32, "examples per batch (default: the model's recipe)", check=positive)
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing (classification)", check=in_open_unit_interval)
    lr_decay: float = setting(1.0, "multiply the lr by this when an epoch's loss rises (1: never)", check=factor)
    # several processes (runner.distributed): --batch-size is the global batch, split evenly over them
    nproc_per_node: int = setting(
        1, "training processes on this machine (DDP via ignite.distributed; gloo on CPU, nccl on CUDA)", check=positive
    )

    def validate(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"--model {self.model}: unknown; choose from {', '.join(sorted(MODEL_KINDS))}")
        if MODEL_KINDS[self.model] not in (self.kind, "both"):
            raise ValueError(f"--model {self.model} is a {MODEL_KINDS[self.model]} model, not for {self.kind}")

    @classmethod
    def recipe(cls, explicit: dict[str, Any]) -> dict[str, Any]:
        """The chosen model's book settings (applied under the flags the user gave)."""
        model = explicit.get("model", cls.__dataclass_fields__["model"].default)
        return dict(MODEL_RECIPES.get(model, {}))

    @property
    def hidden_sizes(self) -> tuple[int, ...] | None:
        if self.width:
            return (self.width, self.width)
        return self.hidden or None


@dataclass(frozen=True)
class ClassifySettings(SupervisedSettings):
    kind = "classification"


@dataclass(frozen=True)
class RegressSettings(SupervisedSettings):
    kind = "regression"
    dataset: str = setting("linear", "data set (see --help of the task for the list)")
    model: str = setting("linear", "architecture, named after the book's")
    lr: float = setting(0.02, "learning rate", check=positive)


@dataclass
class RunResult:
    exit_code: int
    epoch: int
    best_score: float | None  # the best validation accuracy (classification) or RMSE (regression)


@dataclass
class Scoring:
    """What a task kind optimizes: the evaluator metric, its record name, and which way is better."""

    metric: str
    sign: float  # +1: higher is better

    @property
    def record_name(self) -> str:
        return f"val_{self.metric}"

    def score(self, engine: Engine) -> float:
        return self.sign * float(engine.state.metrics[self.metric])


SCORING = {"classification": Scoring("accuracy", 1.0), "regression": Scoring("rmse", -1.0)}


def loss_and_metrics(settings: SupervisedSettings, n_outputs: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    if settings.kind == "classification":
        loss = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        return loss, classification_metrics(torch.nn.CrossEntropyLoss(), n_outputs)
    loss = torch.nn.MSELoss()
    if settings.model == "wide_deep":
        loss = AuxiliaryLoss(loss, AUX_WEIGHT)
    return loss, regression_metrics()


def model_call(settings: SupervisedSettings) -> Callable[[torch.nn.Module, Any], Any]:
    if settings.model == "wide_deep":  # two named inputs, cut from the feature vector as the book does
        return lambda model, x: model(**split_wide_deep(x))
    return call_model


def load_data(settings: SupervisedSettings) -> Any:
    try:
        data = load_dataset(settings.dataset, settings.data_dir or None, settings.seed)
    except ValueError as error:
        raise UserError(f"--dataset {settings.dataset}: {error}") from None
    if data.kind != settings.kind:
        raise UserError(f"--dataset {settings.dataset} is a {data.kind} data set, not for {settings.kind}")
    return data


def make_loaders(
    settings: SupervisedSettings, data: Any, shuffle: torch.Generator
) -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
    """Training and validation loaders: the whole sets with one process, each process's share with several."""
    batch_size, workers = rank_batch_size(settings.batch_size), settings.num_workers
    valid_batch = max(256, batch_size)
    if world_size() == 1:
        train = DataLoader(data.train, batch_size, shuffle=True, generator=shuffle, num_workers=workers)
        return train, DataLoader(data.valid, valid_batch, num_workers=workers), None
    sampler = DistributedSampler(data.train, shuffle=True, seed=settings.seed)  # its order: (seed, epoch)
    train = DataLoader(data.train, batch_size, sampler=sampler, num_workers=workers)
    share = Subset(data.valid, range(idist.get_rank(), len(data.valid), world_size()))  # disjoint, no padding
    return train, DataLoader(share, valid_batch, num_workers=workers), sampler


def checkpoint_epoch(checkpoint: tuple[Path, dict[str, Any]] | None) -> int | None:
    """The epochs a checkpoint has trained (None: no checkpoint). Ignite's engine state holds the iteration; epochs
    are whole here (checkpoints are written between epochs)."""
    if checkpoint is None:
        return None
    engine_state = checkpoint[1]["trainer"]
    return engine_state["iteration"] // engine_state["epoch_length"]


def train(
    settings: SupervisedSettings,
    checkpoint: tuple[Path, dict[str, Any]] | None = None,
    attach_to_evaluator: Callable[[Engine, Engine], None] | None = None,
) -> RunResult:
    device = rank_device(resolve_device(settings.dev))
    resumed_epoch = checkpoint_epoch(checkpoint)
    if resumed_epoch is not None and resumed_epoch >= settings.max_epochs:
        if is_main_process():
            say(f"nothing to do: {checkpoint[0]} is at epoch {resumed_epoch}; raise --max-epochs to train further")
        # A finished run still has its result: a sweep that adopts it after a kill needs its best score.
        metrics_path = run_dir_of_checkpoint(checkpoint[0]) / "metrics.jsonl"
        return RunResult(0, resumed_epoch, best_recorded(metrics_path, SCORING[settings.kind]))
    data = load_data(settings)
    scoring = SCORING[settings.kind]
    run_dir = Path(settings.output_dir)
    continuing = checkpoint is not None and run_dir.resolve() == run_dir_of_checkpoint(checkpoint[0]).resolve()
    with open_run_directory(run_dir, continuing=continuing) as run:
        main = is_main_process()
        if main:
            run.write_config(settings_dict(settings))
        seed_everything(settings.seed)
        try:
            model = build_model(settings.model, data.input_shape, data.n_outputs, settings.hidden_sizes).to(device)
        except ValueError as error:
            raise UserError(f"--model {settings.model} on --dataset {settings.dataset}: {error}") from None
        loss_fn, metrics = loss_and_metrics(settings, data.n_outputs)
        optimizer = OPTIMIZERS[settings.optimizer](model.parameters(), settings)
        shuffle = torch.Generator().manual_seed(settings.seed)
        train_loader, valid_loader, sampler = make_loaders(settings, data, shuffle)
        if world_size() > 1:  # same initial weights everywhere (DDP copies rank 0's), each rank its own dropout
            seed_everything(rank_seed(settings.seed))
        trained = wrap_model(model)
        trainer = create_supervised_trainer_for(trained, optimizer, loss_fn, device, model_call(settings))
        evaluator = create_supervised_evaluator_for(model, metrics, device, model_call(settings))
        if sampler is not None:  # before each epoch's loader is made (Ignite makes it after EPOCH_STARTED)
            trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch - 1))

        # Order matters: metrics and the NaN guard first, then what reports them, checkpoints last.
        averages = attach_running_averages(trainer, ["loss"])
        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())  # the loss is the ranks' mean
        resumed_at = checkpoint[1]["trainer"]["iteration"] if checkpoint else None
        tb_logger = metrics_log = None
        if main:
            Throughput(settings.log_every, settings.batch_size).attach(trainer)
            tb_logger = attach_tensorboard(trainer, run.path, settings.log_every, resumed_at)
            metrics_log = MetricsLog(run.metrics_path, settings.log_every).attach(trainer)
        scalar_metrics = [name for name in metrics if name != "confusion"]
        PeriodicEvaluation(evaluator, valid_loader, len(train_loader), metrics_log, tb_logger, prefix="val_",
                           tb_metric_names=scalar_metrics).attach(trainer)  # fmt: skip
        extra_state = keep_best(trainer, evaluator, {"model": model}, run.checkpoints, scoring.score, settings.patience)
        if settings.lr_decay < 1:
            extra_state["lr_decay"] = DecayOnRise(optimizer, settings.lr_decay).attach(trainer)
        if attach_to_evaluator is not None:
            attach_to_evaluator(evaluator, trainer)
        if main:
            attach_progress(trainer, settings.log_every, ["avg_loss", "iters_per_sec"])
        to_save = {"trainer": trainer, "model": model, "optimizer": optimizer, "shuffle": GeneratorState(shuffle),
                   **averages, **extra_state}  # fmt: skip
        resume = ExactResume(to_save, run.checkpoints, settings.checkpoint_every, settings_dict(settings),
                             max(2, settings.keep_checkpoints), per_epoch=True).attach(trainer)  # fmt: skip
        if checkpoint is not None:
            resume.load(checkpoint[1])
            if main:
                record = {"resumed_from": checkpoint[1]["trainer"]["iteration"], "checkpoint": str(checkpoint[0])}
                metrics_log.write(record)

        try:
            with GracefulStop(trainer) as stop:
                trainer.run(train_loader, max_epochs=settings.max_epochs)
        finally:
            if tb_logger is not None:
                tb_logger.close()
        if not main:
            return RunResult(0, trainer.state.epoch, None)
        best_score = best_recorded(run.metrics_path, scoring)
        if output_is_finite(trainer.state.output) and stop.signal_name is None:
            export_model(model, settings, data, run.path / "export", say)
        exit_code = report_end(trainer.state, settings, stop.signal_name, resume.last_path, run.path, best_score,
                               scoring)  # fmt: skip
        return RunResult(exit_code, trainer.state.epoch, best_score)


def best_recorded(metrics_path: Path, scoring: Scoring) -> float | None:
    values = [r[scoring.record_name] for r in records_by_iteration(metrics_path).values() if scoring.record_name in r]
    if not values:
        return None
    return max(values) if scoring.sign > 0 else min(values)


def report_end(state: Any, settings: SupervisedSettings, signal_name: str | None, last_checkpoint: Path | None,
               run_path: Path, best_score: float | None, scoring: Scoring) -> int:  # fmt: skip
    if not output_is_finite(state.output):
        say(f"training stopped at epoch {state.epoch}: the loss became NaN or infinite; "
            f"the last good checkpoint is {last_checkpoint}")  # fmt: skip
        return 1
    how = f"stopped by {signal_name}" if signal_name else "finished"
    if not signal_name and state.epoch < settings.max_epochs:
        how = f"stopped early (no better {scoring.record_name} in {settings.patience} epochs)"
    shown = "n/a" if best_score is None else f"{best_score:.4f}"
    say(f"{how} at epoch {state.epoch}; best {scoring.record_name} {shown}; checkpoint {last_checkpoint}")
    say(f"  watch:    tensorboard --logdir {run_path} --host 127.0.0.1")
    return 128 + signal.Signals[signal_name].value if signal_name else 0
