"""The GAN training step of Deep RL Hands-On, chapter 3, as an Ignite process function.

Each iteration: draw a noise batch, generate fakes; one discriminator step on the real batch (label 1) and the
*detached* fakes (label 0); one generator step that asks the discriminator to call the fakes real. The
discriminator returns logits and the loss is ``BCEWithLogitsLoss`` (Sigmoid + BCELoss, numerically safe).

    trainer = create_gan_trainer(generator, discriminator, gen_optimizer, dis_optimizer, device)
    trainer.run(frame_stream, max_iters=1000)   # state.output == {"loss_dis": 1.38, "loss_gen": 0.71}
"""

import torch
from ignite.engine import Engine, Events
from ignite.metrics import FID
from torch import nn


def create_gan_trainer(
    generator: nn.Module,
    discriminator: nn.Module,
    gen_optimizer: torch.optim.Optimizer,
    dis_optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> Engine:
    objective = nn.BCEWithLogitsLoss()
    latent_size = generator.latent_size
    non_blocking = device.type == "cuda"

    def gan_step(engine: Engine, real_batch: torch.Tensor) -> dict[str, float]:
        real = real_batch.to(device, non_blocking=non_blocking)
        noise = torch.randn(real.shape[0], latent_size, 1, 1, device=device)
        fake = generator(noise)

        dis_optimizer.zero_grad(set_to_none=True)
        real_logits = discriminator(real)
        fake_logits = discriminator(fake.detach())  # no gradient into the generator on the discriminator's step
        dis_loss = objective(real_logits, torch.ones_like(real_logits)) + objective(
            fake_logits, torch.zeros_like(fake_logits)
        )
        dis_loss.backward()
        dis_optimizer.step()

        gen_optimizer.zero_grad(set_to_none=True)
        fooled_logits = discriminator(fake)
        gen_loss = objective(fooled_logits, torch.ones_like(fooled_logits))
        gen_loss.backward()
        gen_optimizer.step()

        return {"loss_dis": dis_loss.item(), "loss_gen": gen_loss.item()}

    return Engine(gan_step)


def create_fid_evaluator(
    generator: nn.Module,
    features: nn.Module,
    real_frames: torch.Tensor,
    noise: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> Engine:
    """An evaluator whose ``run(range(n_batches))`` leaves ``state.metrics["fid"]``: Ignite's ``FID`` between the
    generator's images of ``noise`` and ``real_frames``, in the feature space of ``features``.

    The generator runs in ``eval()`` under ``no_grad`` on fixed noise: evaluating changes no model state and draws
    from no RNG, so a run with evaluations computes the same training numbers as one without.
    """
    generator_mode = {}

    def fid_step(engine: Engine, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = slice(index * batch_size, (index + 1) * batch_size)
        with torch.no_grad():
            fake = generator(noise[chunk]).float()
        return fake, real_frames[chunk].to(device)

    evaluator = Engine(fid_step)

    @evaluator.on(Events.STARTED)
    def generator_to_eval(_: Engine) -> None:
        generator_mode["training"] = generator.training
        generator.eval()

    @evaluator.on(Events.COMPLETED)
    def generator_back(_: Engine) -> None:
        generator.train(generator_mode["training"])

    features.eval()
    FID(num_features=features.classifier.feature_size, feature_extractor=features, device=device).attach(
        evaluator, "fid"
    )
    return evaluator


def fid_batches(samples: int, batch_size: int) -> range:
    """The evaluator's data: batch indices covering ``samples`` images."""
    return range(-(-samples // batch_size))
