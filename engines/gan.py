"""The GAN training step of Deep RL Hands-On, chapter 3, as an Ignite process function.

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

The networks may be wrapped in ``DistributedDataParallel`` (``runner.distributed``): the discriminator step goes
through the wrapper (its gradients are averaged over the ranks); the generator step calls the discriminator inside
it, whose weights that step does not train, and only the generator's gradients are averaged. The losses returned are
the ranks' average.
"""

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.metrics import FID
from torch import nn

from engines.distributed import copy_buffers_from_rank_zero, mean_over_ranks

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class GanStep:
    precision: str = "fp32"
    channels_last: bool = False
    freeze_discriminator: bool = True
    joint_d_pass: bool = False
    d_every: int = 1
    g_every: int = 1


class LastLosses:
    """The losses of the latest discriminator and generator steps. With ``d_every``/``g_every`` > 1 an iteration
    may train only one network; the other's loss is the latest one measured. A checkpoint holds it, so a resumed
    run reports the same numbers."""

    def __init__(self) -> None:
        self.values = {"loss_dis": float("nan"), "loss_gen": float("nan")}

    def state_dict(self) -> dict[str, float]:
        return dict(self.values)

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.values = {name: float(value) for name, value in state.items()}


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


def create_gan_trainer(
    generator: nn.Module,
    discriminator: nn.Module,
    gen_optimizer: torch.optim.Optimizer,
    dis_optimizer: torch.optim.Optimizer,
    device: torch.device,
    step: GanStep = GanStep(),
    scaler: torch.amp.GradScaler | None = None,
) -> Engine:
    """The trainer; ``trainer.last_losses`` is a ``LastLosses`` a checkpoint should hold when ``g_every`` or
    ``d_every`` is above 1."""
    if step.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {step.precision!r}")
    if step.precision == "fp16" and scaler is None:
        raise ValueError("fp16 needs a GradScaler: its gradients underflow without one")
    objective = nn.BCEWithLogitsLoss()
    inner_discriminator = unwrapped(discriminator)  # for the generator step: no DDP synchronisation of D
    latent_size = unwrapped(generator).latent_size
    non_blocking = device.type == "cuda"
    dtype = PRECISIONS[step.precision]
    joint = step.joint_d_pass and hasattr(inner_discriminator, "forward_pair")
    last = LastLosses()

    def autocast() -> contextlib.AbstractContextManager:
        # Each network's weights are cast once per block; D's change between the two steps, so two blocks.
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)

    def discriminator_step(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        dis_optimizer.zero_grad(set_to_none=True)
        with autocast():
            if joint:
                real_logits, fake_logits = discriminator(real, fake.detach())  # forward_pair, through DDP
            else:
                real_logits, fake_logits = discriminator(real), discriminator(fake.detach())  # no gradient into G
            real_logits, fake_logits = real_logits.float(), fake_logits.float()
        dis_loss = objective(real_logits, torch.ones_like(real_logits)) + objective(
            fake_logits, torch.zeros_like(fake_logits)
        )
        backward_and_step(dis_loss, dis_optimizer)
        return dis_loss

    def generator_step(fake: torch.Tensor) -> torch.Tensor:
        gen_optimizer.zero_grad(set_to_none=True)
        freeze = frozen(inner_discriminator) if step.freeze_discriminator else contextlib.nullcontext()
        with freeze, autocast():
            fooled_logits = inner_discriminator(fake).float()
        gen_loss = objective(fooled_logits, torch.ones_like(fooled_logits))
        backward_and_step(gen_loss, gen_optimizer)
        return gen_loss

    def gan_step(engine: Engine, real_batch: torch.Tensor) -> dict[str, float]:
        index = engine.state.iteration - 1
        real = real_batch.to(device, non_blocking=non_blocking)
        if step.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        noise = torch.randn(real.shape[0], latent_size, 1, 1, device=device)
        train_dis, train_gen = index % step.d_every == 0, index % step.g_every == 0
        # Without a generator step no graph is kept (and DDP expects a backward after a forward that records one).
        with autocast(), torch.set_grad_enabled(train_gen):
            fake = generator(noise)
        losses = {}
        if train_dis:
            losses["loss_dis"] = discriminator_step(real, fake)
        if train_gen:
            losses["loss_gen"] = generator_step(fake)
        if scaler is not None and losses:  # update() needs a step() before it
            scaler.update()
        if losses:  # one device sync for both numbers, averaged over the ranks
            values = mean_over_ranks(torch.stack(list(losses.values())).detach())
            last.values.update(zip(losses, values.tolist(), strict=True))
        return dict(last.values)

    trainer = Engine(gan_step)
    trainer.last_losses = last
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
) -> Engine:
    """An evaluator whose ``run(fid_batches(n, batch_size))`` leaves ``state.metrics[name]`` for each of
    ``generators`` (a name -> generator mapping, e.g. ``{"fid": G, "fid_ema": G_ema}``; one module is ``{"fid": G}``):
    Ignite's ``FID`` between that generator's images of ``noise`` and ``real_frames``, in the feature space of
    ``features`` (a module with a ``feature_size``). ``real_frames`` may be a function that makes them: it is called
    at the first evaluation. Every generator meets the same noise and the same real frames.

    The generators run in ``eval()`` under ``no_grad`` on fixed noise: evaluating changes no model state and draws
    from no RNG, so a run with evaluations computes the same training numbers as one without. With several
    processes each evaluates its share of the samples with rank 0's BatchNorm statistics, and FID's sums are reduced
    over the ranks: the value is that of all the samples.
    """
    generators = {"fid": generators} if isinstance(generators, nn.Module) else dict(generators)
    generator_modes: dict[str, bool] = {}
    real = {"frames": real_frames}

    def fid_step(engine: Engine, chunk: slice) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            fakes = {name: generator(noise[chunk]).float() for name, generator in generators.items()}
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

    @evaluator.on(Events.COMPLETED)
    def generators_back(_: Engine) -> None:
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
