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

Resume is exact at epoch boundaries, as for the supervised tasks (``runner/supervised.py``).
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger, TerminateOnNan
from ignite.metrics import Loss
from PIL import Image, ImageDraw
from sklearn.manifold import TSNE
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from datasets.supervised import SYMMETRIC_NORMALIZE, load_digits_data, load_fashion_mnist, load_mnist
from engines.supervised import create_supervised_evaluator_for, create_supervised_trainer_for
from handlers import ExactResume, GracefulStop, MetricsLog, Throughput, attach_progress, output_is_finite
from handlers.checkpoint import GeneratorState, run_dir_of_checkpoint
from handlers.evaluation import PeriodicEvaluation, keep_best
from handlers.images import image_grid, save_image_atomically, save_png_atomically
from handlers.logging import attach_running_averages, attach_tensorboard
from models.autoencoder import ConvAutoencoder
from runner.device import resolve_device
from runner.errors import UserError, say
from runner.files import save_atomically
from runner.rng import seed_everything
from runner.rundir import RunDirectory
from runner.settings import at_least_two, in_open_unit_interval, non_negative, positive, setting, settings_dict
from runner.supervised import RunResult, Scoring, best_recorded, checkpoint_epoch, positive_sizes, report_end

DIGITS_SIZE = 28  # the digits' default side: MNIST's
SHEET_IMAGES = 32  # validation images on each reconstruction sheet
SHEET_ROW = 8  # images per row of a sheet
RANDOM_CODES = 16  # uniform random codes decoded at the end (the book decodes 5)
SCORING = Scoring("loss", -1.0)  # the validation MSE, recorded as val_loss; lower is better
# Epochs per data set: the book's one for MNIST (1,000 iterations of 60); the 1,438 upscaled digits need more passes.
DATASET_EPOCHS = {"digits": 20, "mnist": 1, "fashion_mnist": 1}
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
PLOT_SIDE = 640  # the t-SNE plot's drawing area, in pixels; the legend goes to its right
PLOT_MARGIN = 24
LEGEND_WIDTH = 110


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
class AutoencodeSettings:
    # where, how long, how often
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N", resume="free")
    seed: int = setting(0, "seeds the weights, the split, the shuffling and the random codes", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/autoencode-<date>-<time>)", resume="free")
    resume: str = setting("", "continue a run: its directory or one of its checkpoint files", resume="free")
    max_epochs: int = setting(20, "total epochs, a resumed run continues up to it (the data set's recipe: 20 on "
                              "digits, the book's 1 on MNIST)", check=positive, resume="free")  # fmt: skip
    log_every: int = setting(50, "iterations between metrics.jsonl records", check=positive, resume="free")
    checkpoint_every: int = setting(1, "epochs between checkpoints", check=positive, resume="free")
    keep_checkpoints: int = setting(2, "checkpoints kept on disk", check=at_least_two, resume="free")
    patience: int = setting(0, "stop after this many epochs without a lower val_loss (0: never)", check=non_negative,
                            resume="free")  # fmt: skip
    num_workers: int = setting(0, "data loader worker processes", check=non_negative, resume="free")
    embed_points: int = setting(10_000, "validation codes in the t-SNE plot and TensorBoard's projector (all are "
                                "saved in codes.pt)", check=at_least_two, resume="free")  # fmt: skip
    # data
    dataset: str = setting("digits", "digits (offline, upscaled), mnist or fashion_mnist", check=known_dataset)
    data_dir: str = setting("", "folder with a local copy of MNIST (downloaded there when online)", resume="free")
    digits_size: int = setting(DIGITS_SIZE, "side the 8x8 digits are upscaled to (28: MNIST's, the book's model)",
                               check=positive)  # fmt: skip
    # model: the book's sizes
    conv_widths: tuple[int, ...] = setting((14, 7), "channels of the encoder's convolutions (the decoder mirrors "
                                           "them)", check=positive_sizes)  # fmt: skip
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
    def recipe(cls, explicit: dict[str, Any]) -> dict[str, Any]:
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


