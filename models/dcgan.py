"""The DCGAN pair of Deep RL Hands-On, chapter 3, with its sizes as arguments.

At the chapter's sizes (``image_size=64, filters=64, latent_size=100``) the layers are exactly the book's:
the discriminator halves the image four times (64 -> 4) with 64, 128, 256, 512 filters and ends in a 4x4 convolution
to one number; the generator mirrors it. A smaller ``image_size`` (a power of two, at least 8) drops stride-2 stages,
so tests can run the same architecture on 16x16 frames.

The discriminator returns *logits*: the loss is ``BCEWithLogitsLoss``, the same maths as the book's Sigmoid +
``BCELoss`` but numerically safe in low precision.
"""

from torch import Tensor, nn


def stride2_stages(image_size: int) -> int:
    """How many stride-2 stages take a square image down to the 4x4 the last layer expects."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return image_size.bit_length() - 3  # 64 -> 4 stages, 16 -> 2


class Discriminator(nn.Module):
    """Image -> one real/fake logit per image."""

    def __init__(self, image_size: int = 64, channels: int = 3, filters: int = 64):
        super().__init__()
        stages = stride2_stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, filters, 4, 2, 1), nn.ReLU()]  # no BN on the input stage
        width = filters
        for _ in range(stages - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.BatchNorm2d(width * 2), nn.ReLU()]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0))  # (B, 1, 1, 1)
        self.conv_pipe = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:  # (B, C, S, S) -> (B,)
        return self.conv_pipe(images).view(-1)


class Generator(nn.Module):
    """Latent vector ``(B, latent_size, 1, 1)`` -> image in [-1, 1]."""

    def __init__(self, image_size: int = 64, channels: int = 3, filters: int = 64, latent_size: int = 100):
        super().__init__()
        stages = stride2_stages(image_size)
        width = filters * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_size, width, 4, 1, 0), nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(stages - 1):  # each stage doubles the side: 4 -> 8 -> ...
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]  # (B, C, S, S)
        self.pipe = nn.Sequential(*layers)
        self.latent_size = latent_size

    def forward(self, latent: Tensor) -> Tensor:
        return self.pipe(latent)
