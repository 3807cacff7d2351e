"""PNG sheets of a generator's output on a fixed noise batch, so sheets are comparable over a run.

    SampleSheets(generator, fixed_noise, run.samples, every=1000, tb_logger=tb).attach(trainer)

Every ``every`` iterations and at the end of each run it writes ``samples/fake_<iteration>.png`` (and
``fake_ema_<iteration>.png`` for a generator's moving average), ``samples/real_<iteration>.png`` (the batch just
trained on) and, given a ``TensorboardLogger``, the same grids as images ``fake`` and ``real``; and
``samples/progress.gif``, the fixed-noise sheets of the whole run as an animation (of the average, when there is
one). The generators run in ``eval()`` under ``no_grad`` and the noise is fixed: writing a sheet changes no model
state and draws nothing from any RNG, so it cannot perturb an exactly resumed run.
"""

import io
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from PIL import Image

from handlers.checkpoint import output_is_finite
from runner.files import write_atomically

GRID_PADDING = 2  # pixels between images, as torchvision's make_grid


def image_grid(images: torch.Tensor, columns: int | None = None) -> torch.Tensor:
    """A grid of images in [-1, 1], shown in true colours (not min-max stretched, so sheets compare over time),
    ``columns`` wide (default: the square root of their number).

    The same picture as ``torchvision.utils.make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1))``
    (a test holds them equal). It is written out here because importing torchvision costs a GAN run 0.85 s of its
    start-up (its models and torch._dynamo come with it), 5 % of a 150-iteration run.
    """
    images = images.detach().float().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # grey images shown as RGB, as make_grid does
    scaled = ((images + 1) / 2).clamp(0, 1)
    if images.shape[0] == 1:
        return scaled[0]  # one image: no frame around it, as make_grid
    count, channels, height, width = images.shape
    columns = min(max(1, columns or int(count**0.5)), count)
    rows = -(-count // columns)
    cell_h, cell_w = height + GRID_PADDING, width + GRID_PADDING
    grid = torch.zeros(channels, rows * cell_h + GRID_PADDING, columns * cell_w + GRID_PADDING)
    for index in range(count):
        top, left = (index // columns) * cell_h + GRID_PADDING, (index % columns) * cell_w + GRID_PADDING
        grid[:, top : top + height, left : left + width] = scaled[index]
    return grid


def save_png_atomically(grid: torch.Tensor, path: Path) -> None:
    """A (3, H, W) grid in [0, 1] as an 8-bit PNG (rounded as torchvision's save_image), replaced atomically."""
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    save_image_atomically(Image.fromarray(pixels), path)


def save_image_atomically(image: Image.Image, path: Path) -> None:
    encoded = io.BytesIO()
    image.save(encoded, format="png")
    write_atomically(path, encoded.getbuffer())


def shown_frames(batch: torch.Tensor) -> torch.Tensor:
    """A batch as ``image_grid`` takes it: images in [-1, 1], or a GPU run's feed of uint8 frames ``(B, S, S, 3)``
    (converted for the picture only; the step converts its own on the device)."""
    if batch.dtype == torch.uint8:
        return batch.permute(0, 3, 1, 2).float() / 127.5 - 1
    return batch


class SampleSheets:
    def __init__(
        self,
        generators: torch.nn.Module | Mapping[str, torch.nn.Module],
        fixed_noise: torch.Tensor,
        directory: Path,
        every: int,
        tb_logger: TensorboardLogger | None = None,
        shown: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ):
        """``generators``: one generator (its sheets are ``fake_*``), or a name -> generator mapping (``{"fake": G,
        "fake_ema": G_ema}``), each on the same noise; ``shown``, if given, makes what is drawn of each (a copy with
        its own BatchNorm statistics), else the generator draws in eval mode."""
        self.generators = {"fake": generators} if isinstance(generators, torch.nn.Module) else dict(generators)
        self.fixed_noise = fixed_noise
        self.directory = Path(directory)
        self.every = every
        self.tb_logger = tb_logger
        self.shown = shown
        self._last_written = -1

    def attach(self, engine: Engine) -> "SampleSheets":
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every) | Events.COMPLETED, self.write)
        return self

    @torch.no_grad()
    def fake_images(self, name: str = "fake") -> torch.Tensor:
        generator = self.generators[name]
        if self.shown is not None:
            return self.shown(generator)(self.fixed_noise)
        was_training = generator.training
        generator.eval()
        try:
            return generator(self.fixed_noise)
        finally:
            generator.train(was_training)

    def write(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        if iteration == self._last_written or iteration == 0 or not output_is_finite(engine.state.output):
            return
        self._last_written = iteration
        grids = {name: image_grid(self.fake_images(name)) for name in self.generators}
        if isinstance(engine.state.batch, torch.Tensor):
            grids["real"] = image_grid(shown_frames(engine.state.batch[: self.fixed_noise.shape[0]]))
        self.directory.mkdir(parents=True, exist_ok=True)
        for tag, grid in grids.items():
            save_png_atomically(grid, self.directory / f"{tag}_{iteration:07d}.png")
            if self.tb_logger is not None:
                self.tb_logger.writer.add_image(tag, grid, iteration)
        write_progress_gif(self.directory, next(reversed(self.generators)))


def write_progress_gif(directory: Path, tag: str, frame_ms: int = 250) -> Path:
    """``progress.gif``: every ``<tag>_<iteration>.png`` sheet of the folder in iteration order, the last one held
    longer. Made from the files, so after a resume it still has every sheet of the run."""
    sheets = sorted(directory.glob(f"{tag}_[0-9]*.png"))  # zero-padded iterations: the names sort in run order
    frames = [Image.open(sheet).convert("RGB") for sheet in sheets]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]
    encoded = io.BytesIO()
    frames[0].save(encoded, format="gif", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    path = directory / "progress.gif"
    write_atomically(path, encoded.getbuffer())
    return path


def pairs_grid(inputs: torch.Tensor, reconstructions: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """A grid of rows of ``per_row`` inputs, each row followed by the row of their reconstructions."""
    per_row = min(per_row, inputs.shape[0])
    rows = inputs.shape[0] // per_row
    used = rows * per_row
    shape = inputs.shape[1:]
    pairs = torch.stack(
        [inputs[:used].view(rows, per_row, *shape), reconstructions[:used].view(rows, per_row, *shape)], dim=1
    )
    images = pairs.reshape(2 * used, *shape)  # input row 0, reconstruction row 0, input row 1, ...
    return image_grid(images, columns=per_row)


class ReconstructionSheets:
    """After every evaluation: ``reconstructions_<iteration>.png`` of fixed images over their reconstructions.

        ReconstructionSheets(model, first_images(valid, 32), run.samples, trainer, tb_logger).attach(evaluator)

    The model runs in ``eval()`` under ``no_grad`` on fixed images: a sheet changes no state and draws from no RNG.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        directory: Path,
        trainer: Engine,
        tb_logger: TensorboardLogger | None = None,
    ):
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
