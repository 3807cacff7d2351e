"""The GAN training step of Deep RL Hands-On, chapter 3, as an Ignite process function.

Each iteration: draw a noise batch, generate fakes; one discriminator step on the real batch (label 1) and the
*detached* fakes (label 0); one generator step that asks the discriminator to call the fakes real. The
discriminator returns logits and the loss is ``BCEWithLogitsLoss`` (Sigmoid + BCELoss, numerically safe).

    trainer = create_gan_trainer(generator, discriminator, gen_optimizer, dis_optimizer, device)
    trainer.run(frame_stream, max_iters=1000)   # state.output == {"loss_dis": 1.38, "loss_gen": 0.71}
"""

import torch
from ignite.engine import Engine
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
