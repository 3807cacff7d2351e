"""What the two GAN tasks share: settings, networks and optimizers in the fast path's form, the GAN engine and the
sample sheets. ``tasks.atari_gan`` (live Atari frames, Atari-FID) and ``tasks.image_gan`` (an image folder, chapter
004's AnimeGAN) add their data, their networks' options and their quality measure.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import EMAHandler

from engines.adam import LayoutFreeAdam
from engines.gan import GanStep, create_gan_trainer
from engines.gemm_weight_grads import use_gemm_weight_grads
from handlers import SampleSheets
from runner.checkpoint_files import ResumePoint
from runner.device import resolve_precision
from runner.distributed import is_main_process, per_rank, wrap_model
from runner.errors import say
from runner.machine import usable_cores
from runner.memory import keep_freed_memory
from runner.settings import (
    RunSettings,
    in_open_unit_interval,
    keep_checkpoints_setting,
    one_of,
    positive,
    setting,
)
from tasks.parts import Attached, Parts, RunContext
from tasks.standard_run import Task, continue_hint, watch_hint

SHEET_SIZE = 64  # images per sample sheet, as the chapters' make_grid(...[:64])


@dataclass(frozen=True)
class GanRunSettings(RunSettings):
    """The fields every GAN task has. A task subclasses it, redefining a field to change its default or check."""

    # how long, how often
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
    keep_checkpoints: int = keep_checkpoints_setting()
    # data, model and optimizer
    batch_size: int = setting(16, "images per batch", check=positive)
    image_size: int = setting(64, "side of the square images", check=positive)
    latent_size: int = setting(100, "length of the generator's noise vector", check=positive)
    filters: int = setting(64, "filters of the first discriminator / last generator layer", check=positive)
    lr: float = setting(1e-4, "Adam learning rate of both networks", check=positive)
    beta1: float = setting(0.5, "Adam beta1 of both networks (beta2 is 0.999)", check=in_open_unit_interval)
    # the fast path (docs/speed.md): each switch on by default where it keeps quality, each can be turned off
    precision: str = setting(
        "auto",
        "autocast: auto (bf16 where supported, fp16 on older GPUs), bf16, fp16 (CUDA) or fp32 (off)",
        check=one_of("auto", "bf16", "fp16", "fp32"),
        resume="free",
    )
    channels_last: bool = setting(True, "channels-last memory layout for both networks", resume="free")
    freeze_discriminator: bool = setting(
        True, "skip D's weight gradients in the generator step (the book computes and discards them)", resume="free"
    )
    joint_d_pass: bool = setting(
        True, "D's real and fake passes as one batched pass (each keeps its own BatchNorm statistics)", resume="free"
    )
    fused_adam: bool = setting(True, "fused Adam kernels (else foreach)", resume="free")
    gemm_weight_grads: bool = setting(
        True,
        "CPU: weight gradients of layers with a small map as one matrix product, where oneDNN is slow (8x8 or "
        "smaller in bf16, 4x4 in fp32, 1x1 in fp32 on AMD CPUs with AVX-512)",
        resume="free",
    )
    producer: str = setting(
        "auto",
        "make batches in a background thread: on, off, or auto (on when training leaves a CPU core free)",
        check=one_of("auto", "on", "off"),
        resume="free",
    )
    keep_heap: bool = setting(
        True, "keep freed memory for reuse (glibc): far fewer page faults per step on CPU", resume="free"
    )
    compile: bool = setting(False, "torch.compile both networks (meant for CUDA; slower on CPU)", resume="free")
    compile_mode: str = setting(
        "default",
        "torch.compile's mode with --compile: default, reduce-overhead (CUDA graphs) or max-autotune",
        check=one_of("default", "reduce-overhead", "max-autotune"),
        resume="free",
    )
    # what the sample sheets and the quality measure also see: an exponential moving average of G's weights
    ema_decay: float = setting(
        0.999,
        "weight of the past in the generator's exponential moving average (EMA), updated each iteration; 0: none",
        check=in_open_unit_interval,
    )
    # several processes (runner.distributed): --batch-size is the global batch, split evenly over them
    nproc_per_node: int = setting(
        1, "training processes on this machine (DDP via ignite.distributed; gloo on CPU, nccl on CUDA)", check=positive
    )


def use_producer(settings: GanRunSettings, device: torch.device) -> bool:
    """``--producer auto``: a background producer pays off only with a core to itself. On a CPU whose cores all run
    the step's threads it only interrupts them (measured on 2 cores: 0.112 s/it with it, 0.0965 without)."""
    if settings.producer != "auto":
        return settings.producer == "on"
    return device.type == "cuda" or free_cores() > 0


