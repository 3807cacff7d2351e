"""What the two GAN tasks share: networks and optimizers in the fast path's form, the GAN engine and the
sample sheets. ``tasks.atari_gan`` (live Atari frames, Atari-FID) and ``tasks.image_gan`` (an image folder, chapter
004's AnimeGAN) add their data, their networks' options and their quality measure; the settings and recipes are in
``tasks.gan_settings``.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from engines.adam import LayoutFreeAdam
from engines.augment import DiffAugment
from engines.batch_stats import OwnStatistics
from engines.gan import PRECISIONS, GanStep, create_gan_trainer
from engines.kernel_plan import KernelPlan
from handlers import SampleSheets
from handlers.ema import ema_handler_class
from handlers.lr_decay import continue_from_iteration, decay_to_zero
from runner.checkpoint_files import ResumePoint
from runner.device import resolve_precision
from runner.distributed import is_main_process, per_rank, wrap_model
from runner.errors import say
from runner.machine import usable_cores
from runner.memory import keep_freed_memory
from tasks.gan_settings import EMA_WARMUP_START_DECAY, GanRunSettings, technique_summary
from tasks.parts import Attached, Parts, RunContext
from tasks.standard_run import Task, continue_hint, watch_hint

SHEET_SIZE = 64  # images per sample sheet, as the chapters' make_grid(...[:64])


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
    if settings.compile:
        # In place: the state_dict keys stay those of an uncompiled run.
        generator.compile(mode=settings.compile_mode)
        discriminator.compile(mode=settings.compile_mode)
    adam = {"betas": (settings.beta1, settings.beta2), "fused" if settings.fused_adam else "foreach": True}
    return Gan(
        generator,
        discriminator,
        LayoutFreeAdam(generator.parameters(), lr=settings.gen_lr or settings.lr, **adam),
        LayoutFreeAdam(discriminator.parameters(), lr=settings.dis_lr or settings.lr, **adam),
    )


def kernel_plan_of(settings: GanRunSettings, gan: Gan, device: torch.device) -> KernelPlan | None:
    """The CPU kernel plan of both networks (``--kernel-plan``), settled by ``settle_kernels`` when the trainer
    starts: after a resume's checkpoint has given back its plan. None on CUDA (cuDNN chooses; ``--cudnn-benchmark``)
    and under torch.compile, which chooses its own."""
    if device.type != "cpu" or settings.compile:
        return None
    return KernelPlan({"generator": gan.generator, "discriminator": gan.discriminator})


def settle_kernels(plan: KernelPlan, settings: GanRunSettings, precision: str) -> None:
    """``--kernel-plan``; with ``--deterministic`` an ``auto`` plan is the library's, so that fresh runs with the
    same flags repeat each other exactly (a measured plan differs from one machine, or measurement, to the next)."""
    choice = "book" if settings.deterministic and settings.kernel_plan == "auto" else settings.kernel_plan
    examples = functools.partial(plan_examples, settings, plan.networks["generator"])
    plan.resolve(choice, examples, PRECISIONS[precision] or torch.float32)
    if is_main_process():
        say(plan.summary())


def plan_examples(settings: GanRunSettings, generator: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The batches the networks see in a step, for timing their kernels: G a batch of noise, D G's images at the
    size of its own step's batch (real and fake in one pass with ``--joint-d-pass``)."""
    source = torch.Generator().manual_seed(settings.seed)  # drawing nothing from the run's RNGs
    batch = settings.batch_size // settings.nproc_per_node
    d_batch = 2 * batch if settings.joint_d_pass else batch
    device = next(generator.parameters()).device
    noise = torch.randn(max(batch, d_batch), settings.latent_size, 1, 1, generator=source).to(device)
    was_training = generator.training
    with torch.no_grad():
        images = generator.eval()(noise[:d_batch])  # eval: no statistic moves
    generator.train(was_training)
    return {"generator": noise[:batch], "discriminator": images}


