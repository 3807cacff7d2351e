"""The GAN training step of Deep RL Hands-On, chapter 3, as an Ignite process function, with the techniques of a
stable recipe as options.

Each iteration: draw a noise batch, generate fakes; one discriminator step on the real batch (label 1) and the
*detached* fakes (label 0); one generator step that asks the discriminator to call the fakes real. The
discriminator returns logits and the loss is ``BCEWithLogitsLoss`` (Sigmoid + BCELoss, numerically safe).

    trainer = create_gan_trainer(generator, discriminator, gen_optimizer, dis_optimizer, device)
    trainer.run(frame_stream, max_iters=1000)   # state.output == {"loss_dis": 1.38, "loss_gen": 0.71}

``GanStep`` holds the switches of the fast path (issue 6 in docs/speed.md) and the schedule of chapter 004's
AnimeGAN (the discriminator trained every ``d_every`` batches, the generator every ``g_every``):

- ``precision``: ``"bf16"`` or ``"fp16"`` runs the forward passes under autocast (weights and optimizer states stay
  fp32); ``"fp16"`` needs a ``GradScaler``;
- ``channels_last``: the real batch in the memory layout the models were converted to;
- ``freeze_discriminator``: no gradients for D's weights during the generator step. The book computes them and
  throws them away at the next ``zero_grad``, so this changes no number;
- ``joint_d_pass``: the discriminator step's real and fake passes as one batched pass, each batch still normalised
  by its own BatchNorm statistics (``discriminator(real, fake)``): the book's numbers, fewer and larger kernels.

and the techniques (all off by default: the chapter's step, bit for bit):

- ``loss``: ``bce`` (the chapter), ``hinge`` or ``relativistic`` (``engines.gan_losses``); the relativistic
  generator step also asks D about the real batch (without gradients);
- ``r1_weight``, ``r1_every``: the lazy R1 penalty on the real frames D saw, added to D's loss every k-th
  iteration with weight ``gamma / 2 * k``; the step reports it as ``r1``;
- ``augment`` (a ``DiffAugment``): what D sees of real and fake frames, in both steps, is augmented; with an
  adaptive strength the step reports ``d_real_sign`` (ADA's measure) and ``augment_p``.

The networks may be wrapped in ``DistributedDataParallel`` (``runner.distributed``): the discriminator step goes
through the wrapper (its gradients are averaged over the ranks); the generator step calls the discriminator inside
it, whose weights that step does not train, and only the generator's gradients are averaged; R1's pass goes through
the inner network too, and its weight gradients are averaged with the step's in the one backward pass. The numbers
returned are the ranks' average.
"""

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.metrics import FID
from torch import nn

from datasets.frames import frames_to_float
from engines.augment import DiffAugment
from engines.distributed import copy_buffers_from_rank_zero, mean_over_ranks
from engines.gan_losses import LOSSES, NEEDS_REAL_LOGITS_FOR_G, discriminator_loss, generator_loss, r1_penalty

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class GanStep:
    precision: str = "fp32"
    channels_last: bool = False
    freeze_discriminator: bool = True
    joint_d_pass: bool = False
    d_every: int = 1
    g_every: int = 1
    loss: str = "bce"  # engines.gan_losses.LOSSES
    r1_weight: float = 0.0  # gamma of the R1 penalty, gamma / 2 * E||grad D(real)||^2 (0: none)
    r1_every: int = 16  # lazy R1: computed every k-th discriminator iteration, weighted by k
    # The numbers stay on the device as float64 tensors (a GPU's: the host then never waits for a step; float64, so
    # the running averages' arithmetic is the Python floats'), instead of Python floats after one sync per step.
    losses_on_device: bool = False


class LastLosses:
    """The latest value of each number the step reports. With ``d_every``/``g_every`` > 1 an iteration may train
    only one network, and the lazy R1 penalty is measured only every k iterations: the other numbers are the latest
    ones measured. A checkpoint holds them, so a resumed run reports the same numbers."""

    def __init__(self, names: tuple[str, ...] = ("loss_dis", "loss_gen")) -> None:
        self.values = dict.fromkeys(names, float("nan"))

    def state_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.values.items()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.values.update((name, float(value)) for name, value in state.items())


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for ``module`` inside the block (gradients still flow through it to its input)."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


