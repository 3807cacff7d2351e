"""What the two GAN tasks share: settings, networks and optimizers, and the composition of one training run.

``runner.atari_gan`` (live Atari frames, Atari-FID) and ``runner.image_gan`` (an image folder, chapter 004's
AnimeGAN) differ in their data, their networks' options and their quality measure; everything else is here: the
GAN engine, running averages, the NaN guard, throughput, TensorBoard, ``metrics.jsonl``, sample sheets, progress,
exact-resume checkpoints, graceful Ctrl-C and the end-of-run report.
"""

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger, TerminateOnNan

from engines.adam import LayoutFreeAdam
from engines.gan import GanStep, create_gan_trainer
from engines.gemm_weight_grads import use_gemm_weight_grads
from handlers import ExactResume, GracefulStop, MetricsLog, SampleSheets, Throughput, attach_progress
from handlers.checkpoint import output_is_finite, run_dir_of_checkpoint
from handlers.logging import attach_running_averages, attach_tensorboard
from runner.device import resolve_device, resolve_precision
from runner.distributed import (
    is_main_process,
    open_run_directory,
    per_rank,
    rank_device,
    rank_seed,
    usable_cores,
    world_size,
    wrap_model,
)
from runner.errors import say
from runner.memory import keep_freed_memory
from runner.rng import seed_everything
from runner.rundir import RunDirectory
from runner.settings import (
    at_least_two,
    in_open_unit_interval,
    non_negative,
    one_of,
    positive,
    setting,
    settings_dict,
)

SHEET_SIZE = 64  # images per sample sheet, as the chapters' make_grid(...[:64])


def use_producer(settings: Any, device: torch.device) -> bool:
    """``--producer auto``: a background producer pays off only with a core to itself. On a CPU whose cores all run
    the step's threads it only interrupts them (measured on 2 cores: 0.112 s/it with it, 0.0965 without)."""
    if settings.producer != "auto":
        return settings.producer == "on"
    busy = torch.get_num_threads() * idist.get_nproc_per_node()  # the step's threads of every process here
    return device.type == "cuda" or usable_cores() > busy


@dataclass(frozen=True)
class GanRunSettings:
    """The fields every GAN task has. A task subclasses it, redefining a field to change its default or check."""

    # where, how long, how often
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N", resume="free")
    seed: int = setting(0, "seeds the weights, the noise and the data order", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/<task>-<date>-<time>)", resume="free")
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
    # data, model and optimizer
    batch_size: int = setting(16, "images per batch", check=positive)
    image_size: int = setting(64, "side of the square images", check=positive)
    latent_size: int = setting(100, "length of the generator's noise vector", check=positive)
    filters: int = setting(64, "filters of the first discriminator / last generator layer", check=positive)
    lr: float = setting(1e-4, "Adam learning rate of both networks", check=positive)
    beta1: float = setting(0.5, "Adam beta1 of both networks (beta2 is 0.999)", check=in_open_unit_interval)
    # the fast path (docs/speed.md): each switch on by default where it keeps quality, each can be turned off
    precision: str = setting(
        "auto", "autocast: auto (bf16 where supported, fp16 on older GPUs), bf16, fp16 (CUDA) or fp32 (off)",
        check=one_of("auto", "bf16", "fp16", "fp32"), resume="free",
    )  # fmt: skip
    channels_last: bool = setting(True, "channels-last memory layout for both networks", resume="free")
    freeze_discriminator: bool = setting(
        True, "skip D's weight gradients in the generator step (the book computes and discards them)", resume="free"
    )
    joint_d_pass: bool = setting(
        True, "D's real and fake passes as one batched pass (each keeps its own BatchNorm statistics)", resume="free"
    )
    fused_adam: bool = setting(True, "fused Adam kernels (else foreach)", resume="free")
    gemm_weight_grads: bool = setting(
        True, "CPU: weight gradients of layers with a 4x4 or smaller map as one matrix product (oneDNN is slow there)",
        resume="free",
    )  # fmt: skip
    producer: str = setting(
        "auto", "make batches in a background thread: on, off, or auto (on when training leaves a CPU core free)",
        check=one_of("auto", "on", "off"), resume="free",
    )  # fmt: skip
    keep_heap: bool = setting(
        True, "keep freed memory for reuse (glibc): far fewer page faults per step on CPU", resume="free"
    )
    compile: bool = setting(False, "torch.compile both networks (meant for CUDA; slower on CPU)", resume="free")
    # several processes (runner.distributed): --batch-size is the global batch, split evenly over them
    nproc_per_node: int = setting(
        1, "training processes on this machine (DDP via ignite.distributed; gloo on CPU, nccl on CUDA)", check=positive
    )


