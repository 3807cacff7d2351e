"""The GAN objectives the trainer offers, and the R1 gradient penalty.

Each objective is a pair of losses on the discriminator's logits:

| ``loss`` | discriminator | generator | from |
| --- | --- | --- | --- |
| ``bce`` | BCE(real, 1) + BCE(fake, 0) | BCE(fake, 1) | the chapter (non-saturating GAN) |
| ``hinge`` | relu(1 - real) + relu(1 + fake) | -fake | SAGAN, BigGAN |
| ``relativistic`` | softplus(fake - real) | softplus(real - fake) | RpGAN (Jolicoeur-Martineau 2018; R3GAN, 2024) |

The relativistic pair compares each real frame with one fake (paired, not averaged over the batch): D is asked
whether the real frame is more real than the fake, and G to make the fake more real than the real frame.

R1 (Mescheder et al., 2018) penalises D's gradient on real frames, ``E ||grad_x D(x)||^2``: D cannot grow steep
around the data, which keeps both networks from chasing each other into oscillation. StyleGAN2's lazy form computes
it every ``k`` iterations and weights it by ``k``, so its average pull is that of every iteration.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("bce", "hinge", "relativistic")
NEEDS_REAL_LOGITS_FOR_G = ("relativistic",)  # the generator step also asks D about the real frames


def discriminator_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    if kind == "bce":  # BCEWithLogitsLoss, as the chapter's Sigmoid + BCELoss but safe in low precision
        return F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "relativistic":
        return F.softplus(fake_logits - real_logits).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


def generator_loss(kind: str, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "relativistic":
        if real_logits is None:
            raise ValueError("the relativistic generator loss needs D's logits of real frames")
        return F.softplus(real_logits - fake_logits).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """``E ||grad_x D(x)||^2`` over the batch ``real``, with a graph through D's weights (a second-order term).

    Computed in float32 whatever autocast the caller has on: a squared gradient in bf16 loses the small ones.
    """
    real = real.detach().float().requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        logits = discriminator(real)
        (gradient,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return gradient.square().sum(dim=(1, 2, 3)).mean()
