"""The DCGAN pairs of Deep RL Hands-On, chapter 3 (Atari frames) and of chapter 004's AnimeGAN, sizes as arguments.

At the Atari chapter's sizes (``image_size=64, filters=64, latent_size=100``) the layers are exactly the book's:
the discriminator halves the image four times (64 -> 4) with 64, 128, 256, 512 filters and ends in a 4x4 convolution
to one number; the generator mirrors it. A smaller ``image_size`` (a power of two, at least 8) drops stride-2 stages,
so tests can run the same architecture on 16x16 frames.

AnimeGAN's 96x96 pair has the same inner stages but an outer stage of stride 3 (kernel 5, padding 1: 96 <-> 32),
LeakyReLU(0.2) in the discriminator and no biases: ``Discriminator(96, leaky_slope=0.2, bias=False)``. Any side of
the form ``3 * 2**k`` (at least 24) takes that outer stage; a power of two takes the Atari one.

The discriminator returns *logits*: the loss is ``BCEWithLogitsLoss``, the same maths as the books' Sigmoid +
``BCELoss`` but numerically safe in low precision (``engines.gan_losses`` has the others).

The discriminator's normalization (``norm``) is the chapter's BatchNorm on the inner stages, or spectral
normalization of every convolution's weight (Miyato et al., 2018; torch's ``spectral_norm`` parametrization: one
power iteration per forward pass in training mode, its vectors in the ``state_dict``), instead of BatchNorm or with
it. Spectral normalization bounds how steep D can grow, so it cannot become overconfident within a few hundred
iterations, as the chapter's D does.
"""

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

D_NORMS = ("batchnorm", "spectral", "spectral+batchnorm")


def stride2_stages(image_size: int) -> int:
    """How many stride-2 stages take a square image down to the 4x4 the last layer expects."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return image_size.bit_length() - 3  # 64 -> 4 stages, 16 -> 2


def outer_stage(image_size: int) -> tuple[int, int, int, int]:
    """``(inner_stages, kernel, stride, padding)`` of the layer next to the image: stride 2 for a power of two
    (the Atari chapter), stride 3 with kernel 5 for ``3 * 2**k`` (AnimeGAN's 96 -> 32)."""
    if image_size >= 24 and image_size % 3 == 0 and not (image_size // 3) & (image_size // 3 - 1):
        return (image_size // 3).bit_length() - 3, 5, 3, 1
    try:
        return stride2_stages(image_size) - 1, 4, 2, 1
    except ValueError:
        raise ValueError(
            f"image_size must be a power of two >= 8 or 3 x a power of two >= 24 (e.g. 96), got {image_size}"
        ) from None


class Discriminator(nn.Module):
    """Image -> one real/fake logit per image."""

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        filters: int = 64,
        leaky_slope: float = 0.0,
        bias: bool = True,
        norm: str = "batchnorm",
    ):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"norm must be one of {', '.join(D_NORMS)}, got {norm!r}")
        inner, kernel, stride, padding = outer_stage(image_size)
        spectral, batchnorm = norm.startswith("spectral"), norm.endswith("batchnorm")

        def activation() -> nn.Module:
            return nn.LeakyReLU(leaky_slope) if leaky_slope else nn.ReLU()

        def conv(*args: int) -> nn.Module:
            layer = nn.Conv2d(*args, bias=bias)
            return spectral_norm(layer) if spectral else layer

        # no BN on the input stage
        layers: list[nn.Module] = [conv(channels, filters, kernel, stride, padding), activation()]
        width = filters
        for _ in range(inner):
            layers.append(conv(width, width * 2, 4, 2, 1))
            layers += [nn.BatchNorm2d(width * 2)] if batchnorm else []
            layers.append(activation())
            width *= 2
        layers.append(conv(width, 1, 4, 1, 0))  # (B, 1, 1, 1)
        self.conv_pipe = nn.Sequential(*layers)

    def forward(self, images: Tensor, second: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C, S, S) -> (B,) logits; given a ``second`` batch, ``forward_pair(images, second)`` (a wrapper such
        as DistributedDataParallel only intercepts ``forward``)."""
        if second is not None:
            return self.forward_pair(images, second)
        return self.conv_pipe(images).view(-1)

    def forward_pair(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """``(self(first), self(second))``, computed as one pass over both batches.

        Convolutions and activations work image by image, so they run once on the two batches together (larger
        matrix products, one weight-gradient computation instead of two). Each BatchNorm normalises each batch with
        that batch's own statistics and updates its running statistics with ``first``, then ``second``: the numbers
        and the module state of two separate calls.
        """
        x = torch.cat([first, second])
        for layer in self.conv_pipe:
            if isinstance(layer, nn.BatchNorm2d):
                x = torch.cat([layer(half) for half in x.split([first.shape[0], second.shape[0]])])
            else:
                x = layer(x)
        return x.view(-1).split([first.shape[0], second.shape[0]])


class Generator(nn.Module):
    """Latent vector ``(B, latent_size, 1, 1)`` -> image in [-1, 1]."""

    def __init__(
        self, image_size: int = 64, channels: int = 3, filters: int = 64, latent_size: int = 100, bias: bool = True
    ):
        super().__init__()
        inner, kernel, stride, padding = outer_stage(image_size)
        width = filters * 2**inner
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_size, width, 4, 1, 0, bias=bias),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        for _ in range(inner):  # each stage doubles the side: 4 -> 8 -> ...
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=bias), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, kernel, stride, padding, bias=bias), nn.Tanh()]  # (B, C, S, S)
        self.pipe = nn.Sequential(*layers)
        self.latent_size = latent_size

    def forward(self, latent: Tensor) -> Tensor:
        return self.pipe(latent)
