"""The convolutional autoencoder of Deep Learning from Scratch, ch. 7, with its sizes as arguments.

At the chapter's sizes (``image_size=28, channels=1, conv_widths=(14, 7), code_size=28, kernel_size=5``) the layers
are exactly the book's: the encoder is Conv(1->14) tanh, Conv(14->7) tanh, flatten, Dense(7*28*28 -> 28) tanh; the
decoder mirrors it, Dense(28 -> 7*28*28) tanh, reshape, Conv(7->14) tanh, Conv(14->1) tanh. Every convolution keeps
the image size ("same" padding, stride 1), so no layer needs a transposed convolution.

    model = ConvAutoencoder()
    codes = model.encode(images)          # (B, 1, 28, 28) in [-1, 1] -> (B, 28) in [-1, 1]
    reconstructions = model.decode(codes)  # -> (B, 1, 28, 28) in [-1, 1]

The book's ``forward`` returns ``(reconstruction, encoding)``; here ``forward`` returns the reconstruction only (what
the loss compares with the input) and ``encode`` gives the codes.
"""

from collections.abc import Sequence

from torch import Tensor, nn


def same_size_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """A stride-1 convolution whose output has the input's height and width (the book's ``padding=k // 2``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def check_sizes(image_size: int, channels: int, conv_widths: Sequence[int], code_size: int, kernel_size: int) -> None:
    if min(image_size, channels, code_size, kernel_size) < 1 or not conv_widths or min(conv_widths) < 1:
        raise ValueError("every size must be positive and there must be at least one convolution")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd to keep the image size, got {kernel_size}")


class ConvAutoencoder(nn.Module):
    """Images in [-1, 1] -> codes in [-1, 1] -> images in [-1, 1]."""

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        conv_widths: Sequence[int] = (14, 7),
        code_size: int = 28,
        kernel_size: int = 5,
    ):
        super().__init__()
        check_sizes(image_size, channels, conv_widths, code_size, kernel_size)
        widths = [channels, *conv_widths]
        flat = conv_widths[-1] * image_size * image_size  # 7 * 28 * 28 = 5488 at the book's sizes
        encoder: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [same_size_conv(c_in, c_out, kernel_size), nn.Tanh()]
        encoder += [nn.Flatten(), nn.Linear(flat, code_size), nn.Tanh()]  # (B, C, S, S) -> (B, code_size)
        decoder: list[nn.Module] = [nn.Linear(code_size, flat), nn.Tanh()]
        decoder.append(nn.Unflatten(1, (conv_widths[-1], image_size, image_size)))  # (B, flat) -> (B, C, S, S)
        backwards = widths[::-1]  # the encoder's widths in reverse: 7 -> 14 -> 1
        for c_in, c_out in zip(backwards[:-1], backwards[1:], strict=True):
            decoder += [same_size_conv(c_in, c_out, kernel_size), nn.Tanh()]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.image_shape = (channels, image_size, image_size)
        self.code_size = code_size

    def encode(self, images: Tensor) -> Tensor:  # (B, C, S, S) -> (B, code_size)
        return self.encoder(images)

    def decode(self, codes: Tensor) -> Tensor:  # (B, code_size) -> (B, C, S, S)
        return self.decoder(codes)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))