@dataclass
class Gan:
    """The networks (never wrapped: checkpoints, sample sheets and evaluation use these) and their optimizers."""

    generator: torch.nn.Module
    discriminator: torch.nn.Module
    gen_optimizer: torch.optim.Optimizer
    dis_optimizer: torch.optim.Optimizer


def build_gan(
    settings: GanRunSettings, generator: torch.nn.Module, discriminator: torch.nn.Module, device: torch.device
) -> Gan:
    """The networks on ``device`` in the fast path's memory layout, and their two Adam optimizers."""
    generator, discriminator = generator.to(device), discriminator.to(device)
    if settings.channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    if uses_gemm_weight_grads(settings, device):
        use_gemm_weight_grads(generator)
        use_gemm_weight_grads(discriminator)
    if settings.compile:
        generator.compile()  # in place: the state_dict keys stay those of an uncompiled run
        discriminator.compile()
    adam = {"betas": (settings.beta1, 0.999), "lr": settings.lr}
    adam["fused" if settings.fused_adam else "foreach"] = True
    return Gan(
        generator,
        discriminator,
        LayoutFreeAdam(generator.parameters(), **adam),
        LayoutFreeAdam(discriminator.parameters(), **adam),
    )


def uses_gemm_weight_grads(settings: GanRunSettings, device: torch.device) -> bool:
    """On CPU only (cuDNN's kernels are fast at small maps), and not under torch.compile, which picks its own."""
    return settings.gemm_weight_grads and device.type == "cpu" and not settings.compile


def gan_step_of(settings: GanRunSettings, precision: str) -> GanStep:
    schedule = {name: getattr(settings, name) for name in ("d_every", "g_every") if hasattr(settings, name)}
    return GanStep(precision, settings.channels_last, settings.freeze_discriminator, settings.joint_d_pass, **schedule)


def fast_path_summary(settings: GanRunSettings, precision: str, device: torch.device) -> str:
    switches = [f"{precision} autocast" if precision != "fp32" else "fp32 (no autocast)"]
    names = ("channels_last", "freeze_discriminator", "joint_d_pass", "fused_adam", "keep_heap", "compile")
    switches += [name.replace("_", " ") for name in names if getattr(settings, name)]
    if uses_gemm_weight_grads(settings, device):
        switches.append("gemm weight grads")
    if use_producer(settings, device):
        switches.append("background producer")
    return ", ".join(switches)


def fixed_noise(settings: GanRunSettings, device: torch.device) -> torch.Tensor:
    """The sample sheets' noise, from its own generator: writing sheets draws nothing from the shared RNGs."""
    source = torch.Generator().manual_seed(settings.seed)
    return torch.randn(SHEET_SIZE, settings.latent_size, 1, 1, generator=source).to(device)


@dataclass
class RunContext:
    """What a task's ``attach_quality`` hook gets to attach its evaluation to. With several processes only rank 0
    writes: elsewhere ``metrics_log`` and ``tb_logger`` are None."""

    trainer: Engine
    gan: Gan
    run: RunDirectory
    metrics_log: MetricsLog | None
    tb_logger: TensorboardLogger | None
    device: torch.device


@dataclass
class GanTask:
    """A GAN task's own parts. ``attach_quality(context)`` returns the objects a checkpoint must hold."""

    script: str  # for the "continue:" hint
    # endless batches with state_dict / load_state_dict; with several processes, this rank's share of each batch
    make_stream: Callable[[Any, torch.device], Any]
    make_networks: Callable[[Any], tuple[torch.nn.Module, torch.nn.Module]]
    attach_quality: Callable[[RunContext], dict[str, Any]] | None = None
    stop_reason: str = "stopped early"


def train_gan(
    task: GanTask, settings: GanRunSettings, checkpoint: tuple[Path, dict[str, Any]] | None
) -> tuple[int, int, Path] | None:
    """Train (or continue) one run; returns ``(exit_code, iteration, run_dir)``, or ``None`` when ``checkpoint`` is
    already at ``max_iters`` (nothing to do)."""
    device = rank_device(resolve_device(settings.dev))
    precision = resolve_precision(settings.precision, device)
    resumed_at = checkpoint[1]["trainer"]["iteration"] if checkpoint else None
    if resumed_at is not None and resumed_at >= settings.max_iters:
        if is_main_process():
            say(f"nothing to do: {checkpoint[0]} is at iteration {resumed_at}; raise --max-iters to train further")
        return None
    if settings.keep_heap:
        keep_freed_memory()
    stream = task.make_stream(settings, device)  # unusable data is refused here, before anything is written
    try:
        return run_in_directory(task, settings, checkpoint, stream, device, precision)
    finally:
        stream.close()


