"""The chapter's DCGAN pair: shapes at every supported size, the book's exact layers at 64, logits out."""

import pytest
import torch
from torch import nn

from models.dcgan import Discriminator, Generator, stride2_stages


def describe(module: nn.Module) -> tuple:
    """A layer as (kind, in, out, kernel, stride, padding), or (kind, features) / (kind,)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        return (
            type(module).__name__,
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
        )
    if isinstance(module, nn.BatchNorm2d):
        return ("BatchNorm2d", module.num_features)
    return (type(module).__name__,)


def conv(kind, c_in, c_out, kernel, stride, padding) -> tuple:
    return (kind, c_in, c_out, (kernel, kernel), (stride, stride), (padding, padding))


@pytest.mark.parametrize(("image_size", "stages"), [(8, 1), (16, 2), (32, 3), (64, 4), (128, 5)])
def test_stride2_stages_takes_the_image_down_to_four(image_size, stages):
    assert stride2_stages(image_size) == stages
    assert image_size // 2**stages == 4


@pytest.mark.parametrize("image_size", [0, 4, 12, 48, -8, 7])
def test_stride2_stages_refuses_sizes_that_are_not_powers_of_two_from_eight(image_size):
    with pytest.raises(ValueError, match="power of two"):
        stride2_stages(image_size)


@pytest.mark.parametrize("image_size", [4, 12, 40, 100])
def test_models_refuse_an_unsupported_image_size(image_size):
    with pytest.raises(ValueError):
        Discriminator(image_size=image_size)
    with pytest.raises(ValueError):
        Generator(image_size=image_size)


@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
def test_output_shapes(image_size):
    generator = Generator(image_size=image_size, channels=3, filters=4, latent_size=6)
    discriminator = Discriminator(image_size=image_size, channels=3, filters=4)

    images = generator(torch.randn(2, 6, 1, 1))
    logits = discriminator(images)

    assert images.shape == (2, 3, image_size, image_size)
    assert logits.shape == (2,)


def test_channels_argument_is_honoured():
    images = Generator(image_size=8, channels=1, filters=2, latent_size=3)(torch.randn(2, 3, 1, 1))

    assert images.shape == (2, 1, 8, 8)
    assert Discriminator(image_size=8, channels=1, filters=2)(images).shape == (2,)


def test_discriminator_layers_at_the_chapters_sizes_are_the_books():
    discriminator = Discriminator(image_size=64, channels=3, filters=64)

    assert [describe(layer) for layer in discriminator.conv_pipe] == [
        conv("Conv2d", 3, 64, 4, 2, 1),
        ("ReLU",),
        conv("Conv2d", 64, 128, 4, 2, 1),
        ("BatchNorm2d", 128),
        ("ReLU",),
        conv("Conv2d", 128, 256, 4, 2, 1),
        ("BatchNorm2d", 256),
        ("ReLU",),
        conv("Conv2d", 256, 512, 4, 2, 1),
        ("BatchNorm2d", 512),
        ("ReLU",),
        conv("Conv2d", 512, 1, 4, 1, 0),
    ]
    assert not any(isinstance(module, nn.Sigmoid) for module in discriminator.modules())


def test_generator_layers_at_the_chapters_sizes_are_the_books():
    generator = Generator(image_size=64, channels=3, filters=64, latent_size=100)

    assert [describe(layer) for layer in generator.pipe] == [
        conv("ConvTranspose2d", 100, 512, 4, 1, 0),
        ("BatchNorm2d", 512),
        ("ReLU",),
        conv("ConvTranspose2d", 512, 256, 4, 2, 1),
        ("BatchNorm2d", 256),
        ("ReLU",),
        conv("ConvTranspose2d", 256, 128, 4, 2, 1),
        ("BatchNorm2d", 128),
        ("ReLU",),
        conv("ConvTranspose2d", 128, 64, 4, 2, 1),
        ("BatchNorm2d", 64),
        ("ReLU",),
        conv("ConvTranspose2d", 64, 3, 4, 2, 1),
        ("Tanh",),
    ]
    assert generator.latent_size == 100


def test_defaults_are_the_chapters_sizes():
    assert [describe(m) for m in Discriminator().conv_pipe] == [describe(m) for m in Discriminator(64, 3, 64).conv_pipe]
    assert [describe(m) for m in Generator().pipe] == [describe(m) for m in Generator(64, 3, 64, 100).pipe]


def test_discriminator_returns_unbounded_logits():
    torch.manual_seed(0)
    discriminator = Discriminator(image_size=8, filters=2)
    with torch.no_grad():
        discriminator.conv_pipe[-1].bias.fill_(5.0)  # a Sigmoid output could never exceed 1

    logits = discriminator(torch.rand(4, 3, 8, 8) * 2 - 1)

    assert (logits > 1).all()


def test_generator_output_stays_within_minus_one_and_one():
    torch.manual_seed(0)
    generator = Generator(image_size=16, filters=4, latent_size=8)

    images = generator(torch.randn(8, 8, 1, 1) * 100)  # large inputs saturate the Tanh

    assert images.min().item() >= -1.0
    assert images.max().item() <= 1.0
    assert images.abs().max().item() > 0.5


def test_gradients_reach_every_parameter_from_bce_with_logits():
    torch.manual_seed(0)
    generator = Generator(image_size=8, filters=2, latent_size=4)
    discriminator = Discriminator(image_size=8, filters=2)
    loss_fn = nn.BCEWithLogitsLoss()

    fake_logits = discriminator(generator(torch.randn(4, 4, 1, 1)))
    real_logits = discriminator(torch.rand(4, 3, 8, 8) * 2 - 1)
    loss = loss_fn(fake_logits, torch.ones(4)) + loss_fn(real_logits, torch.zeros(4))
    loss.backward()

    for name, model in (("generator", generator), ("discriminator", discriminator)):
        for parameter_name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{name}.{parameter_name}"
            assert parameter.grad.abs().sum().item() > 0, f"{name}.{parameter_name}"


def test_anime_pair_at_96_has_the_books_exact_layers():
    """Chapter 004's AnimeGAN: k5 s3 p1 next to the image, LeakyReLU(0.2) in D, no biases anywhere."""
    discriminator = Discriminator(96, 3, 64, leaky_slope=0.2, bias=False)
    generator = Generator(96, 3, 64, 100, bias=False)
    d_convs = [describe(m) for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert d_convs == [
        conv("Conv2d", 3, 64, 5, 3, 1),
        conv("Conv2d", 64, 128, 4, 2, 1),
        conv("Conv2d", 128, 256, 4, 2, 1),
        conv("Conv2d", 256, 512, 4, 2, 1),
        conv("Conv2d", 512, 1, 4, 1, 0),
    ]
    g_convs = [describe(m) for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert g_convs == [
        conv("ConvTranspose2d", 100, 512, 4, 1, 0),
        conv("ConvTranspose2d", 512, 256, 4, 2, 1),
        conv("ConvTranspose2d", 256, 128, 4, 2, 1),
        conv("ConvTranspose2d", 128, 64, 4, 2, 1),
        conv("ConvTranspose2d", 64, 3, 5, 3, 1),
    ]
    assert all(m.bias is None for m in [*discriminator.modules(), *generator.modules()] if hasattr(m, "padding"))
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in discriminator.modules()) == 4
    images = generator(torch.randn(2, 100, 1, 1))
    assert images.shape == (2, 3, 96, 96)
    assert discriminator(images).shape == (2,)


@pytest.mark.parametrize("image_size", [24, 48, 192])
def test_three_times_a_power_of_two_round_trips(image_size):
    generator = Generator(image_size, 3, 4, 8, bias=False)
    discriminator = Discriminator(image_size, 3, 4, leaky_slope=0.2, bias=False)
    assert discriminator(generator(torch.randn(2, 8, 1, 1))).shape == (2,)


def test_forward_pair_is_two_forward_calls_in_numbers_and_in_batchnorm_state():
    torch.manual_seed(0)
    one_pass, two_calls = Discriminator(16, 3, 4), Discriminator(16, 3, 4)
    two_calls.load_state_dict(one_pass.state_dict())
    first, second = torch.randn(5, 3, 16, 16), torch.randn(3, 3, 16, 16) * 2 + 1  # different sizes and statistics
    paired = one_pass.forward_pair(first, second)
    separate = (two_calls(first), two_calls(second))
    for a, b in zip(paired, separate, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(one_pass.state_dict().values(), two_calls.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)  # running means, variances, batch counts