def gan_step_of(settings: GanRunSettings, precision: str, device: torch.device) -> GanStep:
    d_every, g_every = settings.step_every()
    return GanStep(
        precision,
        settings.channels_last,
        settings.freeze_discriminator,
        settings.joint_d_pass,
        loss=settings.loss,
        r1_weight=settings.r1_weight,
        r1_every=settings.r1_every,
        d_every=d_every,
        g_every=g_every,
        losses_on_device=device.type == "cuda",
    )


def make_augment(settings: GanRunSettings) -> DiffAugment | None:
    """``--augment``'s view of D's input, or None; its strength moves with the global batch (all ranks agree)."""
    if settings.augment == "none":
        return None
    return DiffAugment(
        settings.augment.split(","), settings.augment_p, settings.ada_target, settings.ada_speed, settings.batch_size
    )


def fast_path_summary(settings: GanRunSettings, precision: str, data: Any = None) -> str:
    switches = [f"{precision} autocast" if precision != "fp32" else "fp32 (no autocast)"]
    names = ("channels_last", "freeze_discriminator", "joint_d_pass", "fused_adam", "keep_heap", "compile")
    switches += [name.replace("_", " ") for name in names if getattr(settings, name)]
    producer = getattr(data, "producer", "")  # "background producer", "2 producer processes"
    if producer:
        switches.append(producer)
    return ", ".join(switches)


def attach_ema(
    settings: GanRunSettings, generator: torch.nn.Module, trainer: Engine, device: torch.device
) -> torch.nn.Module | None:
    """Ignite's EMAHandler (ema = decay * ema + (1 - decay) * G after each step; BatchNorm's statistics are G's), with
    its warm-up if asked, its update one multi-tensor kernel on CUDA; returns the average, or None without one."""
    if not settings.ema_decay:
        return None
    warmup = {}
    if settings.ema_warmup:
        warmup = {"momentum_warmup": 1 - EMA_WARMUP_START_DECAY, "warmup_iters": settings.ema_warmup}
    ema = ema_handler_class(device)(generator, momentum=1 - settings.ema_decay, **warmup)
    ema.attach(trainer)
    if settings.ema_warmup:
        # The warm-up counts its own events from 0 at each start: a resumed run goes on from its iteration instead.
        trainer.add_event_handler(Events.STARTED, continue_from_iteration, ema.momentum_scheduler)
    return ema.ema_model


OWN_STATISTICS_SEED_OFFSET = 1_000_033  # the noise that gives a shown generator its BatchNorm statistics


def shown_view(settings: GanRunSettings) -> OwnStatistics | None:
    """How sheets, Atari-FID and ``generate`` show a generator (``--shown-statistics``): a copy with its own BatchNorm
    statistics, from noise of its own seed (the same at every evaluation), or (None) as it is, in eval mode. A run
    makes one and hands it to both, so they share each copy (``BuiltGan.shown``)."""
    if settings.shown_statistics != "own":
        return None
    return OwnStatistics(settings.latent_size, settings.seed + OWN_STATISTICS_SEED_OFFSET)


def fixed_noise(settings: GanRunSettings, device: torch.device) -> torch.Tensor:
    """The sample sheets' noise, from its own generator: writing sheets draws nothing from the shared RNGs."""
    source = torch.Generator().manual_seed(settings.seed)
    return torch.randn(SHEET_SIZE, settings.latent_size, 1, 1, generator=source).to(device)


@dataclass(frozen=True)
class BuiltGan:
    """What a GAN task's later hooks need of what ``build`` made: the networks and G's moving average."""

    gan: Any  # engines.gan's networks and optimizers
    ema_generator: torch.nn.Module | None
    kernel_plan: KernelPlan | None = None  # settled when the trainer starts
    shown: OwnStatistics | None = None  # how sheets and evaluations show a generator (None: as it is)

    def generators(self) -> dict[str, torch.nn.Module]:
        """What sample sheets and evaluations show, by name: ``fake`` (G), and ``fake_ema`` (its average) if on."""
        shown = {"fake": self.gan.generator}
        if self.ema_generator is not None:
            shown["fake_ema"] = self.ema_generator
        return shown


