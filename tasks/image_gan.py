"""The image-folder DCGAN of chapter 004 (AnimeGAN): training on a folder of images, and ranked generation.

Training composes the same GAN engine and handlers as the Atari GAN (``tasks.gan``), with the book's 96x96 pair
(a stride-3 outer stage, LeakyReLU(0.2) in D, no biases), Adam(2e-4, beta1 0.5), batches of 256, the discriminator
trained every batch and the generator every 5th (``--d-every`` / ``--g-every``).

Generation follows the book: draw ``--candidates`` noises, let D score their images, keep the ``--n`` best.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ignite.distributed as idist
import torch

from datasets.images import ImageBatches, ImageFiles, UnreadableImageError
from datasets.prefetch import Prefetched
from handlers.images import image_grid, save_png_atomically
from models.dcgan import Discriminator, Generator, outer_stage
from runner.checkpoint_files import ResumePoint, find_checkpoint
from runner.cli import dispatch, launch, launch_tool
from runner.device import resolve_device
from runner.distributed import is_main_process
from runner.errors import UserError, say
from runner.settings import Settings, from_saved, non_negative, one_of, positive, required, setting
from tasks.gan import GanTask, shown_view, use_producer
from tasks.gan_generate import (
    INTERPOLATE_HELP,
    WEIGHTS_HELP,
    check_interpolate,
    checked_out,
    chosen_generator,
    generated,
    sheet_noise,
    write_sheet,
)
from tasks.gan_settings import GanRunSettings
from tasks.parts import AttachToEvaluator, RunResult

LEAKY_SLOPE = 0.2  # the book's discriminator


def image_side(value: int) -> None:
    outer_stage(value)  # raises ValueError with the sizes the models take


@dataclass(frozen=True)
class ImageGanSettings(GanRunSettings):
    data_dir: str = setting(
        "",
        "folder of images (in it or in sub-folders, any size: resized and centre-cropped)",
        check=required,
        resume="free",
    )
    output_dir: str = setting("", "run directory (default: runs/image_gan-<date>-<time>)", resume="free")
    max_iters: int = setting(
        40_000, "total iterations (about the book's 200 epochs of 50,000 faces)", check=positive, resume="free"
    )
    image_every: int = setting(
        500, "iterations between sample sheets (PNG and TensorBoard)", check=positive, resume="free"
    )
    checkpoint_every: int = setting(
        500, "iterations between checkpoints (one more at the end)", check=positive, resume="free"
    )
    log_every: int = setting(
        20, "iterations between metrics.jsonl records and report lines", check=positive, resume="free"
    )
    batch_size: int = setting(256, "images per batch", check=positive)
    image_size: int = setting(96, "side of the square images: a power of two >= 8 or 3 x one >= 24", check=image_side)
    lr: float = setting(2e-4, "Adam learning rate of both networks", check=positive)
    d_every: int = setting(1, "train the discriminator on every N-th batch", check=positive)
    g_every: int = setting(5, "train the generator on every N-th batch", check=positive)

    def step_every(self) -> tuple[int, int]:
        return self.d_every, self.g_every

    workers: int = setting(
        2, "processes decoding images (0: in the producer thread)", check=non_negative, resume="free"
    )


def make_stream(settings: ImageGanSettings, device: torch.device) -> ImageBatches | Prefetched:
    """Shuffled batches of the folder; with several processes each decodes its share of every batch."""
    try:
        dataset = ImageFiles(settings.data_dir, settings.image_size)
    except ValueError as error:  # its reason begins with the folder
        raise UserError(f"--data-dir {error}") from None
    try:
        shard = (idist.get_rank(), idist.get_world_size())
        stream = ImageBatches(dataset, settings.batch_size, settings.seed, settings.workers, shard)
    except ValueError as error:
        raise UserError(f"--data-dir {settings.data_dir}: {error}") from None
    if is_main_process():
        count = stream.batches_per_epoch
        batches = f"{count} batch{'es' if count != 1 else ''} of {settings.batch_size}"
        say(f"{len(dataset)} images in {settings.data_dir}: {batches}")
    if use_producer(settings, device):
        return Prefetched(stream, depth=2, pin_memory=device.type == "cuda")
    return stream


def make_networks(settings: Any) -> tuple[Generator, Discriminator]:
    """The book's AnimeGAN pair at ``image_size`` (its 96x96 layers at the defaults)."""
    generator = Generator(settings.image_size, 3, settings.filters, settings.latent_size, bias=False)
    discriminator = Discriminator(
        settings.image_size, 3, settings.filters, leaky_slope=LEAKY_SLOPE, bias=False, norm=settings.d_norm
    )
    return generator, discriminator


