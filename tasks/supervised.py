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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.metrics import Metric
from torch.utils.data import DataLoader, DistributedSampler, Subset

from datasets.shuffle import shuffled_loader
from datasets.supervised import load_dataset
from engines.supervised import (
    AuxiliaryLoss,
    call_model,
    classification_metrics,
    create_supervised_evaluator_for,
    create_supervised_trainer_for,
    regression_metrics,
)
from handlers.checkpoint import GeneratorState
from handlers.evaluation import PeriodicEvaluation, keep_best
from handlers.lr_decay import DecayOnRise
from models.book_models import AUX_WEIGHT, MODEL_KINDS, build_model, split_wide_deep
from runner.checkpoint_files import ResumePoint
from runner.distributed import rank_batch_size, world_size, wrap_model
from runner.errors import UserError, say
from runner.settings import (
    in_open_unit_interval,
    non_negative,
    positive,
    positive_sizes,
    setting,
)
from tasks.parts import Attached, EpochRunSettings, Parts, RunContext, Scoring
from tasks.predict import export_model
from tasks.standard_run import Task

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


def known_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"choose one of {', '.join(OPTIMIZERS)}")


def factor(value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")


@dataclass(frozen=True)
class SupervisedSettings(EpochRunSettings):
    distributed: ClassVar[bool] = True  # --nproc-per-node
    kind = "classification"  # class attribute, not a setting: which datasets and models fit
    seed: int = setting(0, "seeds the weights, the split, the shuffling and dropout", check=non_negative)
    # how long, how often
    max_epochs: int = setting(
        20,
        "total epochs, a resumed run continues up to it (default: the model's recipe)",
        check=positive,
        resume="free",
    )
    # data and model
    dataset: str = setting("digits", "data set (see --help of the task for the list)")
    data_dir: str = setting(
        "", "folder with a local copy of the data set (downloaded there when online)", resume="free"
    )
    model: str = setting("small_cnn", "architecture, named after the book's (small_cnn: the offline default)")
    hidden: tuple[int, ...] = setting((), "hidden layer sizes of an MLP (default: the book's)", check=positive_sizes)
    width: int = setting(
        0, "one size for every hidden layer of an MLP, as chapter 003's sweep (0: unused)", check=non_negative
    )
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
    def recipe_defaults(cls, explicit: dict[str, Any]) -> dict[str, Any]:
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


SCORING = {
    "classification": Scoring("accuracy", higher_is_better=True),
    "regression": Scoring("rmse", higher_is_better=False),
}


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
        train = shuffled_loader(data.train, batch_size, shuffle, workers)
        return train, DataLoader(data.valid, valid_batch, num_workers=workers), None
    sampler = DistributedSampler(data.train, shuffle=True, seed=settings.seed)  # its order: (seed, epoch)
    train = DataLoader(data.train, batch_size, sampler=sampler, num_workers=workers)
    share = Subset(data.valid, range(idist.get_rank(), len(data.valid), world_size()))  # disjoint, no padding
    return train, DataLoader(share, valid_batch, num_workers=workers), sampler


@dataclass(frozen=True)
class BuiltSupervised:
    """What a supervised task's later hooks need of what ``build`` made."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    metrics: dict[str, Metric]
    valid_loader: DataLoader
    epoch_length: int


class Supervised(Task):
    """A classifier or a regression, trained epoch by epoch; evaluated, checkpointed and exported between epochs."""

    per_epoch = True

    @property
    def scoring(self) -> Scoring:
        return SCORING[self.settings.kind]

    def prepare(self, device: torch.device, resume: ResumePoint | None) -> Any:
        return load_data(self.settings)

    def build(self, data: Any, device: torch.device) -> Parts:
        settings = self.settings
        try:
            model = build_model(settings.model, data.input_shape, data.n_outputs, settings.hidden_sizes).to(device)
        except ValueError as error:
            raise UserError(f"--model {settings.model} on --dataset {settings.dataset}: {error}") from None
        loss_fn, metrics = loss_and_metrics(settings, data.n_outputs)
        optimizer = OPTIMIZERS[settings.optimizer](model.parameters(), settings)
        shuffle = torch.Generator().manual_seed(settings.seed)
        train_loader, valid_loader, sampler = make_loaders(settings, data, shuffle)
        trainer = create_supervised_trainer_for(wrap_model(model), optimizer, loss_fn, device, model_call(settings))
        if sampler is not None:  # before each epoch's loader is made (Ignite makes it after EPOCH_STARTED)
            trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch - 1))
        to_save = {"model": model, "optimizer": optimizer, "shuffle": GeneratorState(shuffle)}
        built = BuiltSupervised(model, optimizer, metrics, valid_loader, len(train_loader))
        return Parts(trainer, train_loader, to_save, built=built)

    def attach_handlers(self, context: RunContext) -> Attached:
        """Validation after every epoch, the best model kept, early stopping and the lr decay rule if asked."""
        settings, trainer, built = self.settings, context.trainer, context.built
        evaluator = create_supervised_evaluator_for(built.model, built.metrics, context.device, model_call(settings))
        scalars = [name for name in built.metrics if name != "confusion"]  # a confusion matrix is no scalar
        PeriodicEvaluation(
            evaluator,
            built.valid_loader,
            built.epoch_length,
            context.metrics_log,
            context.tb_logger,
            prefix="val_",
            tb_metric_names=scalars,
        ).attach(trainer)
        models = {"model": built.model}
        state = keep_best(trainer, evaluator, models, context.run.checkpoints, self.scoring.score, settings.patience)
        if settings.lr_decay < 1:
            state["lr_decay"] = DecayOnRise(built.optimizer, settings.lr_decay).attach(trainer)
        return Attached(evaluator, state)

    def finish(self, context: RunContext) -> None:
        export_model(context.built.model, self.settings, context.data, context.run.path / "export", say)

    def stop_reason(self) -> str:
        return f"stopped early (no better {self.scoring.record_name} in {self.settings.patience} epochs)"


train = Supervised.train