def first_images(dataset: Dataset, count: int) -> torch.Tensor:
    return torch.stack([dataset[index][0] for index in range(min(count, len(dataset)))])


# --- figures -------------------------------------------------------------------------------------------------------


def pairs_grid(inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """A grid of rows of ``SHEET_ROW`` inputs, each row followed by the row of their reconstructions."""
    per_row = min(SHEET_ROW, inputs.shape[0])
    rows = inputs.shape[0] // per_row
    used = rows * per_row
    pairs = torch.stack([inputs[:used].view(rows, per_row, *inputs.shape[1:]),
                         reconstructions[:used].view(rows, per_row, *inputs.shape[1:])], dim=1)  # fmt: skip
    images = pairs.reshape(2 * used, *inputs.shape[1:])  # input row 0, reconstruction row 0, input row 1, ...
    return make_grid(images.detach().float().cpu(), nrow=per_row, normalize=True, value_range=(-1, 1))


def class_colour(label: int) -> str:
    return TAB10[label % len(TAB10)]


def scatter_plot(points: np.ndarray, labels: np.ndarray, class_names: list[str], title: str) -> Image.Image:
    """2-d points drawn as dots, one colour per label, with a legend (PIL: the project has no matplotlib)."""
    image = Image.new("RGB", (PLOT_SIDE + LEGEND_WIDTH, PLOT_SIDE), "white")
    draw = ImageDraw.Draw(image)
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    pixels = PLOT_MARGIN + (points - low) / span * (PLOT_SIDE - 2 * PLOT_MARGIN)
    pixels[:, 1] = PLOT_SIDE - pixels[:, 1]  # image rows grow downwards, the plot's y upwards
    for (x, y), label in zip(pixels, labels, strict=True):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=class_colour(int(label)))
    draw.text((PLOT_MARGIN, 4), title, fill="black")
    for index, name in enumerate(class_names):
        top = PLOT_MARGIN + 18 * index
        draw.rectangle((PLOT_SIDE + 8, top, PLOT_SIDE + 20, top + 12), fill=class_colour(index))
        draw.text((PLOT_SIDE + 26, top), name, fill="black")
    return image


