"""Convolution weight gradients as one matrix product where the feature map is small (the CPU fast path).

oneDNN's backward-weights kernels split their work over the feature map's positions; with a 4x4 map there are few
to split, and on the development machine (2 cores of an AMD EPYC with AVX512-BF16, no AMX) the bf16 kernel ran no
faster than the fp32 one. The same gradient is one matrix product over (images x positions):

    grad_weight[out, (kh, kw, in)] = grad_output[(n, oh, ow), out]^T @ patches(input)[(n, oh, ow), (kh, kw, in)]

Measured at the Atari chapter's sizes in bf16 channels-last (``docs/speed.md``): the discriminator's 256->512 layer
(8x8 -> 4x4, 32 images) 13.9 ms -> 7.9 ms, the generator's 512->256 (4x4 -> 8x8, 16 images) 8.8 ms -> 3.5 ms. On
that VM oneDNN's kernel was as fast at 8x8; on the one of 2026-12-03 the product was twice as fast there too (G's
256->128, 8x8 -> 16x16: 2.97 -> 1.42 ms; D's 128->256, 16x16 -> 8x8: 4.17 -> 2.77 ms) and lost at 16x16 (D's 64->128:
3.49 against 4.34 ms), and the bf16 step took 0.0866 s with the 4x4 limit, 0.0837 with 8x8 and 0.0853 with 16x16
(8 alternating rounds each). So layers computing in bf16 or fp16 switch where the smaller map has at most
``SMALL_MAP_REDUCED`` positions (8x8), float64 ones at ``SMALL_MAP`` (4x4).

In float32 the product is MKL's sgemm, which runs its AVX2 code on AMD CPUs even where they have AVX-512, while
oneDNN's kernels use AVX-512. On the development machine MKL reached about 190 GFLOP/s and oneDNN 440-470, and in
float32 oneDNN's weight-gradient kernel beat the product on the 4x4 maps (D's 256->512: 6.8 against 11.3 ms; G's
512->256: 4.3 against 5.8 ms; the fp32 step 137 -> 129 ms without them). So there float32 layers switch only where
the smaller map is one position (G's input layer, D's output layer): ``SMALL_MAP_FP32``. With oneDNN limited to AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``) the product won at 4x4 in float32 too (``docs/speed.md``, "Roofline").

The forward pass and the input gradient stay oneDNN's; the weight gradient is the same sum in another order (fp32
accumulation either way), so results agree to rounding. ``use_gemm_weight_grads(model)`` switches a model's
``Conv2d`` and ``ConvTranspose2d`` layers in place (their class, as ``torch.nn.utils.parametrize`` does): parameters,
state_dict keys and hooks stay the same. Autocast behaves as for the layers it replaces: input, weight and bias are
cast to the autocast dtype.
"""

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runner.machine import cpu_fields

SMALL_MAP = 16  # positions (4x4) in the smaller feature map, at or below which the matrix product is faster
SMALL_MAP_REDUCED = 64  # the same in bf16 or fp16 (8x8), where oneDNN's own kernel is slower still


def fp32_small_map(cpuinfo: str | None = None, onednn_isa: str | None = None) -> int:
    """``SMALL_MAP`` for float32 layers on this CPU: 1 where MKL's float32 product runs AVX2 code and oneDNN's
    kernels AVX-512 (an AMD CPU with AVX-512, oneDNN not limited below it), else ``SMALL_MAP``. ``cpuinfo`` and
    ``onednn_isa`` default to ``/proc/cpuinfo`` and ``$ONEDNN_MAX_CPU_ISA``."""
    if onednn_isa is None:
        onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    fields = cpu_fields(cpuinfo)
    amd_avx512 = fields.get("vendor_id") == "AuthenticAMD" and "avx512f" in fields.get("flags", "").split()
    below_avx512 = onednn_isa.upper().startswith(("SSE", "AVX2")) or onednn_isa.upper() == "AVX"
    return 1 if amd_avx512 and not below_avx512 else SMALL_MAP


SMALL_MAP_FP32 = fp32_small_map()


def small_map_limit(dtype: torch.dtype) -> int:
    """Positions in the smaller map at or below which a layer computing in ``dtype`` takes the matrix product."""
    if dtype == torch.float32:
        return SMALL_MAP_FP32
    return SMALL_MAP_REDUCED if dtype in (torch.bfloat16, torch.float16) else SMALL_MAP


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
    """A batch of images, a weight gradient to compute, a small map (``small_map_limit`` of the dtype it computes
    in); float64 under autocast (which it leaves to the library, in float64) aside."""
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
    device_type = inputs.device.type
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type) if autocast else torch.promote_types(inputs.dtype, layer.weight.dtype)
    return small_map_positions(layer, inputs) <= small_map_limit(dtype)  # above it, oneDNN's kernel is as fast


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