def run_in_directory(
    task: GanTask,
    settings: GanRunSettings,
    checkpoint: tuple[Path, dict[str, Any]] | None,
    stream: Any,
    device: torch.device,
    precision: str,
) -> tuple[int, int, Path]:
    resumed_at = checkpoint[1]["trainer"]["iteration"] if checkpoint else None
    run_dir = Path(settings.output_dir)
    continuing = checkpoint is not None and run_dir.resolve() == run_dir_of_checkpoint(checkpoint[0]).resolve()
    with open_run_directory(run_dir, continuing=continuing) as run:
        main = is_main_process()
        if main:
            run.write_config(settings_dict(settings))
        seed_everything(settings.seed)
        gan = build_gan(settings, *task.make_networks(settings), device)
        if world_size() > 1:  # same initial weights everywhere (DDP copies rank 0's), each rank its own noise
            seed_everything(rank_seed(settings.seed))
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        trainer = create_gan_trainer(
            wrap_model(gan.generator), wrap_model(gan.discriminator), gan.gen_optimizer, gan.dis_optimizer, device,
            gan_step_of(settings, precision), scaler,
        )  # fmt: skip
        if main:
            say(f"fast path: {fast_path_summary(settings, precision, device)}")

        # Order matters: metrics and the NaN guard first, then what reports them, checkpoints last.
        averages = attach_running_averages(trainer, ["loss_gen", "loss_dis"])
        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())  # losses are the ranks' average
        reporting = attach_reporting(trainer, settings, gan, run, resumed_at, device) if main else (None, None)
        tb_logger, metrics_log = reporting
        quality_state = {}
        if task.attach_quality is not None:
            quality_state = task.attach_quality(RunContext(trainer, gan, run, metrics_log, tb_logger, device))
        to_save = {"trainer": trainer, "stream": per_rank(stream), "last_losses": trainer.last_losses, **vars(gan)}
        to_save.update(averages, **quality_state)
        if scaler is not None:
            to_save["grad_scaler"] = scaler
        resume = ExactResume(
            to_save, run.checkpoints, settings.checkpoint_every, settings_dict(settings), settings.keep_checkpoints,
            optional=["grad_scaler", "last_losses"],
        ).attach(trainer)  # fmt: skip
        if checkpoint is not None:
            resume.load(checkpoint[1])
            if main:
                metrics_log.write({"resumed_from": resumed_at, "checkpoint": str(checkpoint[0])})

        # A fresh run's "epoch" is the whole run (one progress bar); a resumed engine keeps its checkpoint's.
        epoch_length = None if checkpoint else settings.max_iters
        try:
            with GracefulStop(trainer) as stop:
                trainer.run(stream, max_iters=settings.max_iters, epoch_length=epoch_length)
        finally:
            if tb_logger is not None:
                tb_logger.close()
        exit_code = report_end(task, trainer.state, settings, stop.signal_name, resume.last_path, run.path)
        return exit_code, trainer.state.iteration, run.path


def attach_reporting(
    trainer: Engine, settings: GanRunSettings, gan: Gan, run: RunDirectory, resumed_at: int | None, device: torch.device
) -> tuple[TensorboardLogger, MetricsLog]:
    """What the user watches (rank 0's): throughput, TensorBoard, ``metrics.jsonl``, sample sheets, progress."""
    Throughput(settings.log_every, settings.batch_size).attach(trainer)
    tb_logger = attach_tensorboard(trainer, run.path, settings.log_every, resumed_at)
    metrics_log = MetricsLog(run.metrics_path, settings.log_every).attach(trainer)
    noise = fixed_noise(settings, device)
    SampleSheets(gan.generator, noise, run.samples, settings.image_every, tb_logger).attach(trainer)
    attach_progress(trainer, settings.log_every, ["avg_loss_gen", "avg_loss_dis", "iters_per_sec"])
    return tb_logger, metrics_log


def report_end(
    task: GanTask,
    state: Any,
    settings: GanRunSettings,
    signal_name: str | None,
    last_checkpoint: Path | None,
    run_path: Path,
) -> int:
    if not output_is_finite(state.output):
        if is_main_process():
            say(
                f"training stopped at iteration {state.iteration}: a loss became NaN or infinite; "
                f"the last good checkpoint is {last_checkpoint}"
            )
        return 1
    exit_code = 128 + signal.Signals[signal_name].value if signal_name else 0  # the shell's convention: 130, 143
    if not is_main_process():
        return exit_code
    if signal_name:
        how = f"stopped by {signal_name}"
    elif state.iteration < settings.max_iters:
        how = task.stop_reason
    else:
        how = "finished"
    say(f"{how} at iteration {state.iteration}; checkpoint {last_checkpoint}")
    say(f"  watch:    tensorboard --logdir {run_path} --host 127.0.0.1")
    say(f"  continue: python scripts/{task.script} --resume {run_path} --max-iters N")
    return exit_code