def free_cores() -> int:
    """The cores this machine has beyond the training step's threads (of every training process here)."""
    return usable_cores() - torch.get_num_threads() * idist.get_nproc_per_node()


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
        # In place: the state_dict keys stay those of an uncompiled run.
        generator.compile(mode=settings.compile_mode)
        discriminator.compile(mode=settings.compile_mode)
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


def fast_path_summary(settings: GanRunSettings, precision: str, device: torch.device, data: Any = None) -> str:
    switches = [f"{precision} autocast" if precision != "fp32" else "fp32 (no autocast)"]
    names = ("channels_last", "freeze_discriminator", "joint_d_pass", "fused_adam", "keep_heap", "compile")
    switches += [name.replace("_", " ") for name in names if getattr(settings, name)]
    if uses_gemm_weight_grads(settings, device):
        switches.append("gemm weight grads")
    producer = getattr(data, "producer", "")  # "background producer", "2 producer processes"
    if producer:
        switches.append(producer)
    return ", ".join(switches)


def fixed_noise(settings: GanRunSettings, device: torch.device) -> torch.Tensor:
    """The sample sheets' noise, from its own generator: writing sheets draws nothing from the shared RNGs."""
    source = torch.Generator().manual_seed(settings.seed)
    return torch.randn(SHEET_SIZE, settings.latent_size, 1, 1, generator=source).to(device)


class GanTask(Task):
    """A GAN task: its subclass makes the data (``make_stream``: endless batches with ``state_dict``, this
    process's share of each) and the networks (``make_networks``), and may add a quality measure."""

    loss_keys = ("loss_gen", "loss_dis")

    def make_stream(self, device: torch.device, resume: ResumePoint | None) -> Any:
        raise NotImplementedError

    def make_networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        raise NotImplementedError

    def prepare(self, device: torch.device, resume: ResumePoint | None) -> Any:
        self.precision = resolve_precision(self.settings.precision, device)
        if self.settings.keep_heap:
            keep_freed_memory()
        return self.make_stream(device, resume)

    def build(self, data: Any, device: torch.device) -> Parts:
        settings = self.settings
        self.gan = gan = build_gan(settings, *self.make_networks(), device)
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        trainer = create_gan_trainer(
            wrap_model(gan.generator),
            wrap_model(gan.discriminator),
            gan.gen_optimizer,
            gan.dis_optimizer,
            device,
            gan_step_of(settings, self.precision),
            scaler,
        )
        if is_main_process():
            say(f"fast path: {fast_path_summary(settings, self.precision, device, data)}")
        to_save = {"stream": per_rank(data), "last_losses": trainer.last_losses, **vars(gan)}
        if scaler is not None:
            to_save["grad_scaler"] = scaler
        self.ema_generator = None
        if settings.ema_decay:
            # Ignite's EMAHandler: ema = decay * ema + (1 - decay) * G after each step; BatchNorm's statistics are G's.
            ema = EMAHandler(gan.generator, momentum=1 - settings.ema_decay)
            ema.attach(trainer)
            self.ema_generator = to_save["generator_ema"] = ema.ema_model
        # A run from before EMA existed starts its average at its resume; one from before fp16 has no scaler.
        return Parts(trainer, data, to_save, optional=("grad_scaler", "last_losses", "generator_ema"))

    def generators(self) -> dict[str, torch.nn.Module]:
        """What sample sheets and evaluations show, by name: ``fake`` (G), and ``fake_ema`` (its average) if on."""
        shown = {"fake": self.gan.generator}
        if self.ema_generator is not None:
            shown["fake_ema"] = self.ema_generator
        return shown

    def attach_handlers(self, context: RunContext) -> Attached:
        """Sample sheets of the generator on a fixed noise batch (by the process that writes)."""
        if context.writes:
            noise = fixed_noise(self.settings, context.device)
            sheets = SampleSheets(
                self.generators(), noise, context.run.samples, self.settings.image_every, context.tb_logger
            )
            sheets.attach(context.trainer)
        return Attached()

    def hints(self, run_path: Path, exit_code: int) -> list[str]:
        return [watch_hint(run_path), continue_hint(self, run_path)]
