"""The Atari GAN task (Deep RL Hands-On, chapter 3): its settings, its data and its quality measure (Atari-FID).

The composition of a run (engine, handlers, checkpoints) is shared with the image-folder GAN in ``runner.gan_run``.
This lives in the package rather than in ``scripts/atari_gan.py`` so that sweeps and tests can start a run
in-process; the launcher script only hands the command line to ``runner.cli.launch``.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine

from datasets.atari import DEFAULT_GAMES, FrameStream, check_games, spaced_frames
from datasets.prefetch import Prefetched
from engines.gan import create_fid_evaluator, create_gan_trainer, fid_batches
from handlers.checkpoint import run_dir_of_checkpoint
from handlers.evaluation import PeriodicEvaluation, keep_best
from handlers.metrics_log import records_by_iteration
from models.dcgan import Discriminator, Generator, stride2_stages
from models.frame_classifier import FEATURE_SIZE, FrameClassifier
from runner.atari_fid import load_frame_classifier
from runner.distributed import rank_batch_size, rank_seed
from runner.errors import say
from runner.gan_run import GanRunSettings, GanTask, RunContext, build_gan, gan_step_of, train_gan, use_producer
from runner.settings import at_least_two, non_negative, positive, setting

__all__ = [
    "AtariGanSettings",
    "RunResult",
    "build_gan",
    "create_gan_trainer",
    "gan_step_of",
    "make_networks",
    "make_stream",
    "train",
]

EVAL_SEED_OFFSET = 1_000_003  # FID's real frames and noise: other episodes than the training stream's


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


def make_stream(settings: AtariGanSettings, device: torch.device) -> FrameStream | Prefetched:
    """The live frame stream (this process's share of each batch, from its own seed), made in a background thread
    if ``--producer`` says so."""
    batch_size, seed = rank_batch_size(settings.batch_size), rank_seed(settings.seed)
    stream = FrameStream(settings.games, batch_size, settings.image_size, seed)
    if use_producer(settings, device):
        return Prefetched(stream, depth=2, pin_memory=device.type == "cuda")
    return stream


def make_networks(settings: AtariGanSettings) -> tuple[Generator, Discriminator]:
    """The chapter's pair (ReLU in D, biases)."""
    generator = Generator(settings.image_size, 3, settings.filters, settings.latent_size)
    return generator, Discriminator(settings.image_size, 3, settings.filters)


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


def negated_fid(evaluator: Engine) -> float:
    return -evaluator.state.metrics["fid"]  # Ignite's handlers keep the highest score


def attach_fid_evaluation(settings: AtariGanSettings, context: RunContext) -> tuple[Engine, dict[str, Any]]:
    """Atari-FID every ``eval_every`` iterations, the best-FID weights kept, early stopping on FID if asked.

    Returns the evaluator (for more handlers, e.g. pruning) and the objects whose state a checkpoint must hold.
    """
    trainer, gan, run, device = context.trainer, context.gan, context.run, context.device
    # The classifier and the real frames take seconds to make: a run pays for them at its first evaluation.
    features = LazyFeatures(lambda: load_frame_classifier(settings.image_size, say=say)[0].to(device))
    real = functools.partial(
        spaced_frames, settings.games, settings.fid_samples, settings.image_size, seed=settings.seed + EVAL_SEED_OFFSET
    )
    noise_source = torch.Generator().manual_seed(settings.seed + EVAL_SEED_OFFSET)
    noise = torch.randn(settings.fid_samples, settings.latent_size, 1, 1, generator=noise_source).to(device)
    evaluator = create_fid_evaluator(gan.generator, features, real, noise, 256, device)
    PeriodicEvaluation(
        evaluator, fid_batches(settings.fid_samples, 256), settings.eval_every, context.metrics_log, context.tb_logger
    ).attach(trainer)
    models = {"generator": gan.generator, "discriminator": gan.discriminator}
    state = keep_best(trainer, evaluator, models, run.checkpoints, negated_fid, settings.patience, prefix="best_fid")
    return evaluator, state


@dataclass
class RunResult:
    exit_code: int
    iteration: int
    best_fid: float | None  # the lowest Atari-FID of the run's evaluations (resumed parts included)


def train(
    settings: AtariGanSettings,
    checkpoint: tuple[Path, dict[str, Any]] | None = None,
    attach_to_evaluator: Callable[[Engine, Engine], None] | None = None,
) -> RunResult:
    """Train (or continue) one run. ``attach_to_evaluator(evaluator, trainer)`` adds handlers (e.g. pruning)."""

    def attach_quality(context: RunContext) -> dict[str, Any]:
        if not settings.eval_every:
            return {}
        evaluator, state = attach_fid_evaluation(settings, context)
        if attach_to_evaluator is not None:
            attach_to_evaluator(evaluator, context.trainer)
        return state

    stop_reason = f"stopped early (no better FID in {settings.patience} evaluations)"
    task = GanTask("atari_gan.py", make_stream, make_networks, attach_quality, stop_reason)
    outcome = train_gan(task, settings, checkpoint)
    if outcome is None:  # already finished; a sweep that adopts it after a kill still needs its best FID
        iteration = checkpoint[1]["trainer"]["iteration"]
        return RunResult(0, iteration, best_fid(run_dir_of_checkpoint(checkpoint[0]) / "metrics.jsonl"))
    exit_code, iteration, run_path = outcome
    return RunResult(exit_code, iteration, best_fid(run_path / "metrics.jsonl"))


def best_fid(metrics_path: Path) -> float | None:
    values = [r["fid"] for r in records_by_iteration(metrics_path).values() if isinstance(r.get("fid"), float)]
    return min(values) if values else None
