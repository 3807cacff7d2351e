"""Chapter 002's convolutional autoencoder (Deep Learning from Scratch, ch. 7): settings and one training run.

``scripts/autoencode.py`` hands its command line to ``runner.cli.launch`` with ``AutoencodeSettings``. The book trains
``models.autoencoder.ConvAutoencoder`` on MNIST scaled to [-1, 1] with MSE and SGD (lr 0.01, momentum 0.9, batch 60,
one epoch), then looks at the codes: a t-SNE of the validation codes shows one cluster per digit, while decoding
uniform random codes gives images that are no digits (the code space is not "smooth": the book's case for GANs).

Besides a run directory's usual files (``config.json``, ``metrics.jsonl`` with ``val_loss`` per epoch, TensorBoard
events, ``checkpoints/``) a run writes

- ``samples/reconstructions_<iteration>.png`` after every evaluation: rows of fixed validation images, each row
  followed by the row of their reconstructions (TensorBoard image ``reconstructions``);
- at the end, from the final weights: ``codes.pt`` (every validation code with its label, loads with
  ``torch.load(weights_only=True)``), TensorBoard's projector of the codes (labels and thumbnails),
  ``samples/tsne_<iteration>.png`` and ``samples/random_codes_<iteration>.png``. Resuming a finished run writes
  them if they are missing (a run killed after its last checkpoint).

Resume is exact at epoch boundaries, as for the supervised tasks (``tasks/supervised.py``). The end-of-run figures
are ``handlers.codes``; the reconstruction sheets ``handlers.images.ReconstructionSheets``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ignite.metrics import Loss
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from datasets.shuffle import shuffled_loader
from datasets.supervised import SYMMETRIC_NORMALIZE, load_digits_data, load_fashion_mnist, load_mnist
from engines.supervised import create_supervised_evaluator_for, create_supervised_trainer_for
from handlers.checkpoint import GeneratorState
from handlers.codes import CodeFigures, first_images
from handlers.evaluation import PeriodicEvaluation, keep_best
from handlers.images import ReconstructionSheets
from models.autoencoder import ConvAutoencoder
from runner.checkpoint_files import ResumePoint
from runner.errors import UserError
from runner.rundir import RunDirectory
from runner.settings import (
    at_least_two,
    in_open_unit_interval,
    non_negative,
    positive,
    positive_sizes,
    setting,
)
from tasks.parts import Attached, EpochRunSettings, Parts, RunContext, Scoring
from tasks.standard_run import Task, watch_hint

DIGITS_SIZE = 28  # the digits' default side: MNIST's
SHEET_IMAGES = 32  # validation images on each reconstruction sheet
# Epochs per data set: the book's one for MNIST (1,000 iterations of 60); the 1,438 upscaled digits need more passes.
DATASET_EPOCHS = {"digits": 20, "mnist": 1, "fashion_mnist": 1}


@dataclass
class ImageData:
    train: Dataset  # items are (image in [-1, 1], label)
    valid: Dataset
    image_shape: tuple[int, int, int]  # (channels, side, side)
    class_names: list[str]


def digits_images(settings: "AutoencodeSettings") -> ImageData:
    """scikit-learn's digits (offline), bilinearly upscaled from 8x8 (to MNIST's 28x28 by default, so the book's
    layers apply unchanged) and scaled from [0, 1] to [-1, 1]."""
    digits = load_digits_data(seed=settings.seed)
    side = settings.digits_size

    def upscale(split: TensorDataset) -> TensorDataset:
        images, labels = split.tensors
        # Bilinear weights are convex: the pixels stay in [0, 1], so the tanh output can reach every one of them.
        large = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        return TensorDataset(large * 2 - 1, labels)

    return ImageData(upscale(digits.train), upscale(digits.valid), (1, side, side), digits.class_names)


def torchvision_images(loader: Callable[..., Any], settings: "AutoencodeSettings") -> ImageData:
    """MNIST or Fashion-MNIST as the book scales them: pixels 0..255 -> [-1, 1] (the test set validates)."""
    data = loader(settings.data_dir or None, settings.seed, normalize=SYMMETRIC_NORMALIZE)
    return ImageData(data.train, data.valid, data.input_shape, data.class_names)


IMAGE_DATASETS: dict[str, Callable[["AutoencodeSettings"], ImageData]] = {
    "digits": digits_images,
    "mnist": partial(torchvision_images, load_mnist),
    "fashion_mnist": partial(torchvision_images, load_fashion_mnist),
}


def known_dataset(name: str) -> None:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"choose one of {', '.join(IMAGE_DATASETS)}")


def odd(value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError("must be a positive odd number (a 'same' padding keeps the image size only then)")


@dataclass(frozen=True)
class AutoencodeSettings(EpochRunSettings):
    seed: int = setting(0, "seeds the weights, the split, the shuffling and the random codes", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/autoencode-<date>-<time>)", resume="free")
    # how long, how often
    max_epochs: int = setting(
        20,
        "total epochs, a resumed run continues up to it (the data set's recipe: 20 on digits, the book's 1 on MNIST)",
        check=positive,
        resume="free",
    )
    patience: int = setting(
        0, "stop after this many epochs without a lower val_loss (0: never)", check=non_negative, resume="free"
    )
    embed_points: int = setting(
        10_000,
        "validation codes in the t-SNE plot and TensorBoard's projector (all are saved in codes.pt)",
        check=at_least_two,
        resume="free",
    )
    # data
    dataset: str = setting("digits", "digits (offline, upscaled), mnist or fashion_mnist", check=known_dataset)
    data_dir: str = setting("", "folder with a local copy of MNIST (downloaded there when online)", resume="free")
    digits_size: int = setting(
        DIGITS_SIZE, "side the 8x8 digits are upscaled to (28: MNIST's, the book's model)", check=positive
    )
    # model: the book's sizes
    conv_widths: tuple[int, ...] = setting(
        (14, 7), "channels of the encoder's convolutions (the decoder mirrors them)", check=positive_sizes
    )
    code_size: int = setting(28, "length of the code between encoder and decoder", check=positive)
    kernel_size: int = setting(5, "side of every convolution kernel", check=odd)
    # optimization: the book's
    lr: float = setting(0.01, "SGD learning rate", check=positive)
    momentum: float = setting(0.9, "SGD momentum", check=in_open_unit_interval)
    batch_size: int = setting(60, "images per batch", check=positive)

    def validate(self) -> None:
        if not self.conv_widths:
            raise ValueError("--conv-widths: give at least one width")
        if self.dataset != "digits" and self.digits_size != DIGITS_SIZE:
            raise ValueError(f"--digits-size applies to --dataset digits only, not {self.dataset}")

    @classmethod
    def recipe_defaults(cls, explicit: dict[str, Any]) -> dict[str, Any]:
        """The chosen data set's number of epochs (applied under the flags the user gave)."""
        dataset = explicit.get("dataset", cls.__dataclass_fields__["dataset"].default)
        return {"max_epochs": DATASET_EPOCHS[dataset]} if dataset in DATASET_EPOCHS else {}


