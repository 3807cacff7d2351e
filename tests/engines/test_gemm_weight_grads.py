import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engines.gemm_weight_grads as gemm
from engines.gemm_weight_grads import GemmConv2d, GemmConvTranspose2d, use_gemm_weight_grads
from models.dcgan import Discriminator, Generator

CHANNELS_LAST = torch.channels_last

# (layer, input shape): the DCGAN's own small-map geometries at few channels, and others the rule must also get right
SMALL_MAPS = [
    (nn.Conv2d(6, 10, 4, 2, 1), (3, 6, 8, 8)),  # D's last stride-2 layer: 8x8 -> 4x4
    (nn.Conv2d(10, 1, 4, 1, 0), (3, 10, 4, 4)),  # D's output layer: 4x4 -> 1x1
    (nn.ConvTranspose2d(10, 6, 4, 2, 1), (3, 10, 4, 4)),  # G's first stride-2 layer: 4x4 -> 8x8
    (nn.ConvTranspose2d(5, 10, 4, 1, 0), (3, 5, 1, 1)),  # G's input layer: 1x1 -> 4x4
    (nn.Conv2d(4, 7, 3, 1, 1, bias=False), (2, 4, 4, 4)),  # no bias, same-size map
    (nn.Conv2d(4, 7, (3, 2), (2, 1), (1, 0)), (2, 4, 5, 4)),  # rectangular kernel, uneven sides
    (nn.ConvTranspose2d(4, 3, 5, 3, 1), (2, 4, 2, 2)),  # AnimeGAN's stride-3 geometry
]


@pytest.fixture
def gemm_calls(monkeypatch):
    """How many weight gradients the matrix product computed (each test compares against the library's)."""
    calls = []
    computed = gemm.weight_grad
    monkeypatch.setattr(gemm, "weight_grad", lambda *args: calls.append(1) or computed(*args))
    return calls


def gradients(layer, inputs):
    inputs = inputs.clone().requires_grad_()
    output = layer(inputs)
    output.backward(torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output))
    grads = [inputs.grad, layer.weight.grad] + ([layer.bias.grad] if layer.bias is not None else [])
    return output, grads


@pytest.mark.parametrize("layout", [torch.contiguous_format, CHANNELS_LAST])
@pytest.mark.parametrize(("layer", "shape"), SMALL_MAPS)
def test_gradients_equal_the_library_layers_in_float64(layer, shape, layout, gemm_calls):
    torch.manual_seed(0)
    reference = copy.deepcopy(layer).double().to(memory_format=layout)  # the cases share their layers
    switched = copy.deepcopy(reference)
    assert use_gemm_weight_grads(switched) == 1
    inputs = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    reference_output, reference_grads = gradients(reference, inputs)
    output, grads = gradients(switched, inputs)
    assert torch.equal(output, reference_output)  # the forward pass is the library's
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, reference_grad, rtol=1e-12, atol=1e-12)
    assert gemm_calls == [1]


def float64_truth(layer: nn.Conv2d, inputs: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    """The gradients autocast's bf16 layer approximates: its bf16-rounded operands, multiplied and summed in float64."""
    x = inputs.bfloat16().double().requires_grad_()
    weight, bias = (p.detach().bfloat16().double().requires_grad_() for p in (layer.weight, layer.bias))
    F.conv2d(x, weight, bias, layer.stride, layer.padding).backward(upstream.double())
    return [x.grad, weight.grad, bias.grad]


def test_under_bf16_autocast_it_is_as_close_to_the_truth_as_the_replaced_layer(gemm_calls):
    """Both paths round to bf16 and sum in another order, and how the library does it depends on the CPU: native
    bf16 kernels on AVX512-BF16/AMX, an emulation on AVX2-only CPUs (whose sums land up to 0.08 away from the
    matrix product's). So each is held to the float64 truth of the same bf16 operands, and the matrix product's
    error may be no larger than the library's own (the factor leaves room for the two sum orders)."""
    torch.manual_seed(0)
    reference = nn.Conv2d(32, 64, 4, 2, 1).to(memory_format=CHANNELS_LAST)
    switched = copy.deepcopy(reference)
    use_gemm_weight_grads(switched)
    inputs = torch.randn(8, 32, 8, 8).contiguous(memory_format=CHANNELS_LAST)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference_output, reference_grads = gradients(reference, inputs)
        output, grads = gradients(switched, inputs)
    assert output.dtype == reference_output.dtype == torch.bfloat16
    assert torch.equal(output, reference_output)  # the forward pass is the library's
    upstream = torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output)
    truth = float64_truth(reference, inputs, upstream)
    for grad, reference_grad, true in zip(grads, reference_grads, truth, strict=True):
        assert grad.dtype == reference_grad.dtype == torch.float32  # fp32 parameters keep fp32 gradients
        error, library_error = (grad.double() - true).abs(), (reference_grad.double() - true).abs()
        assert error.max() <= 1.5 * library_error.max() + 1e-6
        assert error.mean() <= 1.5 * library_error.mean() + 1e-6
        assert error.max() <= 0.01 * true.abs().max()  # bf16's rounding, not a wrong result
    assert gemm_calls == [1]


