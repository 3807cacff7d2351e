"""The Atari GAN task (Deep RL Hands-On, chapter 3): its settings and the composition of one training run.

This lives in the package rather than in ``scripts/atari_gan.py`` so that sweeps and tests can start a run
in-process; the launcher script only hands the command line to ``runner.cli.launch``.
"""

import functools
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping, TerminateOnNan, global_step_from_engine

from datasets.atari import DEFAULT_GAMES, FrameStream, check_games, spaced_frames
from datasets.prefetch import Prefetched
from engines.gan import GanStep, create_fid_evaluator, create_gan_trainer, fid_batches
from handlers import (
    ExactResume,
    GracefulStop,
    MetricsLog,
    SampleSheets,
    Throughput,
    attach_progress,
    output_is_finite,
)
from handlers.checkpoint import RunDirSaver, run_dir_of_checkpoint
from handlers.evaluation import PeriodicEvaluation
from handlers.logging import attach_running_averages, attach_tensorboard
from handlers.metrics_log import records_by_iteration
from models.dcgan import Discriminator, Generator, stride2_stages
from models.frame_classifier import FEATURE_SIZE, FrameClassifier
from runner.atari_fid import load_frame_classifier
from runner.device import resolve_device, resolve_precision
from runner.errors import say
from runner.rng import seed_everything
from runner.rundir import RunDirectory
from runner.settings import in_open_unit_interval, non_negative, positive, setting, settings_dict

SHEET_SIZE = 64  # images per sample sheet, as the chapter's make_grid(...[:64])
# What scripts/sweep.py atari_gan searches (README: sweeps). Sizes are categorical: powers of two the models accept.
SEARCH_SPACE = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
    "beta1": optuna.distributions.FloatDistribution(0.0, 0.9),
    "batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "filters": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "latent_size": optuna.distributions.CategoricalDistribution([32, 64, 100, 128]),
}
PRECISION_CHOICES = ("auto", "bf16", "fp16", "fp32")
EVAL_SEED_OFFSET = 1_000_003  # FID's real frames and noise: other episodes than the training stream's


def at_least_two(value: int) -> None:
    if value < 2:
        raise ValueError("must be at least 2")


def image_side(value: int) -> None:
    stride2_stages(value)  # raises ValueError with the reason


def precision_name(value: str) -> None:
    if value not in PRECISION_CHOICES:
        raise ValueError(f"must be one of {', '.join(PRECISION_CHOICES)}")


@dataclass(frozen=True)
class AtariGanSettings:
    # where, how long, how often
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N", resume="free")
    seed: int = setting(0, "seeds the weights, the noise, the emulators and the agent's actions", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/atari_gan-<date>-<time>)", resume="free")
    resume: str = setting("", "continue a run: its directory or one of its checkpoint files", resume="free")
    max_iters: int = setting(
        50_000, "total iterations; a resumed run continues up to it", check=positive, resume="free"
    )
    log_every: int = setting(
        100, "iterations between metrics.jsonl records and report lines", check=positive, resume="free"
    )
    image_every: int = setting(
        1000, "iterations between sample sheets (PNG and TensorBoard)", check=positive, resume="free"
    )
    checkpoint_every: int = setting(
        1000, "iterations between checkpoints (one more at the end)", check=positive, resume="free"
    )
    keep_checkpoints: int = setting(2, "checkpoints kept on disk (the newest ones)", check=at_least_two, resume="free")
    # quality: Atari-FID against real frames held apart from the training stream
    eval_every: int = setting(
        1000, "iterations between Atari-FID evaluations (0: none)", check=non_negative, resume="free"
    )
    fid_samples: int = setting(512, "real and generated frames per Atari-FID evaluation", check=at_least_two)
    patience: int = setting(
        0, "stop after this many evaluations without a better FID (0: never)", check=non_negative, resume="free"
    )
    # data: the chapter's three games, 16 frames of 64x64 per batch
    games: tuple[str, ...] = setting(DEFAULT_GAMES, "ALE games the random agent plays", check=check_games)
    batch_size: int = setting(16, "frames per batch", check=positive)
    image_size: int = setting(64, "side of the square frames, a power of two >= 8", check=image_side)
    # model and optimizer: the chapter's
    latent_size: int = setting(100, "length of the generator's noise vector", check=positive)
    filters: int = setting(64, "filters of the first discriminator / last generator layer", check=positive)
    lr: float = setting(1e-4, "Adam learning rate of both networks", check=positive)
    beta1: float = setting(0.5, "Adam beta1 of both networks (beta2 is 0.999)", check=in_open_unit_interval)
    # the fast path (docs/speed.md): each switch on by default where it keeps quality, each can be turned off
    precision: str = setting(
        "auto", "autocast: auto (bf16 where supported, fp16 on older GPUs), bf16, fp16 (CUDA) or fp32 (off)",
        check=precision_name, resume="free",
    )  # fmt: skip
    channels_last: bool = setting(True, "channels-last memory layout for both networks", resume="free")
    freeze_discriminator: bool = setting(
        True, "skip D's weight gradients in the generator step (the book computes and discards them)", resume="free"
    )
    fused_adam: bool = setting(True, "fused Adam kernels (else foreach)", resume="free")
    producer: bool = setting(True, "make frames in a background thread while the step trains", resume="free")
    compile: bool = setting(False, "torch.compile both networks (pays off on CUDA for long runs)", resume="free")


