"""Convolution weight gradients as one matrix product where the feature map is small (the CPU fast path).

oneDNN's backward-weights kernels split their work over the feature map's positions; with a 4x4 map there are few
to split, and on the development machine (2 cores of an AMD EPYC with AVX512-BF16, no AMX) the bf16 kernel ran no
faster than the fp32 one. The same gradient is one matrix product over (images x positions):

    grad_weight[out, (kh, kw, in)] = grad_output[(n, oh, ow), out]^T @ patches(input)[(n, oh, ow), (kh, kw, in)]

Measured at the Atari chapter's sizes in bf16 channels-last (``docs/speed.md``): the discriminator's 256->512 layer
(8x8 -> 4x4, 32 images) 13.9 ms -> 7.9 ms, the generator's 512->256 (4x4 -> 8x8, 16 images) 8.8 ms -> 3.5 ms. At 8x8
and above oneDNN's kernel is as fast, so only layers whose smaller map has at most ``SMALL_MAP`` positions switch.

The forward pass and the input gradient stay oneDNN's; the weight gradient is the same sum in another order (fp32
accumulation either way), so results agree to rounding. ``use_gemm_weight_grads(model)`` switches a model's
``Conv2d`` and ``ConvTranspose2d`` layers in place (their class, as ``torch.nn.utils.parametrize`` does): parameters,
state_dict keys and hooks stay the same. Autocast behaves as for the layers it replaces: input, weight and bias are
cast to the autocast dtype.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SMALL_MAP = 16  # positions (4x4) in the smaller feature map, at or below which the matrix product is faster


def patches(images: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """``(N, C, H, W)`` -> ``(N * OH * OW, kh * kw * C)``: each output position's receptive field, channels last."""
    padded = F.pad(images, (padding[1], padding[1], padding[0], padding[0]))
    padded = padded.contiguous(memory_format=torch.channels_last)  # (N, H, W, C) in memory: C runs innermost
    n, c, h, w = padded.shape
    out_h, out_w = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
    s_n, s_c, s_h, s_w = padded.stride()
    windows = padded.as_strided(
        (n, out_h, out_w, kernel[0], kernel[1], c), (s_n, stride[0] * s_h, stride[1] * s_w, s_h, s_w, s_c)
    )
    return windows.reshape(n * out_h * out_w, kernel[0] * kernel[1] * c)


def rows(feature_map: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> ``(N * H * W, C)`` (a view for a channels-last map)."""
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])


def weight_grad(layer: nn.Module, inputs: Tensor, grad_output: Tensor) -> Tensor:
    """The gradient of ``layer.weight`` (shape ``(A, B, kh, kw)``, laid out channels-last) as one matrix product.

    A convolution's output position (oh, ow) sees the input window at (s*oh, s*ow) of the padded input. A transposed
    convolution is the same relation read the other way: its *input* position (ih, iw) sees the window at
    (s*ih, s*iw) of its padded *output*, so its small side is the input and the windows come from the output grad.
    """
    kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
    if isinstance(layer, nn.ConvTranspose2d):
        small, windows = inputs, patches(grad_output, kernel, stride, padding)
    else:
        small, windows = grad_output, patches(inputs, kernel, stride, padding)
    grad = rows(small).t().matmul(windows)  # (A, kh * kw * B)
    a, b = layer.weight.shape[:2]
    return grad.view(a, kernel[0], kernel[1], b).permute(0, 3, 1, 2)


class _GemmWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, bias: Tensor | None, layer: nn.Module) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.layer = layer
        return convolve(layer, inputs, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        inputs, weight = ctx.saved_tensors
        layer = ctx.layer
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = torch.ops.aten.convolution_backward(
                grad_output,
                inputs,
                weight,
                None,
                layer.stride,
                layer.padding,
                layer.dilation,
                isinstance(layer, nn.ConvTranspose2d),
                output_padding(layer),
                layer.groups,
                [True, False, False],
            )[0]
        if need_weight:
            grad_weight = weight_grad(layer, inputs, grad_output)
        if need_bias:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None


def output_padding(layer: nn.Module) -> list[int]:
    return list(getattr(layer, "output_padding", (0, 0)))


def convolve(layer: nn.Module, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    transposed = isinstance(layer, nn.ConvTranspose2d)
    return torch.ops.aten.convolution(
        inputs,
        weight,
        bias,
        layer.stride,
        layer.padding,
        layer.dilation,
        transposed,
        output_padding(layer),
        layer.groups,
    )


def small_map_positions(layer: nn.Module, inputs: Tensor) -> int:
    """Positions in the smaller of the layer's input and output maps."""
    h, w = inputs.shape[-2:]
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    if isinstance(layer, nn.ConvTranspose2d):
        out_h, out_w = (h - 1) * s[0] - 2 * p[0] + k[0], (w - 1) * s[1] - 2 * p[1] + k[1]
    else:
        out_h, out_w = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    return min(h * w, out_h * out_w)


def takes_the_gemm_path(layer: nn.Module, inputs: Tensor, output_size: list[int] | None) -> bool:
    """A batch of images, a weight gradient to compute, a small map; float64 under autocast (which it leaves to
    the library, in float64) aside."""
    if inputs.dim() != 4 or output_size is not None:
        return False
    autocast_float64 = torch.is_autocast_enabled(inputs.device.type) and torch.float64 in (
        inputs.dtype,
        layer.weight.dtype,
    )
    if autocast_float64:
        return False
    if not (layer.weight.requires_grad and torch.is_grad_enabled()):  # a frozen layer, an evaluation
        return False
    return small_map_positions(layer, inputs) <= SMALL_MAP  # above it, oneDNN's kernel is as fast


def gemm_forward(layer: nn.Module, inputs: Tensor, output_size: list[int] | None = None) -> Tensor:
    if not takes_the_gemm_path(layer, inputs, output_size):
        return layer._original_forward(inputs, output_size)
    weight, bias = layer.weight, layer.bias
    device_type = inputs.device.type
    if torch.is_autocast_enabled(device_type):  # what autocast does for a convolution: compute in its dtype
        dtype = torch.get_autocast_dtype(device_type)
        inputs, weight = inputs.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(device_type, enabled=False):
        return _GemmWeightGrad.apply(inputs, weight, bias, layer)


class GemmConv2d(nn.Conv2d):
    def _original_forward(self, inputs: Tensor, output_size: None = None) -> Tensor:
        return nn.Conv2d.forward(self, inputs)

    forward = gemm_forward


class GemmConvTranspose2d(nn.ConvTranspose2d):
    def _original_forward(self, inputs: Tensor, output_size: list[int] | None = None) -> Tensor:
        return nn.ConvTranspose2d.forward(self, inputs, output_size)

    forward = gemm_forward


def qualifies(layer: nn.Module) -> bool:
    """A plain 2-D (transposed) convolution: one group, no dilation, zero padding mode, no output padding."""
    return (
        layer.groups == 1
        and tuple(layer.dilation) == (1, 1)
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
        and tuple(output_padding(layer)) == (0, 0)
    )


def use_gemm_weight_grads(model: nn.Module) -> int:
    """Switch ``model``'s qualifying convolutions to matrix-product weight gradients; returns how many switched."""
    switched = 0
    for layer in model.modules():
        if type(layer) is nn.Conv2d and qualifies(layer):
            layer.__class__ = GemmConv2d
        elif type(layer) is nn.ConvTranspose2d and qualifies(layer):
            layer.__class__ = GemmConvTranspose2d
        else:
            continue
        switched += 1
    return switched