def test_a_weight_gradient_comes_back_in_the_parameter_layout(monkeypatch, gemm_calls):
    monkeypatch.setattr(gemm, "SMALL_MAP_FP32", gemm.SMALL_MAP)  # a 4x4 map in float32 on any CPU
    layer = nn.Conv2d(6, 10, 4, 2, 1).to(memory_format=CHANNELS_LAST)
    use_gemm_weight_grads(layer)
    arriving = []  # the gradient as the layer's backward returns it, before it is accumulated into .grad
    layer.weight.register_hook(lambda grad: arriving.append(grad.stride()))
    layer(torch.randn(2, 6, 8, 8).contiguous(memory_format=CHANNELS_LAST)).sum().backward()
    assert gemm_calls == [1] and arriving == [layer.weight.stride()]  # no layout copy on the way


def test_the_dcgan_pair_keeps_its_parameters_state_and_outputs():
    torch.manual_seed(0)
    generator, discriminator = Generator(image_size=16, filters=4, latent_size=8), Discriminator(16, filters=4)
    before = {name: copy.deepcopy(net.state_dict()) for name, net in (("g", generator), ("d", discriminator))}
    parameters = [id(p) for p in [*generator.parameters(), *discriminator.parameters()]]
    noise = torch.randn(2, 8, 1, 1)
    images, logits = generator(noise), discriminator(generator(noise))
    assert use_gemm_weight_grads(generator) == 3 and use_gemm_weight_grads(discriminator) == 3  # every convolution
    assert torch.equal(generator(noise), images) and torch.equal(discriminator(generator(noise)), logits)
    assert [id(p) for p in [*generator.parameters(), *discriminator.parameters()]] == parameters
    for name, net in (("g", generator), ("d", discriminator)):
        assert net.state_dict().keys() == before[name].keys()
    assert sum(isinstance(m, GemmConvTranspose2d) for m in generator.modules()) == 3
    assert sum(isinstance(m, GemmConv2d) for m in discriminator.modules()) == 3
    # a saved state loads into the plain classes: checkpoints do not depend on the switch
    Generator(image_size=16, filters=4, latent_size=8).load_state_dict(generator.state_dict())


def test_layers_it_cannot_compute_stay_as_they_are():
    grouped, dilated = nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, dilation=2)
    padded_output = nn.ConvTranspose2d(4, 4, 3, 2, 1, output_padding=1)
    assert use_gemm_weight_grads(nn.Sequential(grouped, dilated, padded_output)) == 0
    assert type(grouped) is nn.Conv2d and type(padded_output) is nn.ConvTranspose2d


def test_without_weight_gradients_or_on_big_maps_it_runs_the_library_layer(monkeypatch, gemm_calls):
    monkeypatch.setattr(gemm, "SMALL_MAP_FP32", gemm.SMALL_MAP)  # a 4x4 map in float32 on any CPU
    products = []
    convolve = gemm.convolve
    monkeypatch.setattr(gemm, "convolve", lambda *args: products.append(1) or convolve(*args))
    big = nn.Conv2d(3, 4, 4, 2, 1)  # 16x16 -> 8x8: oneDNN's own kernel
    use_gemm_weight_grads(big)
    big(torch.randn(2, 3, 16, 16)).sum().backward()
    frozen = nn.Conv2d(3, 4, 4, 2, 1).requires_grad_(False)  # the discriminator during the generator step
    use_gemm_weight_grads(frozen)
    inputs = torch.randn(2, 3, 8, 8, requires_grad=True)
    frozen(inputs).sum().backward()
    small = nn.Conv2d(3, 4, 4, 2, 1)
    use_gemm_weight_grads(small)
    with torch.no_grad():  # an evaluation, a sample sheet
        small(inputs)
    assert products == [] and gemm_calls == [] and inputs.grad is not None
    small(inputs).sum().backward()  # and the same layer with gradients does take the matrix product
    assert products == [1] and gemm_calls == [1]