@dataclass
class Gan:
    generator: Generator
    discriminator: Discriminator
    gen_optimizer: torch.optim.Optimizer
    dis_optimizer: torch.optim.Optimizer


def make_stream(settings: AtariGanSettings, device: torch.device) -> FrameStream | Prefetched:
    """The live frame stream, made in a background thread unless ``--no-producer``."""
    stream = FrameStream(settings.games, settings.batch_size, settings.image_size, settings.seed)
    if settings.producer:
        return Prefetched(stream, depth=2, pin_memory=device.type == "cuda")
    return stream


def build_gan(settings: AtariGanSettings, device: torch.device) -> Gan:
    """The chapter's networks and their two Adam optimizers, in the fast path's memory layout and kernels."""
    generator = Generator(settings.image_size, 3, settings.filters, settings.latent_size).to(device)
    discriminator = Discriminator(settings.image_size, 3, settings.filters).to(device)
    if settings.channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    if settings.compile:
        generator.compile()  # in place: the state_dict keys stay those of an uncompiled run
        discriminator.compile()
    adam = {"betas": (settings.beta1, 0.999), "lr": settings.lr}
    adam["fused" if settings.fused_adam else "foreach"] = True
    return Gan(
        generator,
        discriminator,
        torch.optim.Adam(generator.parameters(), **adam),
        torch.optim.Adam(discriminator.parameters(), **adam),
    )


def gan_step_of(settings: AtariGanSettings, precision: str) -> GanStep:
    return GanStep(precision, settings.channels_last, settings.freeze_discriminator)


def fast_path_summary(settings: AtariGanSettings, precision: str) -> str:
    switches = [f"{precision} autocast" if precision != "fp32" else "fp32 (no autocast)"]
    names = ("channels_last", "freeze_discriminator", "fused_adam", "producer", "compile")
    switches += [name.replace("_", " ") for name in names if getattr(settings, name)]
    return ", ".join(switches)


def fixed_noise(settings: AtariGanSettings, device: torch.device) -> torch.Tensor:
    """The sample sheets' noise, from its own generator: writing sheets draws nothing from the shared RNGs."""
    source = torch.Generator().manual_seed(settings.seed)
    return torch.randn(SHEET_SIZE, settings.latent_size, 1, 1, generator=source).to(device)


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


@dataclass
class RunResult:
    exit_code: int
    iteration: int
    best_fid: float | None  # the lowest Atari-FID of the run's evaluations (resumed parts included)


def attach_fid_evaluation(trainer, gan, settings, run, metrics_log, tb_logger, device) -> tuple[Engine, dict]:
    """Atari-FID every ``eval_every`` iterations, the best-FID weights kept, early stopping on FID if asked.

    Returns the evaluator (for more handlers, e.g. pruning) and the objects whose state a checkpoint must hold.
    """
    # The classifier and the real frames take seconds to make: a run pays for them at its first evaluation.
    features = LazyFeatures(lambda: load_frame_classifier(settings.image_size, say=say)[0].to(device))
    real = functools.partial(
        spaced_frames, settings.games, settings.fid_samples, settings.image_size, seed=settings.seed + EVAL_SEED_OFFSET
    )
    noise_source = torch.Generator().manual_seed(settings.seed + EVAL_SEED_OFFSET)
    noise = torch.randn(settings.fid_samples, settings.latent_size, 1, 1, generator=noise_source).to(device)
    evaluator = create_fid_evaluator(gan.generator, features, real, noise, 256, device)
    PeriodicEvaluation(
        evaluator, fid_batches(settings.fid_samples, 256), settings.eval_every, metrics_log, tb_logger
    ).attach(trainer)
    best = Checkpoint(
        {"generator": gan.generator, "discriminator": gan.discriminator},
        RunDirSaver(run.checkpoints),
        filename_pattern="best_fid_{global_step}.{ext}",
        score_function=lambda engine: -engine.state.metrics["fid"],
        n_saved=1,
        global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
    )
    evaluator.add_event_handler(Events.COMPLETED, best)
    state = {"best_fid_checkpointer": best}
    if settings.patience:
        stopper = EarlyStopping(settings.patience, lambda engine: -engine.state.metrics["fid"], trainer)
        evaluator.add_event_handler(Events.COMPLETED, stopper)
        state["early_stopping"] = stopper
    return evaluator, state


