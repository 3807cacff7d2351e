"""PNG sheets of a generator's output on a fixed noise batch, so sheets are comparable over a run.

    SampleSheets(generator, fixed_noise, run.samples, every=1000, tb_logger=tb).attach(trainer)

Every ``every`` iterations and at the end of each run it writes ``samples/fake_<iteration>.png`` and
``samples/real_<iteration>.png`` (the batch just trained on) and, given a ``TensorboardLogger``, the same grids as
images ``fake`` and ``real``. The generator runs in ``eval()`` under ``no_grad`` and the noise is fixed: writing a
sheet changes no model state and draws nothing from any RNG, so it cannot perturb an exactly resumed run.
"""

import io
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


class SampleSheets:
    def __init__(
        self,
        generator: torch.nn.Module,
        fixed_noise: torch.Tensor,
        directory: Path,
        every: int,
        tb_logger: TensorboardLogger | None = None,
    ):
        self.generator = generator
        self.fixed_noise = fixed_noise
        self.directory = Path(directory)
        self.every = every
        self.tb_logger = tb_logger
        self._last_written = -1

    def attach(self, engine: Engine) -> "SampleSheets":
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every) | Events.COMPLETED, self.write)
        return self

    @torch.no_grad()
    def fake_images(self) -> torch.Tensor:
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(self.fixed_noise)
        finally:
            self.generator.train(was_training)

    def write(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        if iteration == self._last_written or iteration == 0 or not output_is_finite(engine.state.output):
            return
        self._last_written = iteration
        grids = {"fake": image_grid(self.fake_images())}
        if isinstance(engine.state.batch, torch.Tensor):
            grids["real"] = image_grid(engine.state.batch[: self.fixed_noise.shape[0]])
        self.directory.mkdir(parents=True, exist_ok=True)
        for tag, grid in grids.items():
            save_png_atomically(grid, self.directory / f"{tag}_{iteration:07d}.png")
            if self.tb_logger is not None:
                self.tb_logger.writer.add_image(tag, grid, iteration)


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