def test_inputs_the_library_layers_take_otherwise_still_work_as_there():
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, 4, 2, 1)
    switched = copy.deepcopy(layer)
    use_gemm_weight_grads(switched)
    unbatched = torch.randn(3, 8, 8)  # (C, H, W)
    assert torch.equal(switched(unbatched), layer(unbatched))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast leaves float64 alone
        assert switched.double()(unbatched[None].double()).dtype == torch.float64
    transposed = nn.ConvTranspose2d(4, 3, 4, 2, 1)
    use_gemm_weight_grads(transposed)
    assert transposed(torch.randn(1, 4, 4, 4), output_size=[9, 9]).shape[-2:] == (9, 9)


def test_float32_takes_the_product_on_4x4_maps_except_where_mkl_lags_oneDNN():
    amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n"
    assert gemm.fp32_small_map(amd, onednn_isa="") == 1  # MKL's AVX2 sgemm against oneDNN's AVX-512 kernels
    assert gemm.fp32_small_map(amd, onednn_isa="AVX2") == gemm.SMALL_MAP  # oneDNN limited to AVX2 as well
    assert gemm.fp32_small_map(amd, onednn_isa="avx512_core") == 1
    assert gemm.fp32_small_map(amd.replace(" avx512f", ""), onednn_isa="") == gemm.SMALL_MAP  # an AVX2-only CPU
    assert gemm.fp32_small_map(amd.replace("AuthenticAMD", "GenuineIntel"), onednn_isa="") == gemm.SMALL_MAP
    assert gemm.fp32_small_map("", onednn_isa="") == gemm.SMALL_MAP  # no /proc/cpuinfo


def test_with_a_one_position_float32_limit_only_bf16_float64_and_1x1_maps_take_the_product(monkeypatch, gemm_calls):
    monkeypatch.setattr(gemm, "SMALL_MAP_FP32", 1)
    four_by_four, one_position = nn.Conv2d(6, 10, 4, 2, 1), nn.Conv2d(10, 1, 4, 1, 0)  # D's last two layers
    use_gemm_weight_grads(nn.Sequential(four_by_four, one_position))
    four_by_four(torch.randn(2, 6, 8, 8)).sum().backward()
    assert gemm_calls == []  # float32 on a 4x4 map: oneDNN's kernel
    one_position(torch.randn(2, 10, 4, 4)).sum().backward()
    assert gemm_calls == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        four_by_four(torch.randn(2, 6, 8, 8)).float().sum().backward()
    assert gemm_calls == [1, 1]  # bf16 keeps the 4x4 limit
    four_by_four.double()(torch.randn(2, 6, 8, 8, dtype=torch.float64)).sum().backward()
    assert gemm_calls == [1, 1, 1]  # and so does float64 (the exactness tests)


def test_under_bf16_autocast_maps_up_to_8x8_take_the_matrix_product(monkeypatch, gemm_calls):
    monkeypatch.setattr(gemm, "SMALL_MAP_FP32", 1)  # float32 takes it only at 1x1: what switches here is bf16's limit
    on_8x8 = nn.Conv2d(3, 4, 4, 2, 1)  # 16x16 -> 8x8: 64 positions in the smaller map
    on_16x16 = nn.Conv2d(3, 4, 4, 2, 1)  # 32x32 -> 16x16: 256
    for layer in (on_8x8, on_16x16):
        use_gemm_weight_grads(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        on_8x8(torch.randn(2, 3, 16, 16)).float().sum().backward()
        assert gemm_calls == [1]
        on_16x16(torch.randn(2, 3, 32, 32)).float().sum().backward()
        assert gemm_calls == [1]  # oneDNN's own kernel
    on_8x8(torch.randn(2, 3, 16, 16)).sum().backward()  # the same layer in float32
    assert gemm_calls == [1]
    assert gemm.small_map_limit(torch.bfloat16) == gemm.SMALL_MAP_REDUCED == 64
    assert gemm.small_map_limit(torch.float64) == gemm.SMALL_MAP == 16