class GanProcess:
    """The process function: one discriminator step and one generator step per iteration (as ``GanStep`` says),
    on the ``DiffAugment`` view of the frames if one is given. Returns the step's numbers as Python floats."""

    def __init__(
        self,
        networks: tuple[nn.Module, nn.Module],
        optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
        device: torch.device,
        step: GanStep,
        scaler: torch.amp.GradScaler | None,
        augment: DiffAugment | None,
    ):
        self.generator, self.discriminator = networks
        self.gen_optimizer, self.dis_optimizer = optimizers
        self.inner_discriminator = unwrapped(self.discriminator)  # for the G step and R1: no DDP synchronisation
        self.latent_size = unwrapped(self.generator).latent_size
        self.device, self.step, self.scaler, self.augment = device, step, scaler, augment
        self.dtype = PRECISIONS[step.precision]
        self.joint = step.joint_d_pass and hasattr(self.inner_discriminator, "forward_pair")
        self.last = LastLosses(reported_names(step, augment))

    def autocast(self) -> contextlib.AbstractContextManager:
        # Each network's weights are cast once per block; D's change between the two steps, so two blocks.
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def seen(self, images: torch.Tensor) -> torch.Tensor:
        """What D is shown: the images, or their augmented view."""
        return self.augment(images) if self.augment is not None else images

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, with_r1: bool) -> dict[str, torch.Tensor]:
        self.dis_optimizer.zero_grad(set_to_none=True)
        real_seen, fake_seen = self.seen(real), self.seen(fake.detach())  # no gradient into G
        with self.autocast():
            if self.joint:
                real_logits, fake_logits = self.discriminator(real_seen, fake_seen)  # forward_pair, through DDP
            else:
                real_logits, fake_logits = self.discriminator(real_seen), self.discriminator(fake_seen)
            real_logits, fake_logits = real_logits.float(), fake_logits.float()
        dis_loss = discriminator_loss(self.step.loss, real_logits, fake_logits)
        numbers = {"loss_dis": dis_loss.detach()}
        total = dis_loss
        if with_r1:
            penalty = r1_penalty(self.inner_discriminator, real_seen)
            total = dis_loss + self.step.r1_weight / 2 * self.step.r1_every * penalty
            numbers["r1"] = penalty.detach()
        if self.augment is not None and self.augment.adaptive:
            numbers["d_real_sign"] = real_logits.detach().sign().mean()  # ADA's overfitting measure
        self.backward_and_step(total, self.dis_optimizer)
        return numbers

    def generator_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.gen_optimizer.zero_grad(set_to_none=True)
        discriminator = self.inner_discriminator
        freeze = frozen(discriminator) if self.step.freeze_discriminator else contextlib.nullcontext()
        with freeze, self.autocast():
            fooled_logits = discriminator(self.seen(fake)).float()
            real_logits = None
            if self.step.loss in NEEDS_REAL_LOGITS_FOR_G:
                with torch.no_grad():
                    real_logits = discriminator(self.seen(real)).float()
        gen_loss = generator_loss(self.step.loss, fooled_logits, real_logits)
        self.backward_and_step(gen_loss, self.gen_optimizer)
        return gen_loss.detach()

    def __call__(self, engine: Engine, real_batch: torch.Tensor) -> dict[str, float]:
        index, step = engine.state.iteration - 1, self.step
        real = real_batch.to(self.device, non_blocking=self.device.type == "cuda")
        if real.dtype == torch.uint8:  # frames as the emulators made them: converted here, on the device
            real = frames_to_float(real)
        real = real.contiguous(memory_format=torch.channels_last if step.channels_last else torch.contiguous_format)
        noise = torch.randn(real.shape[0], self.latent_size, 1, 1, device=self.device)
        train_dis, train_gen = index % step.d_every == 0, index % step.g_every == 0
        # Without a generator step no graph is kept (and DDP expects a backward after a forward that records one).
        with self.autocast(), torch.set_grad_enabled(train_gen):
            fake = self.generator(noise)
        numbers = {}
        if train_dis:
            with_r1 = step.r1_weight > 0 and index % step.r1_every == 0
            numbers.update(self.discriminator_step(real, fake, with_r1))
        if train_gen:
            numbers["loss_gen"] = self.generator_step(real, fake)
        if self.scaler is not None and numbers:  # update() needs a step() before it
            self.scaler.update()
        if numbers:  # averaged over the ranks; then one device sync for every number, or none
            values = mean_over_ranks(torch.stack(list(numbers.values())).float())
            values = values.double().unbind() if step.losses_on_device else values.tolist()
            self.last.values.update(zip(numbers, values, strict=True))
        if "d_real_sign" in numbers:  # ADA: the strength follows D's confidence, the same on every rank
            self.augment.adapt(float(self.last.values["d_real_sign"]))
            self.last.values["augment_p"] = self.augment.p
        return dict(self.last.values)