class GanTask(Task):
    """A GAN task: its subclass makes the data (``make_stream``: endless batches with ``state_dict``, this
    process's share of each) and the networks (``make_networks``), and may add a quality measure."""

    loss_keys = ("loss_gen", "loss_dis")

    def make_stream(self, device: torch.device, resume: ResumePoint | None) -> Any:
        raise NotImplementedError

    def make_networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        raise NotImplementedError

    def prepare(self, device: torch.device, resume: ResumePoint | None) -> Any:
        resolve_precision(self.settings.precision, device)  # refused here, before anything is written
        if self.settings.keep_heap:
            keep_freed_memory()
        return self.make_stream(device, resume)

    def build(self, data: Any, device: torch.device) -> Parts:
        settings = self.settings
        precision = resolve_precision(settings.precision, device)
        gan = build_gan(settings, *self.make_networks(), device)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        augment = make_augment(settings)
        trainer = create_gan_trainer(
            wrap_model(gan.generator),
            wrap_model(gan.discriminator),
            gan.gen_optimizer,
            gan.dis_optimizer,
            device,
            gan_step_of(settings, precision, device),
            scaler,
            augment,
        )
        if settings.lr_decay_from:
            rates = [(opt, opt.param_groups[0]["lr"]) for opt in (gan.gen_optimizer, gan.dis_optimizer)]  # settings'
            decay_to_zero(trainer, rates, settings.lr_decay_from, settings.lr_decay_end())
        if is_main_process():
            say(f"fast path: {fast_path_summary(settings, precision, data)}")
            techniques = technique_summary(settings)
            if techniques:  # the chapter's GAN says nothing more than it always did
                say(f"{settings.recipe} recipe: {techniques}")
        to_save = {"stream": per_rank(data), "last_losses": trainer.last_losses, **vars(gan)}
        if scaler is not None:
            to_save["grad_scaler"] = scaler
        if augment is not None and augment.adaptive:
            to_save["augment"] = augment  # the adapted strength
        ema_generator = attach_ema(settings, gan.generator, trainer, device)
        if ema_generator is not None:
            to_save["generator_ema"] = ema_generator
        plan = kernel_plan_of(settings, gan, device)
        if plan is not None:
            to_save["kernel_plan"] = plan  # a resume computes with the kernels the run began with
            trainer.add_event_handler(Events.STARTED, lambda _: settle_kernels(plan, settings, precision))
        # A run from before EMA existed starts its average at its resume; one from before fp16 has no scaler; one
        # from before kernel plans takes the machine's plan.
        optional = ("grad_scaler", "last_losses", "generator_ema", "kernel_plan")
        return Parts(trainer, data, to_save, optional, BuiltGan(gan, ema_generator, plan, shown_view(settings)))

    def attach_handlers(self, context: RunContext) -> Attached:
        """Sample sheets of the generator on a fixed noise batch (by the process that writes)."""
        if context.writes:
            noise = fixed_noise(self.settings, context.device)
            sheets = SampleSheets(
                context.built.generators(),
                noise,
                context.run.samples,
                self.settings.image_every,
                context.tb_logger,
                context.built.shown.for_sheets if context.built.shown is not None else None,
            )
            sheets.attach(context.trainer)
        plan = context.built.kernel_plan
        if context.writes and plan is not None:  # after the plan is settled: its handler came first
            context.trainer.add_event_handler(Events.STARTED, lambda _: plan.write(context.run.layout.kernel_plan))
        return Attached()

    def hints(self, run_path: Path, exit_code: int) -> list[str]:
        return [watch_hint(run_path), continue_hint(self, run_path)]