class ImageGan(GanTask):
    def make_stream(self, device: torch.device, resume: ResumePoint | None) -> ImageBatches | Prefetched:
        return make_stream(self.settings, device)

    def make_networks(self) -> tuple[Generator, Discriminator]:
        return make_networks(self.settings)

    @classmethod
    def train(
        cls, settings: Any, resume: ResumePoint | None = None, attach_to_evaluator: AttachToEvaluator | None = None
    ) -> RunResult:
        try:
            return super().train(settings, resume, attach_to_evaluator)
        except UnreadableImageError as error:
            raise UserError(f"--data-dir: {error}; remove or replace the file and resume") from None


train = ImageGan.train


@dataclass(frozen=True)
class GenerateSettings(Settings):
    checkpoint: str = setting(
        "", "a run directory of image_gan.py train, or one of its checkpoint files", check=required
    )
    out: str = setting("best.png", "PNG sheet to write")
    n: int = setting(
        64, "images kept (the best by the discriminator's score; with --interpolate: rows of K)", check=positive
    )
    candidates: int = setting(512, "noises drawn and scored", check=positive)
    weights: str = setting("auto", WEIGHTS_HELP, check=one_of("auto", "ema", "raw"))
    interpolate: int = setting(0, INTERPOLATE_HELP + "; not ranked", check=check_interpolate)
    seed: int = setting(0, "seeds the noises", check=non_negative)
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N")

    def validate(self) -> None:
        if self.n > self.candidates:
            raise ValueError(f"--n {self.n} is more than --candidates {self.candidates}")
        if not self.out.lower().endswith(".png"):
            raise ValueError(f"--out {self.out}: give a .png file name")


@dataclass
class GenerateResult:
    exit_code: int
    scores: list[float]  # the kept images' discriminator logits, best first


def generate(settings: GenerateSettings) -> GenerateResult:
    """Rank ``candidates`` generated images by D's logit and write the best ``n`` as one sheet; or, with
    ``--interpolate``, rows walking between random noises (not ranked)."""
    device = resolve_device(settings.dev)
    out = checked_out(settings.out)
    checkpoint = find_checkpoint(settings.checkpoint, flag="--checkpoint")
    trained = from_saved(ImageGanSettings, checkpoint.settings, {}, source=str(checkpoint.path))
    generator, which = chosen_generator(
        checkpoint.state, settings.weights, lambda: make_networks(trained)[0], checkpoint.path, shown_view(trained)
    )
    if settings.interpolate:
        noise = sheet_noise(settings.n, settings.interpolate, trained.latent_size, settings.seed)
        write_sheet(generated(generator, noise, device), out, settings.interpolate)
        say(f"wrote {len(noise)} images of {which} (iteration {checkpoint.iteration}) to {out}")
        return GenerateResult(0, [])
    discriminator = make_networks(trained)[1]
    discriminator.load_state_dict(checkpoint.state["discriminator"])
    discriminator.to(device).eval()
    images = generated(generator, sheet_noise(settings.candidates, 0, trained.latent_size, settings.seed), device)
    with torch.no_grad():
        scores = torch.cat([discriminator(chunk.to(device)).cpu() for chunk in images.split(256)])
    best = scores.argsort(descending=True)[: settings.n]
    save_png_atomically(image_grid(images[best]), out)
    say(
        f"wrote the {settings.n} best of {settings.candidates} images ({which} and D of iteration "
        f"{checkpoint.iteration}) to {out}"
    )
    return GenerateResult(0, scores[best].tolist())


def main(argv: Sequence[str] | None, description: str, prog: str = "image_gan.py") -> None:
    """``image_gan.py train|generate [flags]`` (``prog``: the launcher's name, e.g. ``ignite-book image_gan``)."""
    dispatch(
        {
            "train": lambda rest: launch(ImageGanSettings, train, f"{prog} train", description, rest),
            "generate": lambda rest: launch_tool(GenerateSettings, generate, f"{prog} generate", description, rest),
        },
        prog=prog,
        description=description,
        argv=argv,
    )
