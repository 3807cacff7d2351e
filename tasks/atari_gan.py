"""The Atari GAN task (Deep RL Hands-On, chapter 3): its settings, its data and its quality measure (Atari-FID).

What both GAN tasks share (the engine, the fast path, the sample sheets) is in ``tasks.gan``; the run itself is the
standard run (``tasks.standard_run``). ``scripts/atari_gan.py`` hands its command line to ``runner.cli.launch``.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from datasets.atari import DEFAULT_GAMES, FrameStream, check_games, spaced_frames
from datasets.prefetch import Prefetched
from engines.gan import create_fid_evaluator, fid_batches
from handlers.evaluation import PeriodicEvaluation, keep_best
from models.dcgan import Discriminator, Generator, stride2_stages
from models.frame_classifier import FEATURE_SIZE, FrameClassifier
from runner.distributed import rank_batch_size, rank_seed
from runner.errors import UserError, say
from runner.settings import at_least_two, non_negative, positive, setting
from tasks.atari_fid import load_frame_classifier
from tasks.gan import GanRunSettings, GanTask, use_producer
from tasks.parts import Attached, RunContext, Scoring

EVAL_SEED_OFFSET = 1_000_003  # FID's real frames and noise: other episodes than the training stream's
FID_BATCH = 256  # frames per forward pass of an evaluation


def image_side(value: int) -> None:
    stride2_stages(value)  # raises ValueError with the reason


@dataclass(frozen=True)
class AtariGanSettings(GanRunSettings):
    seed: int = setting(0, "seeds the weights, the noise, the emulators and the agent's actions", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/atari_gan-<date>-<time>)", resume="free")
    # data: the chapter's three games, 16 frames of 64x64 per batch
    batch_size: int = setting(16, "frames per batch", check=positive)
    image_size: int = setting(64, "side of the square frames, a power of two >= 8", check=image_side)
    games: tuple[str, ...] = setting(DEFAULT_GAMES, "ALE games the random agent plays", check=check_games)
    # quality: Atari-FID against real frames held apart from the training stream
    eval_every: int = setting(
        1000, "iterations between Atari-FID evaluations (0: none)", check=non_negative, resume="free"
    )
    fid_samples: int = setting(512, "real and generated frames per Atari-FID evaluation", check=at_least_two)
    patience: int = setting(
        0, "stop after this many evaluations without a better FID (0: never)", check=non_negative, resume="free"
    )

    def check_ranks(self, ranks: int) -> None:
        """With several processes each evaluates its share of the FID samples (``runner.distributed``)."""
        if self.eval_every and self.fid_samples < 2 * ranks:
            raise UserError(f"--fid-samples {self.fid_samples}: at least 2 per process ({ranks} processes)")


class LazyFeatures(torch.nn.Module):
    """Atari-FID's feature layer, its classifier loaded (or trained, on first use) when first called."""

    def __init__(self, load: Callable[[], FrameClassifier]):
        super().__init__()
        self.load = load
        self.classifier: FrameClassifier | None = None
        self.feature_size = FEATURE_SIZE  # (building a classifier to ask would draw from the training RNG)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            self.classifier = self.load()
        return self.classifier.features(frames)


class AtariGan(GanTask):
    script = "atari_gan.py"
    scoring = Scoring("fid", higher_is_better=False, record_prefix="", report_digits=None)

    def make_stream(self, device: torch.device) -> FrameStream | Prefetched:
        return make_stream(self.settings, device)

    def make_networks(self) -> tuple[Generator, Discriminator]:
        return make_networks(self.settings)

    def attach_handlers(self, context: RunContext) -> Attached:
        super().attach_handlers(context)
        if not self.settings.eval_every:
            return Attached()
        return self.attach_fid_evaluation(context)

    def attach_fid_evaluation(self, context: RunContext) -> Attached:
        """Atari-FID every ``eval_every`` iterations, the best-FID weights kept, early stopping on FID if asked."""
        settings, device, gan = self.settings, context.device, self.gan
        # The classifier and the real frames take seconds to make: a run pays for them at its first evaluation.
        features = LazyFeatures(lambda: load_frame_classifier(settings.image_size, say=say)[0].to(device))
        eval_seed = settings.seed + EVAL_SEED_OFFSET
        real = functools.partial(
            spaced_frames, settings.games, settings.fid_samples, settings.image_size, seed=eval_seed
        )
        noise_source = torch.Generator().manual_seed(eval_seed)
        noise = torch.randn(settings.fid_samples, settings.latent_size, 1, 1, generator=noise_source).to(device)
        evaluator = create_fid_evaluator(gan.generator, features, real, noise, FID_BATCH, device)
        batches = fid_batches(settings.fid_samples, FID_BATCH)
        PeriodicEvaluation(evaluator, batches, settings.eval_every, context.metrics_log, context.tb_logger).attach(
            context.trainer
        )
        models = {"generator": gan.generator, "discriminator": gan.discriminator}
        state = keep_best(
            context.trainer,
            evaluator,
            models,
            context.run.checkpoints,
            self.scoring.score,
            settings.patience,
            prefix="best_fid",
        )
        return Attached(evaluator, state)

    def stop_reason(self) -> str:
        return f"stopped early (no better FID in {self.settings.patience} evaluations)"


def make_networks(settings: AtariGanSettings) -> tuple[Generator, Discriminator]:
    """The chapter's pair (ReLU in D, biases)."""
    generator = Generator(settings.image_size, 3, settings.filters, settings.latent_size)
    return generator, Discriminator(settings.image_size, 3, settings.filters)


def make_stream(settings: AtariGanSettings, device: torch.device) -> FrameStream | Prefetched:
    """The live frame stream (this process's share of each batch, from its own seed), made in a background thread
    if ``--producer`` says so."""
    batch_size, seed = rank_batch_size(settings.batch_size), rank_seed(settings.seed)
    stream = FrameStream(settings.games, batch_size, settings.image_size, seed)
    if use_producer(settings, device):
        return Prefetched(stream, depth=2, pin_memory=device.type == "cuda")
    return stream


train = AtariGan.train
