import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engines.conv_kernels as kernels
from engines.conv_kernels import (
    BOOK,
    LIBRARY,
    PASSES,
    PRODUCT,
    LayerKernels,
    PlannedConv2d,
    PlannedConvTranspose2d,
    use_kernels,
)
from models.dcgan import Discriminator, Generator

CHANNELS_LAST = torch.channels_last

# (layer, input shape): the DCGAN's own geometries at few channels, and others the products must also get right
GEOMETRIES = [
    (nn.Conv2d(6, 10, 4, 2, 1), (3, 6, 8, 8)),  # D's stride-2 layers: 8x8 -> 4x4
    (nn.Conv2d(10, 1, 4, 1, 0), (3, 10, 4, 4)),  # D's output layer: 4x4 -> 1x1
    (nn.ConvTranspose2d(10, 6, 4, 2, 1), (3, 10, 4, 4)),  # G's stride-2 layers: 4x4 -> 8x8
    (nn.ConvTranspose2d(5, 10, 4, 1, 0), (3, 5, 1, 1)),  # G's input layer: 1x1 -> 4x4
    (nn.Conv2d(4, 7, 3, 1, 1, bias=False), (2, 4, 4, 4)),  # no bias, same-size map
    (nn.Conv2d(4, 7, (3, 2), (2, 1), (1, 0)), (2, 4, 5, 4)),  # rectangular kernel, uneven sides, a dropped row
    (nn.ConvTranspose2d(4, 3, 5, 3, 1), (2, 4, 2, 2)),  # AnimeGAN's stride-3 geometry
]
EVERY_PRODUCT = LayerKernels(PRODUCT, PRODUCT, PRODUCT)
ONE_PRODUCT_EACH = [
    LayerKernels(**{name: PRODUCT if name == chosen else LIBRARY for name in PASSES}) for chosen in PASSES
]


@pytest.fixture
def products(monkeypatch):
    """Which products ran: (pass name) for each call."""
    calls = []
    for name, function in (
        ("forward", "forward_product"),
        ("input_grad", "input_grad_product"),
        ("weight_grad", "weight_grad"),
    ):
        original = getattr(kernels, function)
        monkeypatch.setattr(kernels, function, lambda *args, _o=original, _n=name: calls.append(_n) or _o(*args))
    return calls


def gradients(layer, inputs):
    inputs = inputs.clone().requires_grad_()
    output = layer(inputs)
    output.backward(torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output))
    grads = [inputs.grad, layer.weight.grad] + ([layer.bias.grad] if layer.bias is not None else [])
    return output, grads


@pytest.mark.parametrize("plan", [EVERY_PRODUCT, *ONE_PRODUCT_EACH], ids=["all", *PASSES])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CHANNELS_LAST], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(("layer", "shape"), GEOMETRIES)
def test_every_pass_equals_the_library_layers_in_float64(layer, shape, layout, plan, products):
    torch.manual_seed(0)
    reference = copy.deepcopy(layer).double().to(memory_format=layout)  # the cases share their layers
    planned = copy.deepcopy(reference)
    assert use_kernels(planned, {"": plan}) == 1
    inputs = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    reference_output, reference_grads = gradients(reference, inputs)
    output, grads = gradients(planned, inputs)
    torch.testing.assert_close(output, reference_output, rtol=1e-12, atol=1e-12)
    assert output.is_contiguous(memory_format=layout) == reference_output.is_contiguous(memory_format=layout)
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, reference_grad, rtol=1e-12, atol=1e-12)
    assert sorted(products) == sorted(name for name in PASSES if getattr(plan, name) == PRODUCT)


def float64_truth(layer: nn.Conv2d, inputs: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    """The gradients autocast's bf16 layer approximates: its bf16-rounded operands, multiplied and summed in float64."""
    x = inputs.bfloat16().double().requires_grad_()
    weight, bias = (p.detach().bfloat16().double().requires_grad_() for p in (layer.weight, layer.bias))
    output = F.conv2d(x, weight, bias, layer.stride, layer.padding)
    output.backward(upstream.double())
    return [output, x.grad, weight.grad, bias.grad]


def test_under_bf16_autocast_it_is_as_close_to_the_truth_as_the_replaced_layer(products):
    """Both paths round to bf16 and sum in another order, and how the library does it depends on the CPU: native
    bf16 kernels on AVX512-BF16/AMX, an emulation on AVX2-only CPUs. So each is held to the float64 truth of the
    same bf16 operands, and the products' error may be no larger than the library's own (the factor leaves room for
    the two sum orders)."""
    torch.manual_seed(0)
    reference = nn.Conv2d(32, 64, 4, 2, 1).to(memory_format=CHANNELS_LAST)
    planned = copy.deepcopy(reference)
    use_kernels(planned, {"": EVERY_PRODUCT})
    inputs = torch.randn(8, 32, 8, 8).contiguous(memory_format=CHANNELS_LAST)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference_output, reference_grads = gradients(reference, inputs)
        output, grads = gradients(planned, inputs)
    assert output.dtype == reference_output.dtype == torch.bfloat16
    upstream = torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output)
    truth = float64_truth(reference, inputs, upstream)
    for value, reference_value, true in zip([output, *grads], [reference_output, *reference_grads], truth, strict=True):
        error, library_error = (value.double() - true).abs(), (reference_value.double() - true).abs()
        assert error.max() <= 1.5 * library_error.max() + 1e-6
        assert error.mean() <= 1.5 * library_error.mean() + 1e-6
        assert error.max() <= 0.01 * true.abs().max()  # bf16's rounding, not a wrong result
    assert [g.dtype for g in grads[1:]] == [torch.float32, torch.float32]  # fp32 parameters keep fp32 gradients
    assert sorted(products) == sorted(PASSES)