def tsne_points(codes: np.ndarray, seed: int) -> np.ndarray:
    """The codes embedded in 2-d by t-SNE (perplexity 30, sklearn's default, lowered for very few points)."""
    perplexity = min(30.0, max(1.0, (len(codes) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)


class ReconstructionSheets:
    """After every evaluation: ``samples/reconstructions_<iteration>.png`` of fixed validation images.

        ReconstructionSheets(model, first_images(valid, 32), run.samples, trainer, tb_logger).attach(evaluator)

    The model runs in ``eval()`` under ``no_grad`` on fixed images: a sheet changes no state and draws from no RNG.
    """

    def __init__(self, model: ConvAutoencoder, images: torch.Tensor, directory: Path, trainer: Engine,
                 tb_logger: TensorboardLogger | None = None):  # fmt: skip
        self.model = model
        self.images = images
        self.directory = Path(directory)
        self.trainer = trainer
        self.tb_logger = tb_logger

    def attach(self, evaluator: Engine) -> "ReconstructionSheets":
        evaluator.add_event_handler(Events.COMPLETED, self.write)
        return self

    @torch.no_grad()
    def write(self, _: Engine) -> None:
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            grid = pairs_grid(self.images, self.model(self.images.to(device)))
        finally:
            self.model.train(was_training)
        iteration = self.trainer.state.iteration
        self.directory.mkdir(parents=True, exist_ok=True)
        save_png_atomically(grid, self.directory / f"reconstructions_{iteration:07d}.png")
        if self.tb_logger is not None:
            self.tb_logger.writer.add_image("reconstructions", grid, iteration)


# --- the end of a run: codes, projector, t-SNE, random codes --------------------------------------------------------


@torch.no_grad()
def encode_all(model: ConvAutoencoder, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Every image's code and label, in the data set's order."""
    model.eval()
    codes, labels = [], []
    for images, batch_labels in DataLoader(dataset, batch_size):
        codes.append(model.encode(images.to(device)).cpu())
        labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    return {"codes": torch.cat(codes), "labels": torch.cat(labels)}


@torch.no_grad()
def decode_random_codes(model: ConvAutoencoder, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """The book's test of a smooth code space: uniform codes in [-1, 1] (from their own generator) decoded."""
    model.eval()
    codes = torch.rand(count, model.code_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return model.decode(codes.to(device)).cpu()


def end_outputs_written(run_path: Path, iteration: int) -> bool:
    figures = [run_path / "samples" / f"{name}_{iteration:07d}.png" for name in ("random_codes", "tsne")]
    if not all(path.exists() for path in figures) or not (run_path / "codes.pt").exists():
        return False
    return torch.load(run_path / "codes.pt", weights_only=True).get("iteration") == iteration


def write_end_outputs(model: ConvAutoencoder, data: ImageData, settings: AutoencodeSettings, run_path: Path,
                      iteration: int, writer: SummaryWriter, device: torch.device) -> None:  # fmt: skip
    """``codes.pt``, TensorBoard's projector, the t-SNE plot and the random codes' sheet, for the weights of
    ``iteration``. The t-SNE plot is written last: when it exists, everything does."""
    encoded = encode_all(model, data.valid, max(256, settings.batch_size), device)
    record = {**encoded, "class_names": list(data.class_names), "iteration": iteration}
    save_atomically(record, run_path / "codes.pt")

    shown = min(settings.embed_points, len(encoded["codes"]))
    codes, labels = encoded["codes"][:shown], encoded["labels"][:shown]
    projector_dir = run_path / f"{iteration:05d}" / "codes"  # where add_embedding writes (global_step/tag)
    shutil.rmtree(projector_dir, ignore_errors=True)  # a killed earlier attempt's files
    thumbnails = (first_images(data.valid, shown) + 1) / 2  # the projector's sprite wants [0, 1]
    names = [data.class_names[label] for label in labels.tolist()]
    writer.add_embedding(codes, metadata=names, label_img=thumbnails, global_step=iteration, tag="codes")

    samples = run_path / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    random_grid = image_grid(decode_random_codes(model, RANDOM_CODES, settings.seed, device))
    save_png_atomically(random_grid, samples / f"random_codes_{iteration:07d}.png")
    writer.add_image("random_codes", random_grid, iteration)

    say(f"t-SNE of {shown} validation codes...")
    plot = scatter_plot(tsne_points(codes.numpy(), settings.seed), labels.numpy(), data.class_names,
                        f"t-SNE of {shown} {settings.code_size}-d validation codes, iteration {iteration}")  # fmt: skip
    save_image_atomically(plot, samples / f"tsne_{iteration:07d}.png")
    writer.add_image("tsne", np.asarray(plot), iteration, dataformats="HWC")


def complete_finished_run(settings: AutoencodeSettings, checkpoint: tuple[Path, dict[str, Any]],
                          device: torch.device) -> None:  # fmt: skip
    """A run whose training is over but whose end outputs are missing (killed after its last checkpoint) gets them
    from the checkpoint's weights."""
    run_path = run_dir_of_checkpoint(checkpoint[0])
    iteration = checkpoint[1]["trainer"]["iteration"]
    if end_outputs_written(run_path, iteration):
        return
    with RunDirectory.open(run_path, continuing=True) as run:
        data = load_images(settings)
        model = build_autoencoder(settings, data.image_shape)
        model.load_state_dict(checkpoint[1]["model"])
        writer = SummaryWriter(str(run.path))
        try:
            write_end_outputs(model.to(device), data, settings, run.path, iteration, writer, device)
        finally:
            writer.close()


# --- one training run ----------------------------------------------------------------------------------------------


def attach_evaluation(trainer: Engine, evaluator: Engine, model: ConvAutoencoder, settings: AutoencodeSettings,
                      run: RunDirectory) -> dict[str, Any]:  # fmt: skip
    """The lowest-val_loss weights kept as ``best_<iteration>.pt``, early stopping if asked; returns the objects
    whose state a checkpoint must hold."""
    state = keep_best(trainer, evaluator, {"model": model}, run.checkpoints, SCORING.score, settings.patience)
    return state


def train(settings: AutoencodeSettings, checkpoint: tuple[Path, dict[str, Any]] | None = None) -> RunResult:
    device = resolve_device(settings.dev)
    resumed_epoch = checkpoint_epoch(checkpoint)
    if resumed_epoch is not None and resumed_epoch >= settings.max_epochs:
        say(f"nothing to do: {checkpoint[0]} is at epoch {resumed_epoch}; raise --max-epochs to train further")
        complete_finished_run(settings, checkpoint, device)
        metrics_path = run_dir_of_checkpoint(checkpoint[0]) / "metrics.jsonl"
        return RunResult(0, resumed_epoch, best_recorded(metrics_path, SCORING))
    data = load_images(settings)
    run_dir = Path(settings.output_dir)
    continuing = checkpoint is not None and run_dir.resolve() == run_dir_of_checkpoint(checkpoint[0]).resolve()
    with RunDirectory.open(run_dir, continuing=continuing) as run:
        run.write_config(settings_dict(settings))
        seed_everything(settings.seed)
        model = build_autoencoder(settings, data.image_shape).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
        shuffle = torch.Generator().manual_seed(settings.seed)
        train_loader = DataLoader(AsOwnTarget(data.train), settings.batch_size, shuffle=True, generator=shuffle,
                                  num_workers=settings.num_workers)  # fmt: skip
        valid_loader = DataLoader(AsOwnTarget(data.valid), max(256, settings.batch_size),
                                  num_workers=settings.num_workers)  # fmt: skip
        trainer = create_supervised_trainer_for(model, optimizer, torch.nn.MSELoss(), device)
        evaluator = create_supervised_evaluator_for(model, {"loss": Loss(torch.nn.MSELoss())}, device)

        # Order matters: metrics and the NaN guard first, then what reports them, checkpoints last.
        averages = attach_running_averages(trainer, ["loss"])
        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
        Throughput(settings.log_every, settings.batch_size).attach(trainer)
        resumed_at = checkpoint[1]["trainer"]["iteration"] if checkpoint else None
        tb_logger = attach_tensorboard(trainer, run.path, settings.log_every, resumed_at)
        metrics_log = MetricsLog(run.metrics_path, settings.log_every).attach(trainer)
        PeriodicEvaluation(evaluator, valid_loader, len(train_loader), metrics_log, tb_logger, prefix="val_").attach(
            trainer
        )
        sheet_images = first_images(data.valid, SHEET_IMAGES)
        ReconstructionSheets(model, sheet_images, run.samples, trainer, tb_logger).attach(evaluator)
        evaluation_state = attach_evaluation(trainer, evaluator, model, settings, run)
        attach_progress(trainer, settings.log_every, ["avg_loss", "iters_per_sec"])
        to_save = {"trainer": trainer, "model": model, "optimizer": optimizer, "shuffle": GeneratorState(shuffle),
                   **averages, **evaluation_state}  # fmt: skip
        resume = ExactResume(to_save, run.checkpoints, settings.checkpoint_every, settings_dict(settings),
                             settings.keep_checkpoints, per_epoch=True).attach(trainer)  # fmt: skip
        if checkpoint is not None:
            resume.load(checkpoint[1])
            metrics_log.write({"resumed_from": resumed_at, "checkpoint": str(checkpoint[0])})

        try:
            with GracefulStop(trainer) as stop:
                trainer.run(train_loader, max_epochs=settings.max_epochs)
            if output_is_finite(trainer.state.output) and stop.signal_name is None:
                write_end_outputs(model, data, settings, run.path, trainer.state.iteration, tb_logger.writer, device)
        finally:
            tb_logger.close()
        best_score = best_recorded(run.metrics_path, SCORING)
        exit_code = report_end(trainer.state, settings, stop.signal_name, resume.last_path, run.path, best_score,
                               SCORING)  # fmt: skip
        if exit_code == 0:
            say(f"  figures:  {run.samples} (reconstructions, tsne, random_codes); codes in {run.path / 'codes.pt'}")
        return RunResult(exit_code, trainer.state.epoch, best_score)
