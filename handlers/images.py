"""PNG sheets of a generator's output on a fixed noise batch, so sheets are comparable over a run.

    SampleSheets(generator, fixed_noise, run.samples, every=1000, tb_logger=tb).attach(trainer)

Every ``every`` iterations and at the end of each run it writes ``samples/fake_<iteration>.png`` and
``samples/real_<iteration>.png`` (the batch just trained on) and, given a ``TensorboardLogger``, the same grids as
images ``fake`` and ``real``. The generator runs in ``eval()`` under ``no_grad`` and the noise is fixed: writing a
sheet changes no model state and draws nothing from any RNG, so it cannot perturb an exactly resumed run.
"""

import os
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from torchvision.utils import make_grid, save_image

from handlers.checkpoint import output_is_finite


def image_grid(images: torch.Tensor) -> torch.Tensor:
    """A grid of images in [-1, 1], shown in true colours (not min-max stretched, so sheets compare over time)."""
    rows = max(1, int(images.shape[0] ** 0.5))
    return make_grid(images.detach().float().cpu(), nrow=rows, normalize=True, value_range=(-1, 1))


def save_png_atomically(grid: torch.Tensor, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    save_image(grid, temporary, format="png")
    os.replace(temporary, path)


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