def test_a_weight_gradient_comes_back_in_the_parameter_layout(products):
    layer = nn.Conv2d(6, 10, 4, 2, 1).to(memory_format=CHANNELS_LAST)
    use_kernels(layer, {"": LayerKernels(weight_grad=PRODUCT)})
    arriving = []  # the gradient as the layer's backward returns it, before it is accumulated into .grad
    layer.weight.register_hook(lambda grad: arriving.append(grad.stride()))
    layer(torch.randn(2, 6, 8, 8).contiguous(memory_format=CHANNELS_LAST)).sum().backward()
    assert products == ["weight_grad"] and arriving == [layer.weight.stride()]  # no layout copy on the way


def test_the_dcgan_pair_keeps_its_parameters_state_and_outputs():
    torch.manual_seed(0)
    generator, discriminator = Generator(image_size=16, filters=4, latent_size=8), Discriminator(16, filters=4)
    before = {name: copy.deepcopy(net.state_dict()) for name, net in (("g", generator), ("d", discriminator))}
    parameters = [id(p) for p in [*generator.parameters(), *discriminator.parameters()]]
    noise = torch.randn(2, 8, 1, 1)
    images = generator(noise)
    logits = discriminator(images)
    names = {name for name, _ in kernels.planned_layers(generator).items()}
    assert use_kernels(generator, dict.fromkeys(names, EVERY_PRODUCT)) == 3  # every convolution
    assert use_kernels(discriminator, {}) == 0  # the library's kernels, in the planned classes
    torch.testing.assert_close(generator(noise), images, rtol=1e-5, atol=1e-6)
    assert torch.equal(discriminator(images), logits)  # the library's kernels: the same numbers
    assert [id(p) for p in [*generator.parameters(), *discriminator.parameters()]] == parameters
    for name, net in (("g", generator), ("d", discriminator)):
        assert net.state_dict().keys() == before[name].keys()
    assert sum(isinstance(m, PlannedConvTranspose2d) for m in generator.modules()) == 3
    assert sum(isinstance(m, PlannedConv2d) and m.kernels == BOOK for m in discriminator.modules()) == 3
    # a saved state loads into the plain classes: checkpoints do not depend on the plan
    Generator(image_size=16, filters=4, latent_size=8).load_state_dict(generator.state_dict())


def test_layers_it_cannot_compute_stay_as_they_are():
    grouped, dilated = nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, dilation=2)
    padded_output = nn.ConvTranspose2d(4, 4, 3, 2, 1, output_padding=1)
    model = nn.Sequential(grouped, dilated, padded_output)
    assert kernels.planned_layers(model) == {}
    assert use_kernels(model, {"0": EVERY_PRODUCT}) == 0
    assert type(grouped) is nn.Conv2d and type(padded_output) is nn.ConvTranspose2d


def test_a_frozen_layer_gets_only_its_input_gradient_and_an_evaluation_no_gradient(products):
    layer = nn.ConvTranspose2d(6, 4, 4, 2, 1)
    use_kernels(layer, {"": EVERY_PRODUCT})
    layer.requires_grad_(False)
    inputs = torch.randn(2, 6, 4, 4, requires_grad=True)
    layer(inputs).sum().backward()
    assert products == ["forward", "input_grad"] and inputs.grad is not None and layer.weight.grad is None
    with torch.no_grad():
        layer(inputs)
    assert products == ["forward", "input_grad", "forward"]


def test_float64_under_autocast_is_left_to_the_library(products):
    layer = nn.Conv2d(4, 6, 4, 2, 1).double()
    use_kernels(layer, {"": EVERY_PRODUCT})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = layer(torch.randn(2, 4, 8, 8, dtype=torch.float64))
    output.sum().backward()
    assert output.dtype == torch.float64 and products == []


def test_the_library_plan_runs_the_library_layer_untouched(products):
    torch.manual_seed(0)
    reference = nn.Conv2d(4, 6, 4, 2, 1)
    planned = copy.deepcopy(reference)
    use_kernels(planned, {"": BOOK})
    inputs = torch.randn(2, 4, 8, 8)
    (output, grads), (reference_output, reference_grads) = gradients(planned, inputs), gradients(reference, inputs)
    assert torch.equal(output, reference_output)
    assert all(torch.equal(a, b) for a, b in itertools.zip_longest(grads, reference_grads))
    assert products == []