def reported_names(step: GanStep, augment: DiffAugment | None) -> tuple[str, ...]:
    """The numbers a step reports: both losses, and what the techniques that are on measure."""
    names = ["loss_dis", "loss_gen"]
    if step.r1_weight > 0:
        names.append("r1")
    if augment is not None and augment.adaptive:
        names += ["d_real_sign", "augment_p"]
    return tuple(names)


def create_gan_trainer(
    generator: nn.Module,
    discriminator: nn.Module,
    gen_optimizer: torch.optim.Optimizer,
    dis_optimizer: torch.optim.Optimizer,
    device: torch.device,
    step: GanStep = GanStep(),
    scaler: torch.amp.GradScaler | None = None,
    augment: DiffAugment | None = None,
) -> Engine:
    """The trainer; ``trainer.last_losses`` is a ``LastLosses`` a checkpoint should hold when ``g_every`` or
    ``d_every`` is above 1, or the R1 penalty is lazy; ``augment``'s strength, when adaptive, is state too."""
    if step.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {step.precision!r}")
    if step.precision == "fp16" and scaler is None:
        raise ValueError("fp16 needs a GradScaler: its gradients underflow without one")
    if step.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {step.loss!r}")
    process = GanProcess((generator, discriminator), (gen_optimizer, dis_optimizer), device, step, scaler, augment)
    trainer = Engine(process)
    trainer.last_losses = process.last
    return trainer


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper, or ``module``."""
    return getattr(module, "module", module)


def create_fid_evaluator(
    generators: nn.Module | Mapping[str, nn.Module],
    features: nn.Module,
    real_frames: torch.Tensor | Callable[[], torch.Tensor],
    noise: torch.Tensor,
    batch_size: int,
    device: torch.device,
    shown: Callable[[nn.Module], nn.Module] | None = None,
) -> Engine:
    """An evaluator whose ``run(fid_batches(n, batch_size))`` leaves ``state.metrics[name]`` for each of
    ``generators`` (a name -> generator mapping, e.g. ``{"fid": G, "fid_ema": G_ema}``; one module is ``{"fid": G}``):
    Ignite's ``FID`` between that generator's images of ``noise`` and ``real_frames``, in the feature space of
    ``features`` (a module with a ``feature_size``). ``real_frames`` may be a function that makes them: it is called
    at the first evaluation. Every generator meets the same noise and the same real frames.

    The generators run in ``eval()`` under ``no_grad`` on fixed noise: evaluating changes no model state and draws
    from no RNG, so a run with evaluations computes the same training numbers as one without. With several
    processes each evaluates its share of the samples with rank 0's BatchNorm statistics, and FID's sums are reduced
    over the ranks: the value is that of all the samples. ``shown``, if given, makes what is evaluated of each
    generator at each evaluation (``engines.batch_stats.with_own_statistics``: a copy with its own BatchNorm
    statistics).
    """
    generators = {"fid": generators} if isinstance(generators, nn.Module) else dict(generators)
    generator_modes: dict[str, bool] = {}
    real = {"frames": real_frames}
    views: dict[str, nn.Module] = {}

    def fid_step(engine: Engine, chunk: slice) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            fakes = {name: view(noise[chunk]).float() for name, view in views.items()}
        if callable(real["frames"]):
            real["frames"] = real["frames"]()
        return fakes, real["frames"][chunk].to(device)

    evaluator = Engine(fid_step)

    @evaluator.on(Events.STARTED)
    def generators_to_eval(_: Engine) -> None:
        for name, generator in generators.items():
            generator_modes[name] = generator.training
            generator.eval()
            copy_buffers_from_rank_zero(generator)
            views[name] = shown(unwrapped(generator)) if shown is not None else generator

    @evaluator.on(Events.COMPLETED)
    def generators_back(_: Engine) -> None:
        views.clear()
        for name, generator in generators.items():
            generator.train(generator_modes[name])

    features.eval()
    for name in generators:
        FID(
            num_features=features.feature_size,
            feature_extractor=features,
            output_transform=lambda output, name=name: (output[0][name], output[1]),
            device=device,
        ).attach(evaluator, name)
    return evaluator


def fid_batches(samples: int, batch_size: int) -> list[slice]:
    """The evaluator's data: this process's share of the ``samples`` images (all of them with one process), in
    slices of at most ``batch_size``."""
    rank, ranks = idist.get_rank(), idist.get_world_size()
    start, stop = samples * rank // ranks, samples * (rank + 1) // ranks
    return [slice(first, min(first + batch_size, stop)) for first in range(start, stop, batch_size)]