def train(
    settings: AtariGanSettings,
    checkpoint: tuple[Path, dict[str, Any]] | None = None,
    attach_to_evaluator: Callable[[Engine, Engine], None] | None = None,
) -> RunResult:
    """Train (or continue) one run. ``attach_to_evaluator(evaluator, trainer)`` adds handlers (e.g. pruning)."""
    device = resolve_device(settings.dev)
    precision = resolve_precision(settings.precision, device)
    resumed_at = checkpoint[1]["trainer"]["iteration"] if checkpoint else None
    if resumed_at is not None and resumed_at >= settings.max_iters:
        say(f"nothing to do: {checkpoint[0]} is at iteration {resumed_at}; raise --max-iters to train further")
        # A finished run still has its result: a sweep that adopts it after a kill needs its best FID.
        return RunResult(0, resumed_at, best_fid(run_dir_of_checkpoint(checkpoint[0]) / "metrics.jsonl"))
    run_dir = Path(settings.output_dir)
    continuing = checkpoint is not None and run_dir.resolve() == run_dir_of_checkpoint(checkpoint[0]).resolve()
    with RunDirectory.open(run_dir, continuing=continuing) as run:
        run.write_config(settings_dict(settings))
        seed_everything(settings.seed)
        stream = make_stream(settings, device)
        gan = build_gan(settings, device)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        trainer = create_gan_trainer(
            gan.generator, gan.discriminator, gan.gen_optimizer, gan.dis_optimizer, device,
            gan_step_of(settings, precision), scaler,
        )  # fmt: skip
        say(f"fast path: {fast_path_summary(settings, precision)}")

        # Order matters: metrics and the NaN guard first, then what reports them, checkpoints last.
        averages = attach_running_averages(trainer, ["loss_gen", "loss_dis"])
        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
        Throughput(settings.log_every, settings.batch_size).attach(trainer)
        tb_logger = attach_tensorboard(trainer, run.path, settings.log_every, resumed_at)
        metrics_log = MetricsLog(run.metrics_path, settings.log_every).attach(trainer)
        noise = fixed_noise(settings, device)
        SampleSheets(gan.generator, noise, run.samples, settings.image_every, tb_logger).attach(trainer)
        attach_progress(trainer, settings.log_every, ["avg_loss_gen", "avg_loss_dis", "iters_per_sec"])
        evaluation_state = {}
        if settings.eval_every:
            evaluator, evaluation_state = attach_fid_evaluation(
                trainer, gan, settings, run, metrics_log, tb_logger, device
            )
            if attach_to_evaluator is not None:
                attach_to_evaluator(evaluator, trainer)
        to_save = {"trainer": trainer, "stream": stream, **vars(gan), **averages, **evaluation_state}
        if scaler is not None:
            to_save["grad_scaler"] = scaler
        resume = ExactResume(
            to_save, run.checkpoints, settings.checkpoint_every, settings_dict(settings), settings.keep_checkpoints,
            optional=["grad_scaler"],
        ).attach(trainer)  # fmt: skip
        if checkpoint is not None:
            resume.load(checkpoint[1])
            metrics_log.write({"resumed_from": resumed_at, "checkpoint": str(checkpoint[0])})

        # A fresh run's "epoch" is the whole run (one progress bar); a resumed engine keeps its checkpoint's.
        epoch_length = None if checkpoint else settings.max_iters
        try:
            with GracefulStop(trainer) as stop:
                trainer.run(stream, max_iters=settings.max_iters, epoch_length=epoch_length)
        finally:
            tb_logger.close()
            stream.close()
        exit_code = report_end(trainer.state, settings, stop.signal_name, resume.last_path, run.path)
        return RunResult(exit_code, trainer.state.iteration, best_fid(run.metrics_path))


def best_fid(metrics_path: Path) -> float | None:
    values = [r["fid"] for r in records_by_iteration(metrics_path).values() if isinstance(r.get("fid"), float)]
    return min(values) if values else None


def report_end(
    state: Any, settings: AtariGanSettings, signal_name: str | None, last_checkpoint: Path | None, run_path: Path
) -> int:
    if not output_is_finite(state.output):
        say(
            f"training stopped at iteration {state.iteration}: a loss became NaN or infinite; "
            f"the last good checkpoint is {last_checkpoint}"
        )
        return 1
    if signal_name:
        how = f"stopped by {signal_name}"
    elif state.iteration < settings.max_iters:
        how = f"stopped early (no better FID in {settings.patience} evaluations)"
    else:
        how = "finished"
    say(f"{how} at iteration {state.iteration}; checkpoint {last_checkpoint}")
    say(f"  watch:    tensorboard --logdir {run_path} --host 127.0.0.1")
    say(f"  continue: python scripts/atari_gan.py --resume {run_path} --max-iters N")
    return 128 + signal.Signals[signal_name].value if signal_name else 0  # the shell's convention: 130, 143
