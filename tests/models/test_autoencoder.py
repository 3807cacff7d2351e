"""Chapter 002's convolutional autoencoder: the book's exact layers at its sizes, shapes and ranges at others."""

import pytest
import torch
from torch import nn

from models.autoencoder import ConvAutoencoder


def describe(module: nn.Module) -> tuple:
    """A layer as (kind, in, out, kernel, padding), (kind, in, out) or (kind,)."""
    if isinstance(module, nn.Conv2d):
        return ("Conv2d", module.in_channels, module.out_channels, module.kernel_size, module.padding)
    if isinstance(module, nn.Linear):
        return ("Linear", module.in_features, module.out_features)
    if isinstance(module, nn.Unflatten):
        return ("Unflatten", tuple(module.unflattened_size))
    return (type(module).__name__,)


def conv(c_in: int, c_out: int) -> tuple:
    return ("Conv2d", c_in, c_out, (5, 5), (2, 2))  # the book's ConvLayer: padding = filter_size // 2


def test_layers_at_the_books_sizes_are_the_books():
    model = ConvAutoencoder()  # the defaults are the chapter's sizes
    assert [describe(layer) for layer in model.encoder] == [
        conv(1, 14),
        ("Tanh",),
        conv(14, 7),
        ("Tanh",),
        ("Flatten",),
        ("Linear", 7 * 28 * 28, 28),
        ("Tanh",),
    ]
    assert [describe(layer) for layer in model.decoder] == [
        ("Linear", 28, 7 * 28 * 28),
        ("Tanh",),
        ("Unflatten", (7, 28, 28)),
        conv(7, 14),
        ("Tanh",),
        conv(14, 1),
        ("Tanh",),
    ]


def test_encode_decode_and_forward_shapes_and_ranges_at_other_sizes():
    torch.manual_seed(0)
    model = ConvAutoencoder(image_size=12, channels=3, conv_widths=(4, 3, 2), code_size=5, kernel_size=3)
    images = torch.rand(6, 3, 12, 12) * 2 - 1

    codes = model.encode(images)
    reconstructions = model(images)

    assert codes.shape == (6, 5) and codes.abs().max() <= 1
    assert reconstructions.shape == (6, 3, 12, 12) and reconstructions.abs().max() <= 1
    assert torch.equal(reconstructions, model.decode(codes))
    assert [layer.out_channels for layer in model.decoder if isinstance(layer, nn.Conv2d)] == [3, 4, 3]  # mirrored
    assert model.image_shape == (3, 12, 12) and model.code_size == 5


def test_uniform_random_codes_decode_to_images():
    model = ConvAutoencoder(image_size=8, conv_widths=(2,), code_size=4)
    assert model.decode(torch.rand(5, 4) * 2 - 1).shape == (5, 1, 8, 8)  # the book's figure 7-5, at a tiny size


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"kernel_size": 4}, "odd"), ({"conv_widths": ()}, "at least one"), ({"code_size": 0}, "positive")],
)
def test_sizes_it_cannot_build_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        ConvAutoencoder(**{"image_size": 8, **arguments})


def test_the_reconstruction_loss_reaches_every_parameter():
    torch.manual_seed(0)
    model = ConvAutoencoder(image_size=8, conv_widths=(3, 2), code_size=4)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    nn.functional.mse_loss(model(images), images).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