class AsOwnTarget(Dataset):
    """``(image, label)`` items as ``(image, image)``: an autoencoder's target is its input."""

    def __init__(self, labelled: Dataset):
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, _ = self.labelled[index]
        return image, image


def load_images(settings: AutoencodeSettings) -> ImageData:
    try:
        return IMAGE_DATASETS[settings.dataset](settings)
    except ValueError as error:
        raise UserError(f"--dataset {settings.dataset}: {error}") from None


def build_autoencoder(settings: AutoencodeSettings, image_shape: tuple[int, int, int]) -> ConvAutoencoder:
    channels, side, _ = image_shape
    return ConvAutoencoder(side, channels, settings.conv_widths, settings.code_size, settings.kernel_size)


@dataclass(frozen=True)
class BuiltAutoencoder:
    """What the autoencoder's later hooks need of what ``build`` made."""

    model: ConvAutoencoder
    valid_loader: DataLoader
    epoch_length: int


class Autoencode(Task):
    """The book's autoencoder, trained epoch by epoch on images as their own targets; its codes drawn at the end."""

    per_epoch = True
    scoring = Scoring("loss", higher_is_better=False)  # the validation MSE, recorded as val_loss

    def prepare(self, device: torch.device, resume: ResumePoint | None) -> ImageData:
        return load_images(self.settings)

    def build(self, data: ImageData, device: torch.device) -> Parts:
        settings = self.settings
        model = build_autoencoder(settings, data.image_shape).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
        shuffle = torch.Generator().manual_seed(settings.seed)
        workers = settings.num_workers
        train_loader = shuffled_loader(AsOwnTarget(data.train), settings.batch_size, shuffle, workers)
        valid_loader = DataLoader(AsOwnTarget(data.valid), max(256, settings.batch_size), num_workers=workers)
        trainer = create_supervised_trainer_for(model, optimizer, torch.nn.MSELoss(), device)
        to_save = {"model": model, "optimizer": optimizer, "shuffle": GeneratorState(shuffle)}
        return Parts(trainer, train_loader, to_save, built=BuiltAutoencoder(model, valid_loader, len(train_loader)))

    def attach_handlers(self, context: RunContext) -> Attached:
        """Validation after every epoch with its reconstruction sheet, the lowest-val_loss weights kept as
        ``best_<iteration>.pt``, early stopping if asked."""
        settings, trainer, built = self.settings, context.trainer, context.built
        metrics = {"loss": Loss(torch.nn.MSELoss())}
        evaluator = create_supervised_evaluator_for(built.model, metrics, context.device)
        PeriodicEvaluation(
            evaluator, built.valid_loader, built.epoch_length, context.metrics_log, context.tb_logger, prefix="val_"
        ).attach(trainer)
        sheet_images = first_images(context.data.valid, SHEET_IMAGES)
        ReconstructionSheets(built.model, sheet_images, context.run.samples, trainer, context.tb_logger).attach(
            evaluator
        )
        state = keep_best(
            trainer, evaluator, {"model": built.model}, context.run.checkpoints, self.scoring.score, settings.patience
        )
        return Attached(evaluator, state)

    def finish(self, context: RunContext) -> None:
        iteration = context.trainer.state.iteration
        figures = code_figures(self.settings, context.data)
        figures.write(context.built.model, context.run.path, iteration, context.tb_logger.writer, context.device)

    def finished_already(self, resume: ResumePoint, device: torch.device) -> None:
        """A run whose training is over but whose end figures are missing (killed after its last checkpoint) gets
        them from the checkpoint's weights."""
        if CodeFigures.written(resume.run_dir, resume.iteration):
            return
        with RunDirectory.open(resume.run_dir, continuing=True) as run:
            data = load_images(self.settings)
            model = build_autoencoder(self.settings, data.image_shape)
            model.load_state_dict(resume.state["model"])
            writer = SummaryWriter(str(run.path))
            try:
                code_figures(self.settings, data).write(model.to(device), run.path, resume.iteration, writer, device)
            finally:
                writer.close()

    def stop_reason(self) -> str:
        return f"stopped early (no better val_loss in {self.settings.patience} epochs)"

    def hints(self, run_path: Path, exit_code: int) -> list[str]:
        lines = [watch_hint(run_path)]
        if exit_code == 0:
            figures = f"{run_path / 'samples'} (reconstructions, tsne, random_codes)"
            lines.append(f"  figures:  {figures}; codes in {run_path / 'codes.pt'}")
        return lines


def code_figures(settings: AutoencodeSettings, data: ImageData) -> CodeFigures:
    return CodeFigures(
        data.valid, data.class_names, settings.seed, settings.embed_points, max(256, settings.batch_size)
    )


train = Autoencode.train
